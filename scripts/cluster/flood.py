"""One chat client floods a two-instance cluster with large messages (issue 13, finding 3).

    python3 scripts/cluster/flood.py BIN [MESSAGES] [SIZE] [WINDOW] [serve flags...]
    python3 scripts/cluster/flood.py target/release/wscope 300 1000000 4

Starts instances A and B of BIN (a unique cluster on $REDIS_URL, default
redis://127.0.0.1:6379), puts one chat client on each, and has A's client send MESSAGES text
messages of SIZE bytes as fast as its own echoes come back, with at most WINDOW (default 4)
unanswered at a time, as a chat client that reads what it is sent does. Then waits until nothing moves for 3 s (at most 120 s) and prints, per instance:
its cluster counters, whether its Redis subscriber connection was dropped (a pub/sub client id
of the instance gone from CLIENT LIST), its peak and final RSS, and what B's client received;
and the most Redis held at once for one subscriber (`omem` of CLIENT LIST, sampled every 10 ms:
Redis drops a subscriber past 32 MB, or past 8 MB for a minute, by default).
With LISTENERS=N in the environment, N more chat clients on each instance read (and discard)
everything they are sent, as a busy chat would. Standard library only; figures in
docs/SECURITY.md. Everything started here is stopped, and the
cluster's keys deleted, on exit.
"""
import asyncio, json, os, socket, subprocess, sys, threading, time, urllib.parse, urllib.request

BIN = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 300
SIZE = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
WINDOW = int(sys.argv[4]) if len(sys.argv) > 4 else 4
EXTRA = sys.argv[5:]
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
LISTENERS = int(os.environ.get("LISTENERS", "0"))
NAME = f"flood-{os.getpid()}-{time.time_ns()}"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_mib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return 0.0
    return 0.0


def redis(*args):
    out = subprocess.run(["redis-cli", "-u", REDIS_URL, *args], capture_output=True, text=True)
    return out.stdout


def pubsub_ids():
    """Ids of Redis's pub/sub clients subscribed to this cluster's channels."""
    ids = set()
    for line in redis("client", "list", "type", "pubsub").splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "id" in fields:
            ids.add(fields["id"])
    return ids


