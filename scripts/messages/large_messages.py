"""What a `wscope serve` keeps after large messages, and what a client can pin: issue 13's
findings 1, 5, 6 and 8, one scenario each, against any build.

    python3 scripts/messages/large_messages.py BIN SCENARIO [N] [serve flags...]

Scenarios (N is the number of clients):
  echo      N clients each echo one 64 B message (what an idle connection costs), then, one after
            the other, one 16 KiB message (ordinary traffic), then one 1,000,000-byte message, and
            sit idle: server RSS per connection after each step, measured on a second batch of N
            after a first one warmed the allocator up (default N 300)
  chat      N members of /ws/chat; one sends a 1,000,000-byte message, every member reads it; the
            RSS the members keep once idle (default N 200)
  chat-deflate  the same with permessage-deflate (start the server with --permessage-deflate): five
            messages of about 1 KiB compressed that inflate to 1 MiB each; also the server's CPU time
            for the five (the compression of the fan-out) (default N 200)
  stray     N compressing clients (--permessage-deflate) each send one compressed message, then
            one stray header byte, and stay open: RSS per connection (default N 1000)
  pin       8 clients (forwarded as 10.6.6.6) each send 1 MiB of a fragmented message and keep
            answering pings; then 5 others (10.0.0.1-5) each send a 100,000-byte message: what each
            of those gets back, and whether the 8 are closed (and with what) within 70 s (try
            --max-buffered-bytes 8MiB)

The server is started fresh on free loopback ports with `--stats-interval 0` and the flags given.
Standard library only. Figures in docs/SECURITY.md.
"""
import asyncio, os, socket, subprocess, sys, time, zlib

BIN, SCENARIO = sys.argv[1], sys.argv[2]
DEFAULT_N = {"echo": 300, "chat": 200, "chat-deflate": 200, "stray": 1000, "pin": 8}
N = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3].isdigit() else DEFAULT_N[SCENARIO]
FLAGS = sys.argv[4:] if len(sys.argv) > 3 and sys.argv[3].isdigit() else sys.argv[3:]
BIG = 1_000_000


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def cpu_s(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mask(payload, key=b"\x11\x22\x33\x44"):
    n = len(payload)
    whole = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(whole, "big")).to_bytes(n, "big") if n else b""


