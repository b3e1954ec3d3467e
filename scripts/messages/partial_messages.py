"""RSS of `wscope serve` while N clients each hold a large message partly sent.

    python3 scripts/messages/partial_messages.py target/release/wscope 400 [serve flags...]

Each client declares a binary frame of 1 MiB - 1 and sends 900 KiB of it, then waits. With the
default budget (256 MiB) the server takes the first 256 such messages and refuses the others
with 1013 at their header. Prints the server's VmRSS before, after, and the close codes seen.
Standard library only; figures in docs/SECURITY.md.
"""
import asyncio, os, socket, subprocess, sys, time
from collections import Counter

BIN, N, EXTRA = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
DECLARED, SENT = (1 << 20) - 1, 900 << 10
MASK = b"\x01\x02\x03\x04"
PAYLOAD = bytes(b ^ MASK[i % 4] for i, b in enumerate(b"\x07" * SENT))


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024


async def client(port, results, conns):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    await r.readuntil(b"\r\n\r\n")
    w.write(bytes([0x82, 0x80 | 127]) + DECLARED.to_bytes(8, "big") + MASK)
    w.write(PAYLOAD)
    try:
        await w.drain()
    except ConnectionError:
        pass
    conns.append(w)
    try:
        h = await asyncio.wait_for(r.readexactly(4), 3)
        results[int.from_bytes(h[2:4], "big")] += 1
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        results["held"] += 1


async def main():
    port, admin = free_port(), free_port()
    proc = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{port}", "--admin-listen",
                             f"127.0.0.1:{admin}", "--stats-interval", "0", *EXTRA],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    while b"listening" not in proc.stderr.readline():
        pass
    before = rss_mib(proc.pid)
    results, conns = Counter(), []
    await asyncio.gather(*(client(port, results, conns) for _ in range(N)))
    after = rss_mib(proc.pid)
    print(f"{N} clients x {SENT >> 10} KiB of a {DECLARED}-byte frame, flags {EXTRA or 'defaults'}: "
          f"RSS {before:.0f} MiB -> {after:.0f} MiB; outcomes {dict(results)}")
    for w in conns:
        w.close()
    proc.terminate(); proc.wait()


asyncio.run(main())
