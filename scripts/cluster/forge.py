"""Forged cluster messages against an idle instance (issue 13, finding 7).

    python3 scripts/cluster/forge.py BIN [ANNOUNCES] [BROADCASTS] [serve flags...]
    python3 scripts/cluster/forge.py target/release/wscope 20000 16000

Starts one instance of BIN in a unique cluster on $REDIS_URL (default redis://127.0.0.1:6379),
then publishes straight to the cluster's channel, as anyone who can reach that Redis could:
ANNOUNCES announcements from as many made-up instances, then BROADCASTS broadcasts, each from
another of those made-up instances (its own incarnation, seq 1, an empty text to no path).
Then prints the instance's CPU time every 2 s for 10 s while nobody does anything, and the time
and size of `GET /api/cluster/stats` at once and once the made-up members are past their TTL.
Standard library only; figures in docs/SECURITY.md. The instance is stopped and the cluster's
keys deleted on exit.
"""
import json, os, socket, subprocess, sys, time, urllib.parse, urllib.request

BIN = sys.argv[1]
ANNOUNCES = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
BROADCASTS = int(sys.argv[3]) if len(sys.argv) > 3 else 16000
EXTRA = sys.argv[4:]
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
NAME = f"forge-{os.getpid()}-{time.time_ns()}"
CHANNEL = f"wscope:{NAME}:all"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_secs(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resp(*args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
    return b"".join(out)


def publish_all(payloads):
    """PUBLISHes every payload on the cluster channel over one pipelined connection."""
    url = urllib.parse.urlparse(REDIS_URL)
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379))
    batch = 1000
    for i in range(0, len(payloads), batch):
        chunk = payloads[i:i + batch]
        sock.sendall(b"".join(resp("PUBLISH", CHANNEL, p) for p in chunk))
        got, want = b"", len(chunk)
        while got.count(b"\r\n") < want:
            got += sock.recv(65536)
    sock.close()


def envelope(sender, incarnation, body):
    return json.dumps({"v": 1, "cluster": NAME, "from": sender, "incarnation": incarnation,
                       "body": body}, separators=(",", ":")).encode()


def announce(sender):
    zero_states = {"CONNECTING": 0, "OPEN": 0, "CLOSING": 0, "CLOSED": 0}
    return {"type": "announce", "instanceId": sender, "mainAddr": "127.0.0.1:1",
            "adminAddr": "127.0.0.1:2", "startedAt": 1, "version": "0.1.0", "heartbeatMs": 1000,
            "summary": {"totalConnections": 0, "totalConnectionsEver": 0,
                        "totalConnectionsClosed": 0, "averageAge": 0, "averageIdleTime": 0,
                        "connectionsByState": zero_states, "instanceId": sender}}


def stats(admin):
    t = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/cluster/stats", timeout=30) as r:
        body = r.read()
    secs = time.monotonic() - t
    rows = len(json.loads(body).get("instances", []))
    return f"{secs:.3f} s, {len(body)} bytes, {rows} instance rows"


def main():
    main_port, admin = free_port(), free_port()
    log = open(f"/tmp/{NAME}.log", "w")
    proc = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{main_port}",
                             "--admin-listen", f"127.0.0.1:{admin}", "--redis-url", REDIS_URL,
                             "--cluster-name", NAME, "--instance-id", "victim",
                             "--stats-interval", "0", *EXTRA], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/health", timeout=2) as r:
                    if json.loads(r.read()).get("cluster") == "connected":
                        break
            except Exception:
                pass
            assert time.monotonic() < deadline, "the instance never joined"
            time.sleep(0.1)
        inc = lambda i: f"{i:016x}"
        t = time.monotonic()
        publish_all([envelope(f"forged-{i}", inc(i), announce(f"forged-{i}"))
                     for i in range(ANNOUNCES)])
        publish_all([envelope(f"forged-{i % max(ANNOUNCES, 1)}", inc(i % max(ANNOUNCES, 1)),
                              {"type": "broadcast", "seq": 1, "message": {"text": ""}})
                     for i in range(BROADCASTS)])
        print(f"binary {BIN}: published {ANNOUNCES} announcements and {BROADCASTS} broadcasts "
              f"in {time.monotonic() - t:.2f} s")
        print(f"GET /api/cluster/stats at once: {stats(admin)}")
        before = cpu_secs(proc.pid)
        for _ in range(5):
            c0, t0 = cpu_secs(proc.pid), time.monotonic()
            time.sleep(2)
            print(f"  idle instance CPU: {cpu_secs(proc.pid) - c0:.2f} s over "
                  f"{time.monotonic() - t0:.1f} s")
        print(f"idle instance CPU over 10 s: {cpu_secs(proc.pid) - before:.2f} s")
        print(f"GET /api/cluster/stats past the TTL: {stats(admin)}")
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(("wscope_cluster_messages_ignored_total",
                                    "wscope_cluster_broadcasts_received_total",
                                    "wscope_cluster_deliveries_dropped_total",
                                    "wscope_cluster_members{")):
                    print(f"  {line}")
        rss = [l for l in open(f"/proc/{proc.pid}/status") if l.startswith("VmRSS")][0]
        print(f"  {rss.strip()}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        keys = subprocess.run(["redis-cli", "-u", REDIS_URL, "--scan", "--pattern",
                               f"wscope:{NAME}:*"], capture_output=True, text=True).stdout.split()
        if keys:
            subprocess.run(["redis-cli", "-u", REDIS_URL, "unlink", *keys], capture_output=True)


main()