def frame(first, payload):
    key = b"\x11\x22\x33\x44"
    n = len(payload)
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n < 65536:
        head = bytes([first, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + key + mask(payload, key)


async def read_frame(r):
    h = await r.readexactly(2)
    n = h[1] & 0x7F
    if n == 126:
        n = int.from_bytes(await r.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await r.readexactly(8), "big")
    return h[0], await r.readexactly(n)


async def read_message(r, w=None):
    """The next data message (fragments joined, inflated when compressed), answering pings."""
    parts, first_byte = [], None
    while True:
        first, payload = await read_frame(r)
        op = first & 0x0F
        if op == 0x9 and w is not None:
            w.write(frame(0x8A, payload))
            continue
        if op >= 0x8:
            return first, payload
        if first_byte is None:
            first_byte = first
        parts.append(payload)
        if first & 0x80:
            break
    body = b"".join(parts)
    if first_byte & 0x40:
        body = zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff")
    return first_byte, body


async def connect(port, path="/ws", extra=""):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n".encode())
    head = await r.readuntil(b"\r\n\r\n")
    assert b" 101 " in head, head
    return r, w, head


def deflated(payload):
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = z.compress(payload) + z.flush(zlib.Z_SYNC_FLUSH)
    return body[:-4]


def start(flags):
    port, admin = free_port(), free_port()
    proc = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--admin-listen",
                             f"127.0.0.1:{admin}", "--stats-interval", "0", *flags],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    while b"listening" not in proc.stderr.readline():
        pass
    return proc, port


async def settle(pid):
    await asyncio.sleep(1.0)
    return rss_kib(pid)


async def echo(proc, port):
    # Two batches of N: the first warms the allocator up (its transient buffers and free lists
    # stay behind once), the second is measured, so what it adds is what connections keep.
    sizes = (64, 16 << 10, BIG)
    payloads = {size: os.urandom(size) for size in sizes}
    frames = {size: frame(0x82, p) for size, p in payloads.items()}

    async def batch(measure):
        conns = []
        for i in range(0, N, 100):
            conns += await asyncio.gather(*(connect(port) for _ in range(min(100, N - i))))
        rss = []
        for size in sizes:
            for r, w, _ in conns:
                w.write(frames[size])
                assert (await read_message(r))[1] == payloads[size]
            if measure:
                rss.append(await settle(proc.pid))
        return conns, rss

    warm, _ = await batch(False)
    base = await settle(proc.pid)
    conns, rss = await batch(True)
    print(f"echo, {N} clients after {N} others, flags {FLAGS or 'none'}: RSS {base} KiB"
          + "".join(f"; after {size} B each: {r} KiB ({(r - base) / N:.1f} KiB/conn)"
                    for size, r in zip(sizes, rss)))
    return warm + conns


async def chat(proc, port, offer):
    extra = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if offer else ""
    warm = await connect(port, "/ws/chat", extra)
    warm[1].write(frame(0x81, b"w")); await read_message(warm[0])
    conns = [warm]
    for i in range(0, N - 1, 100):
        conns += await asyncio.gather(*(connect(port, "/ws/chat", extra) for _ in range(min(100, N - 1 - i))))
    if offer:
        assert all(b"permessage-deflate" in c[2] for c in conns), "start the server with --permessage-deflate"
    base = await settle(proc.pid)
    if offer:
        text = ("x" * (1 << 20)).encode()
        body = deflated(text)
        cpu0 = cpu_s(proc.pid)
        for _ in range(5):
            warm[1].write(frame(0x80 | 0x40 | 0x1, body))
            got = await asyncio.gather(*(read_message(r) for r, _, _ in conns))
            assert all(m[1] == text for m in got)
        cpu = cpu_s(proc.pid) - cpu0
        what = f"five {len(body)}-byte compressed messages inflating to 1 MiB each"
    else:
        payload = os.urandom(BIG)
        cpu0 = cpu_s(proc.pid)
        warm[1].write(frame(0x82, payload))
        got = await asyncio.gather(*(read_message(r) for r, _, _ in conns))
        assert all(m[1] == payload for m in got)
        cpu = cpu_s(proc.pid) - cpu0
        what = f"one {BIG}-byte message"
    after = await settle(proc.pid)
    print(f"chat, {N} members, flags {FLAGS or 'none'}: {what}: RSS {base} KiB -> {after} KiB "
          f"(+{(after - base) / 1024:.1f} MiB, {(after - base) / N:.1f} KiB/member); server CPU {cpu:.2f} s")
    return conns


async def stray(proc, port):
    ext = "Sec-WebSocket-Extensions: permessage-deflate\r\n"
    text = b'{"hello": "world", "n": 12345}' * 30
    body = deflated(text)
    warm = await connect(port, "/ws", ext)
    warm[1].write(frame(0x80 | 0x40 | 0x1, body)); await read_message(warm[0])
    base = await settle(proc.pid)
    conns = []
    for i in range(0, N, 100):
        batch = await asyncio.gather(*(connect(port, "/ws", ext) for _ in range(min(100, N - i))))
        for r, w, head in batch:
            assert b"permessage-deflate" in head, "start the server with --permessage-deflate"
            w.write(frame(0x80 | 0x40 | 0x1, body) + b"\x81")  # a stray first header byte
        for r, w, _ in batch:
            assert (await read_message(r))[1] == text
        conns += batch
    after = await settle(proc.pid)
    print(f"stray, {N} clients, flags {FLAGS or 'none'}: RSS {base} KiB -> {after} KiB "
          f"({(after - base) / N:.1f} KiB/conn)")
    return conns


async def pin(proc, port):
    holders = []
    for _ in range(N):
        r, w, _ = await connect(port, "/ws", "X-Forwarded-For: 10.6.6.6\r\n")
        w.write(frame(0x02, b"p" * (1 << 20)))  # a message's first fragment, never finished
        holders.append((r, w))
    await asyncio.sleep(0.5)
    outcomes = []
    for i in range(5):
        r, w, _ = await connect(port, "/ws", f"X-Forwarded-For: 10.0.0.{i + 1}\r\n")
        w.write(frame(0x82, b"v" * 100_000))
        first, payload = await asyncio.wait_for(read_message(r, w), 10)
        if first & 0x0F == 0x8:
            outcomes.append(f"close {int.from_bytes(payload[:2], 'big')}")
        else:
            outcomes.append(f"echo of {len(payload)} bytes")
        w.close()
    print(f"pin, {N} holders, flags {FLAGS or 'none'}: the five others got {outcomes}")

    async def held(r, w):
        t0 = time.monotonic()
        try:
            first, payload = await asyncio.wait_for(read_message(r, w), 70)
            return f"close {int.from_bytes(payload[:2], 'big')} after {time.monotonic() - t0:.0f} s"
        except asyncio.TimeoutError:
            return "still open after 70 s"
        except (asyncio.IncompleteReadError, ConnectionError):
            return "dropped"
    print(f"  the holders: {await asyncio.gather(*(held(r, w) for r, w in holders))}")
    return holders


async def main():
    proc, port = start(FLAGS)
    try:
        if SCENARIO == "echo":
            conns = await echo(proc, port)
        elif SCENARIO == "chat":
            conns = await chat(proc, port, False)
        elif SCENARIO == "chat-deflate":
            conns = await chat(proc, port, True)
        elif SCENARIO == "stray":
            conns = await stray(proc, port)
        elif SCENARIO == "pin":
            conns = await pin(proc, port)
        else:
            sys.exit(f"unknown scenario {SCENARIO}")
        for c in conns:
            c[1].close()
    finally:
        proc.terminate(); proc.wait()


asyncio.run(main())