class OmemSampler(threading.Thread):
    """The largest `omem` of a pub/sub client seen while it runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.running = 0, True

    def run(self):
        url = urllib.parse.urlparse(REDIS_URL)
        sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379))
        f = sock.makefile("rb")
        while self.running:
            sock.sendall(b"*4\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n$4\r\nTYPE\r\n$6\r\npubsub\r\n")
            n = int(f.readline()[1:])
            body = f.read(n + 2).decode()
            for line in body.splitlines():
                for field in line.split():
                    if field.startswith("omem="):
                        self.peak = max(self.peak, int(field[5:]))
            time.sleep(0.01)
        sock.close()


def get_json(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("wscope_cluster_") and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def start(iid):
    main, admin = free_port(), free_port()
    log = open(f"/tmp/{NAME}-{iid}.log", "w")
    args = [BIN, "serve", "--listen", f"127.0.0.1:{main}", "--admin-listen", f"127.0.0.1:{admin}",
            "--redis-url", REDIS_URL, "--cluster-name", NAME, "--instance-id", iid,
            "--stats-interval", "0", *EXTRA]
    proc = subprocess.Popen(args, stdout=log, stderr=log)
    return proc, main, admin


async def ws_connect(port, path):
    r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\n"
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
    head = await r.readuntil(b"\r\n\r\n")
    assert b" 101 " in head.split(b"\r\n")[0], head
    return r, w


def text_frame(payload):
    # Masked with the all-zero key (valid, and the payload goes out unchanged).
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


async def read_frames(r, counter):
    """Counts the data messages (and their bytes) arriving on `r` until it closes."""
    try:
        while True:
            b0, b1 = await r.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await r.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await r.readexactly(8), "big")
            await r.readexactly(n)
            op = b0 & 0x0F
            if op == 0x8:
                counter["closed"] = True
                return
            if op in (0x1, 0x2) and b0 & 0x80:
                counter["messages"] += 1
                counter["bytes"] += n
                counter["at"] = time.monotonic()
    except (asyncio.IncompleteReadError, ConnectionError):
        counter["closed"] = True


async def drain(r):
    """Reads and discards until the connection closes."""
    try:
        while await r.read(1 << 20):
            pass
    except ConnectionError:
        pass


async def main():
    a, a_main, a_admin = start("a")
    b, b_main, b_admin = start("b")
    procs = [a, b]
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if get_json(a_admin, "/api/cluster/stats").get("instancesCounted") == 2 and \
                        get_json(b_admin, "/api/cluster/stats").get("instancesCounted") == 2:
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline, "the two instances never saw each other"
            await asyncio.sleep(0.1)
        subs_before = pubsub_ids()
        sampler = OmemSampler()
        sampler.start()
        rss0 = {"a": rss_mib(a.pid), "b": rss_mib(b.pid)}
        peak = dict(rss0)
        sr, sw = await ws_connect(a_main, "/ws/chat")
        rr, rw = await ws_connect(b_main, "/ws/chat")
        own = {"messages": 0, "bytes": 0, "at": time.monotonic(), "closed": False}
        remote = {"messages": 0, "bytes": 0, "at": time.monotonic(), "closed": False}
        tasks = [asyncio.create_task(read_frames(sr, own)),
                 asyncio.create_task(read_frames(rr, remote))]
        for port in (a_main, b_main):
            for _ in range(LISTENERS):
                lr, _ = await ws_connect(port, "/ws/chat")
                tasks.append(asyncio.create_task(drain(lr)))
        frame = text_frame(b"x" * SIZE)
        t0 = time.monotonic()
        written = 0
        try:
            for _ in range(N):
                while written - own["messages"] >= WINDOW and not own["closed"]:
                    if time.monotonic() - own["at"] > 10:
                        raise ConnectionError("no echo for 10 s")
                    await asyncio.sleep(0.001)
                sw.write(frame)
                await sw.drain()
                written += 1
                peak = {k: max(peak[k], rss_mib(p.pid)) for k, p in (("a", a), ("b", b))}
        except ConnectionError as e:
            print(f"the sender was cut off after {written} messages: {e}")
        sent_secs = time.monotonic() - t0
        last_change, seen = time.monotonic(), None
        while time.monotonic() - last_change < 3 and time.monotonic() - t0 < 120:
            await asyncio.sleep(0.1)
            peak = {k: max(peak[k], rss_mib(p.pid)) for k, p in (("a", a), ("b", b))}
            now = (own["messages"], remote["messages"])
            if now != seen:
                seen, last_change = now, time.monotonic()
        sampler.running = False
        subs_after = pubsub_ids()
        ma, mb = metrics(a_admin), metrics(b_admin)
        print(f"binary {BIN}; {written} of {N} messages of {SIZE} bytes (window {WINDOW}) into A's "
              f"/ws/chat in {sent_secs:.2f} s")
        closed = get_json(a_admin, "/api/closed")["connections"]
        for c in closed:
            print(f"A closed {c['id']} ({c.get('path')}): {c.get('code')} {c.get('reason')!r}")
        print(f"A's client got {own['messages']} of its own back; B's client got "
              f"{remote['messages']} ({'closed' if remote['closed'] else 'open'})")
        for iid, m, proc in (("a", ma, a), ("b", mb, b)):
            short = {k.removeprefix("wscope_cluster_").removesuffix("_total"): int(v)
                     for k, v in m.items() if k.endswith("_total")}
            print(f"{iid}: {json.dumps(short)}")
            print(f"{iid}: RSS {rss0[iid]:.1f} MiB before, peak {peak[iid]:.1f}, "
                  f"after {rss_mib(proc.pid):.1f} MiB")
        print(f"most Redis held for one subscriber: {sampler.peak / (1 << 20):.1f} MiB")
        dropped = len(subs_before - subs_after)
        print(f"Redis pub/sub connections dropped during the run: {dropped} of {len(subs_before)}"
              f" (clients before {sorted(subs_before)}, after {sorted(subs_after)})")
        for t in tasks:
            t.cancel()
        sw.close()
        rw.close()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        keys = redis("--scan", "--pattern", f"wscope:{NAME}:*").split()
        if keys:
            redis("unlink", *keys)


asyncio.run(main())
