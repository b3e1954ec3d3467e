"""Admission measurements of issue 13: connection labels from the URL, the handshake-rate table,
IPv6 grouping. Each runs its own `wscope serve` on free loopback ports and prints one line per
figure. Standard library only; figures in docs/SECURITY.md.

    python3 scripts/admission/measure.py BIN labels [SECONDS]
        CPU per handshake with 3,950 tags (15.8 KB of ?tag=), bytes per connection holding them,
        and a normal handshake's median alone and while four such loops run
    python3 scripts/admission/measure.py BIN user
        bytes per connection with a 15.9 KB ?user= (and with no labels, for comparison)
    (Both also hold 300 connections open after a GET /health with a head as long: what any long
    request head holds in a kept-alive connection until --handshake-timeout, labels or not.)
    python3 scripts/admission/measure.py BIN rate-table [N]
        RSS after N (400,000) upgrades from distinct forwarded IPv6 /64s, refused because the
        server is full (--max-connections 1, one held), under --handshake-rate-per-ip 1/h
    python3 scripts/admission/measure.py BIN rate-admitted [N] [serve flags...]
        RSS after N (50,000) admitted upgrades from distinct forwarded IPv6 /64s, each closed at
        once, under --handshake-rate-per-ip 1/h; what the stats count as refused
    python3 scripts/admission/measure.py BIN ipv6-group
        50 upgrades from 50 addresses of one /64 under --max-connections-per-ip 2

Addresses are forwarded in X-Forwarded-For from 127.0.0.1, a trusted proxy by default.
"""
import json, os, socket, statistics, subprocess, sys, threading, time, urllib.request

BIN, WHAT, ARGS = sys.argv[1], sys.argv[2], sys.argv[3:]
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


class Server:
    def __init__(self, *flags):
        self.port, self.admin = free_port(), free_port()
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--admin-listen",
             f"127.0.0.1:{self.admin}", "--stats-interval", "0", *flags],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        while b"listening" not in self.proc.stderr.readline():
            pass
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def rss(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

    def cpu(self):
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def stats(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/api/stats") as r:
            return json.load(r)

    def stop(self):
        self.proc.kill(); self.proc.wait()


def request(path, xff=None, connection="Upgrade"):
    head = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\n"
            f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n")
    if xff:
        head += f"X-Forwarded-For: {xff}\r\n"
    return (head + "\r\n").encode()


def read_head(sock, buf=b""):
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def status(head):
    return int(head.split(b" ", 2)[1])


def upgrade(port, path, xff=None, connection="Upgrade"):
    """(status, seconds to the response head, socket): the socket left open."""
    s = socket.create_connection(("127.0.0.1", port))
    t = time.perf_counter()
    s.sendall(request(path, xff, connection))
    head, _ = read_head(s)
    return status(head), time.perf_counter() - t, s


def hold(server, path, n, plain=False):
    """Opens n connections, each asking to upgrade on path (or, plain, a GET of path), and holds
    them open after the answer; bytes of RSS per connection."""
    before, socks, codes = server.rss(), [], {}
    for _ in range(n):
        if plain:
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            code = status(read_head(s)[0])
        else:
            # `close` too: a refused upgrade then ends its connection, rather than holding it
            # kept alive with a read buffer grown to the long head (see the control).
            code, _, s = upgrade(server.port, path, connection="Upgrade, close")
        codes[code] = codes.get(code, 0) + 1
        socks.append(s)
    time.sleep(0.5)  # let the server finish registering the last ones before reading RSS
    per = (server.rss() - before) / n
    for s in socks:
        s.close()
    return per, codes


def tags_path(n=3950):
    return "/ws?tag=" + ",".join(f"{i:03x}" for i in range(n))


def labels(seconds=10.0):
    path = tags_path()
    print(f"?tag= with 3,950 tags: a {len(path) - len('/ws?tag=')} byte value")
    server = Server()
    # CPU per handshake with the tags, one loop.
    n, codes, t0, c0 = 0, {}, time.time(), server.cpu()
    while time.time() - t0 < seconds:
        code, _, s = upgrade(server.port, path)
        codes[code] = codes.get(code, 0) + 1
        s.close(); n += 1
    cpu = server.cpu() - c0
    print(f"one loop: {n} handshakes in {seconds:.0f} s ({n / seconds:.1f}/s), answers {codes}, "
          f"server CPU {cpu:.2f} s = {1000 * cpu / n:.2f} ms per handshake")
    # A normal handshake's median: alone, then beside four tag loops.
    def normal(count=200):
        times = []
        for _ in range(count):
            code, dt, s = upgrade(server.port, "/ws")
            assert code == 101, code
            s.close(); times.append(dt); time.sleep(0.01)
        return statistics.median(times) * 1000, sorted(times)[int(0.9 * count)] * 1000
    print("normal handshake alone: median %.2f ms, p90 %.2f ms" % normal())
    stop, counts = threading.Event(), [0] * 4
    def loop(i):
        while not stop.is_set():
            try:
                _, _, s = upgrade(server.port, path); s.close(); counts[i] += 1
            except OSError:
                pass
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(4)]
    t0, c0 = time.time(), server.cpu()
    for t in threads:
        t.start()
    med = normal()
    stop.set()
    for t in threads:
        t.join()
    span, cpu = time.time() - t0, server.cpu() - c0
    print(f"beside 4 tag loops ({sum(counts) / span:.0f} tag handshakes/s, server "
          f"{cpu / span:.2f} cores): normal handshake median {med[0]:.2f} ms, p90 {med[1]:.2f} ms")
    server.stop()
    for what, p in (("no labels", "/ws"), ("3,950 tags", path)):
        server = Server()
        per, codes = hold(server, p, 300)
        print(f"300 connections with {what}: {per / 1024:.1f} KiB of RSS each, answers {codes}")
        server.stop()
    control(len(path))


def control(length):
    """What any request head of `length` bytes holds: a kept-alive HTTP connection keeps its
    grown read buffer until --handshake-timeout, whatever the path."""
    server = Server()
    per, codes = hold(server, "/health?x=" + "x" * (length - 10), 300, plain=True)
    print(f"control: 300 kept-alive connections after a {length}-byte GET /health: "
          f"{per / 1024:.1f} KiB of RSS each, answers {codes}")
    server.stop()


def user():
    name = "u" * 15900
    for what, p in (("no labels", "/ws"), ("a 15,900-byte ?user=", f"/ws?user={name}")):
        server = Server()
        per, codes = hold(server, p, 300)
        print(f"300 connections with {what}: {per / 1024:.1f} KiB of RSS each, answers {codes}")
        server.stop()
    control(15900)


def pipelined(server, addresses, depth=200):
    """Sends one upgrade per address, `depth` at a time down one kept-alive connection; the
    answers by status."""
    codes, s, buf = {}, None, b""
    for start in range(0, len(addresses), depth):
        batch = addresses[start:start + depth]
        if s is None:
            s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"".join(request("/ws", a) for a in batch))
        for _ in batch:
            head, buf = read_head(s, buf)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            while len(buf) < length:
                buf += s.recv(65536)
            buf = buf[length:]
            code = status(head)
            codes[code] = codes.get(code, 0) + 1
            if code == 101:  # the connection is a WebSocket now: start another
                s.close(); s, buf = None, b""
                break
    if s:
        s.close()
    return codes


