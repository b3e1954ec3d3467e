"""Idle memory per connection of `wscope serve`, with and without permessage-deflate.

    python3 scripts/messages/idle_deflate.py target/release/wscope 2000 [nosend]

For each variant (twice), a fresh server; N connections each send one 2 KiB JSON message
(compressed when agreed; none with `nosend`), read the echo, then stay idle; the server's VmRSS is
read before and after. Standard library only; figures in docs/SECURITY.md.
"""
import asyncio, json, os, socket, subprocess, sys, time, zlib

BIN, N = sys.argv[1], int(sys.argv[2])
SEND = len(sys.argv) < 4 or sys.argv[3] != "nosend"
MSG = json.dumps([{"id": i, "name": f"user-{i}", "active": True} for i in range(50)]).encode()[:2048]


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def frame(first, payload):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([first]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_frame(r):
    h = await r.readexactly(2)
    n = h[1] & 0x7F
    if n == 126:
        n = int.from_bytes(await r.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await r.readexactly(8), "big")
    return h[0], await r.readexactly(n)


async def one(port, offer, conns):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    ext = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if offer else ""
    w.write(f"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{ext}\r\n".encode())
    head = await r.readuntil(b"\r\n\r\n")
    agreed = b"permessage-deflate" in head
    assert agreed == offer, head
    if not SEND:
        conns.append((r, w)); return
    if agreed:
        z = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = z.compress(MSG) + z.flush(zlib.Z_SYNC_FLUSH)
        w.write(frame(0x80 | 0x40 | 0x1, body[:-4]))
    else:
        w.write(frame(0x81, MSG))
    first, payload = await read_frame(r)
    if first & 0x40:
        d = zlib.decompressobj(-15)
        payload = d.decompress(payload + b"\x00\x00\xff\xff")
    assert payload == MSG
    conns.append((r, w))


async def variant(name, server_flags, offer):
    port, admin = free_port(), free_port()
    proc = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--admin-listen",
                             f"127.0.0.1:{admin}", "--stats-interval", "0", *server_flags],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    while b"listening" not in proc.stderr.readline():
        pass
    # One connection first, so that per-thread state (runtime, zlib) is counted once, not per connection.
    conns = []
    await one(port, offer, conns)
    await asyncio.sleep(0.5)
    before = rss_kib(proc.pid)
    for i in range(0, N, 100):
        await asyncio.gather(*(one(port, offer, conns) for _ in range(100)))
    await asyncio.sleep(1.0)
    after = rss_kib(proc.pid)
    print(f"{name:40} before {before} KiB, after {after} KiB: {(after - before) * 1024 / N:.0f} B/conn")
    for _, w in conns:
        w.close()
    proc.terminate(); proc.wait()


async def main():
    for _ in range(2):
        await variant("no flag, plain clients", [], False)
        await variant("--permessage-deflate, plain clients", ["--permessage-deflate"], False)
        await variant("--permessage-deflate, compressing clients", ["--permessage-deflate"], True)


asyncio.run(main())