def distinct_64s(n, offset=0):
    return [f"2001:db8:{(i >> 16) & 0xffff:x}:{i & 0xffff:x}::1" for i in range(offset, offset + n)]


def rate_table(n=400_000):
    server = Server("--handshake-rate-per-ip", "1/h", "--max-connections", "1")
    held = upgrade(server.port, "/ws")[2]
    time.sleep(0.2)
    before, t0 = server.rss(), time.time()
    addrs, threads, results = distinct_64s(n, 1), [], []
    step = n // 8
    for i in range(8):
        part = addrs[i * step:(i + 1) * step]
        threads.append(threading.Thread(target=lambda p=part: results.append(pipelined(server, p))))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = {}
    for r in results:
        for k, v in r.items():
            codes[k] = codes.get(k, 0) + v
    after = server.rss()
    print(f"{n} upgrades from distinct /64s at a full server (--handshake-rate-per-ip 1/h "
          f"--max-connections 1) in {time.time() - t0:.0f} s: answers {codes}; RSS "
          f"{before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB (+{(after - before) / 2**20:.1f} MiB); "
          f"refused {server.stats()['refused']}")
    held.close(); server.stop()


def rate_admitted(n=50_000, *flags):
    server = Server("--handshake-rate-per-ip", "1/h", *flags)
    before, t0, codes = server.rss(), time.time(), {}
    for a in distinct_64s(n, 1):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(request("/ws", a))
        code = status(read_head(s)[0])
        codes[code] = codes.get(code, 0) + 1
        s.close()
    time.sleep(1)
    after = server.rss()
    print(f"{n} admitted upgrades from distinct /64s, each closed at once (--handshake-rate-per-ip "
          f"1/h {' '.join(flags)}) in {time.time() - t0:.0f} s: answers {codes}; RSS "
          f"{before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB (+{(after - before) / 2**20:.1f} MiB); "
          f"refused {server.stats()['refused']}")
    server.stop()


def ipv6_group():
    server = Server("--max-connections-per-ip", "2")
    codes, socks = {}, []
    for i in range(50):
        code, _, s = upgrade(server.port, "/ws", f"2001:db8:1:2::{i + 1:x}")
        codes[code] = codes.get(code, 0) + 1
        socks.append(s)
    print(f"50 upgrades from 50 addresses of 2001:db8:1:2::/64 under --max-connections-per-ip 2: "
          f"answers {codes}; open connections {server.stats()['totalConnections']}")
    for s in socks:
        s.close()
    server.stop()


{"labels": lambda: labels(*map(float, ARGS)),
 "user": user,
 "rate-table": lambda: rate_table(*map(int, ARGS)),
 "rate-admitted": lambda: rate_admitted(int(ARGS[0]) if ARGS else 50_000, *ARGS[1:]),
 "ipv6-group": ipv6_group}[WHAT]()
