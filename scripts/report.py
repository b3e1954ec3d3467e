#!/usr/bin/env python3
"""Results and report of the peer benchmark suite (scripts/run-peers.sh). Standard library only.

    report.py collect RUN_DIR --out scripts/results/latest.json
        Gathers the raw outputs run-peers.sh left in RUN_DIR (one directory per peer with
        SCENARIO.json / .cmd / .skipped / .failed files), the machine and the tool versions, and
        each peer's headline figures, into one JSON file.

    report.py render scripts/results/latest.json --md docs/BENCHMARKS.md --svg docs/peers.svg
        Writes the "Peer comparison" section of docs/BENCHMARKS.md -- only the text between
        <!-- peers:begin --> and <!-- peers:end -->, creating the file or appending the markers
        when they are missing; nothing outside them is touched -- and the chart docs/peers.svg.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- peers:begin -->"
END = "<!-- peers:end -->"

# Peer name -> (label in the tables, what it is)
PEERS = {
    "wscope": ("wscope serve", "wscope serve, default settings (tracked; wscope's own engine, a runtime per core)"),
    "wscope-tungstenite": (
        "wscope serve --engine tungstenite",
        "wscope serve with the tungstenite engine (tracked; 512 B read buffer), for the engine comparison",
    ),
    "wscope-tokio-websockets": (
        "wscope serve --engine tokio-websockets",
        "wscope serve with the tokio-websockets engine (tracked), for the engine comparison",
    ),
    "wscope-fastwebsockets": (
        "wscope serve --engine fastwebsockets",
        "wscope serve with the fastwebsockets engine (tracked), for the engine comparison",
    ),
    "axum_tuned": (
        "axum 0.8 tuned, untracked",
        "axum_plain --nodelay --read-buffer-size 512 --write-buffer-size 16384: the same engine "
        "(tungstenite 0.29) with wscope's settings, no tracking: the tracking-overhead baseline",
    ),
    "axum_plain": (
        "axum 0.8 plain",
        "crates/wscope/examples/axum_plain.rs: axum 0.8 WebSocketUpgrade, defaults, no tracking",
    ),
    "node-ws": (
        "Node + ws + tracker",
        "scripts/peers/node-ws: Node + ws 8 + a Map-based tracker following the reference",
    ),
    "bun": (
        "Bun.serve + tracker",
        "scripts/peers/bun: Bun.serve websockets + the same tracker",
    ),
}
ORDER = ["wscope", "wscope-tungstenite", "wscope-tokio-websockets", "wscope-fastwebsockets", "axum_tuned", "axum_plain", "node-ws", "bun"]
SHORT = {"wscope": "wscope", "wscope-tungstenite": "wscope (tungstenite)", "wscope-tokio-websockets": "wscope (tokio-ws)",
         "wscope-fastwebsockets": "wscope (fastws)", "axum_tuned": "axum tuned", "axum_plain": "axum plain",
         "node-ws": "Node ws", "bun": "Bun"}
ENGINE_VARIANTS = ("wscope-tungstenite", "wscope-tokio-websockets", "wscope-fastwebsockets")

# The headline metrics: key -> (column title, unit, True when higher is better)
METRICS = {
    "aMsgsPerSec": ('"a" msg/s', "rate", True),
    "aP99Us": ('"a" p99', "us", False),
    "bMsgsPerSec": ('"b" msg/s', "rate", True),
    "bServerCpuUsPerMsg": ('"b" server CPU/msg', "us_fine", False),
    "idleBytesPerConn": ("idle bytes/conn", "bytes", False),
    "handshakesPerSec": ("handshakes/s", "rate", True),
    "churnPerSec": ("connect-echo-close/s", "rate", True),
    "broadcastP99Us": ("broadcast p99 (last receiver)", "us", False),
    "statsMs": ("GET /api/stats (N conns)", "ms", False),
}


# ---------------------------------------------------------------------------------------------
# collect


def sh(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip()


def read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def machine() -> dict:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": sh(["nproc"]),
        "cpuModel": cpu_model,
        "memory": sh(["free", "-h"]),
        "kernel": sh(["uname", "-r"]),
        "os": platform.platform(),
        "loadAverage": read(Path("/proc/loadavg")),
        "somaxconn": read(Path("/proc/sys/net/core/somaxconn")),
        "ipLocalPortRange": " ".join((read(Path("/proc/sys/net/ipv4/ip_local_port_range")) or "").split()) or None,
    }


def cargo_lock_version(name: str) -> str | None:
    text = read(ROOT / "Cargo.lock") or ""
    m = re.search(r'\[\[package\]\]\nname = "%s"\nversion = "([^"]+)"' % re.escape(name), text)
    return m.group(1) if m else None


def npm_version(peer_dir: str, package: str) -> str | None:
    data = read_json(ROOT / "scripts" / "peers" / peer_dir / "node_modules" / package / "package.json")
    return data.get("version") if isinstance(data, dict) else None


def versions() -> dict:
    bun_bin = ROOT / "scripts" / "peers" / "bun" / "node_modules" / ".bin" / "bun"
    commit = sh(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT)
    dirty = sh(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT)
    return {
        "wscopeCommit": commit,
        "wscopeTreeDirty": bool(dirty),
        "rustc": sh(["rustc", "--version"]),
        "cargo": sh(["cargo", "--version"]),
        "axum": cargo_lock_version("axum"),
        "tokio": cargo_lock_version("tokio"),
        "tungstenite": cargo_lock_version("tungstenite"),
        "tokio-websockets": cargo_lock_version("tokio-websockets"),
        "node": sh(["node", "--version"]),
        "npm": sh(["npm", "--version"]),
        "ws": npm_version("node-ws", "ws"),
        "bun": sh([str(bun_bin), "--version"]) if bun_bin.exists() else None,
        "curl": " ".join((sh(["curl", "--version"]) or "").split()[1:2]) or None,
        "python": platform.python_version(),
    }


def scenario(dir_: Path, name: str) -> dict:
    """One scenario's outcome: report, or skipped/failed with the reason."""
    out: dict = {}
    cmd = read(dir_ / f"{name}.cmd")
    if cmd:
        out["command"] = cmd
    skipped = read(dir_ / f"{name}.skipped")
    if skipped is not None:
        out["skipped"] = skipped
        return out
    failed = read(dir_ / f"{name}.failed")
    if failed is not None:
        out["failed"] = failed
        return out
    report = read_json(dir_ / f"{name}.json")
    if report is None:
        if cmd:
            out["failed"] = "no output"
        else:
            out["notRun"] = True  # not part of this peer's run (the echo-only variant)
        return out
    out["report"] = report
    proc = read_json(dir_ / f"{name}.proc.json")
    if proc is not None:
        out["proc"] = proc
    return out


def get(d, *path, default=None):
    """d[path[0]][path[1]]..., or default."""
    for p in path:
        if isinstance(d, dict) and p in d:
            d = d[p]
        else:
            return default
    return d


def first(d: dict, *keys):
    for k in keys:
        v = get(d, *k.split(".")) if isinstance(d, dict) else None
        if v is not None:
            return v
    return None


def latency_p99(report: dict, *names) -> float | None:
    for n in names:
        v = get(report, n, "p99")
        if v is not None:
            return v
    # any latency-like object with a p99
    for k, v in (report or {}).items():
        if isinstance(v, dict) and "p99" in v and "latenc" in k.lower():
            return v["p99"]
    return None


def echo_summary(runs: list[dict]) -> dict:
    """The run with the median messages/s (of those that produced a report)."""
    ok = [r for r in runs if "report" in r and get(r, "report", "messagesPerSec") is not None]
    if not ok:
        return {}
    ok.sort(key=lambda r: r["report"]["messagesPerSec"])
    med = ok[(len(ok) - 1) // 2] if len(ok) % 2 else ok[len(ok) // 2 - 1]
    rep = med["report"]
    out = {
        "msgsPerSec": rep.get("messagesPerSec"),
        "p99Us": get(rep, "latency", "p99"),
        "allMsgsPerSec": [r["report"]["messagesPerSec"] for r in ok],
        "errors": rep.get("errors"),
        "medianRun": med.get("run"),
    }
    proc = med.get("proc")
    received = rep.get("messagesReceived") or rep.get("messagesSent")
    if proc and received:
        # Whole run (handshakes, warm-up and drain included) from /proc/PID/stat, per echoed message.
        out["serverCpuUsPerMsgProc"] = proc["ticks"] / proc["clkTck"] / received * 1e6
    out["serverCpuUsPerMsgBench"] = rep.get("serverCpuUsPerMessage")
    return out


def collect(run_dir: Path, out_path: Path) -> None:
    settings = read_json(run_dir / "settings.json") or {}
    peers = {}
    for peer in settings.get("peers", " ".join(ORDER)).split():
        d = run_dir / peer
        entry: dict = {"label": PEERS.get(peer, (peer, peer))[0], "description": PEERS.get(peer, (peer, peer))[1]}
        skipped = read(d / "skipped.txt")
        if skipped is not None or not d.exists():
            entry["skipped"] = skipped or "not run"
            peers[peer] = entry
            continue
        entry["serverCommand"] = read(d / "server.cmd")
        ports = (read(d / "server.ports") or "0 0").split()
        entry["port"], entry["adminPort"] = int(ports[0]), int(ports[1])
        entry["pid"] = int(read(d / "server.pid") or 0)
        entry["elapsedSecs"] = int(read(d / "elapsed_secs") or 0) or None
        entry["loadAverageAtStart"] = read(d / "loadavg")
        sc: dict = {}
        for name in ("idle", "churn", "broadcast"):
            sc[name] = scenario(d, name)
        stats = scenario(d, "stats")
        holder = read_json(d / "stats-idle.json")
        if holder is not None:
            stats["holder"] = holder
        sc["stats"] = stats
        for shape in ("echo-a", "echo-b"):
            runs = []
            for f in sorted(d.glob(f"{shape}.*.cmd"), key=lambda p: int(p.name.split(".")[1])):
                r = scenario(d, f.name[: -len(".cmd")])
                r["run"] = int(f.name.split(".")[1])
                runs.append(r)
            if runs:
                sc[shape] = {"runs": runs}
            else:
                sc[shape] = scenario(d, shape)  # skipped or not run
        entry["scenarios"] = sc
        entry["summary"] = summarize(sc)
        peers[peer] = entry
    result = {
        "schema": 1,
        "generatedAt": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": settings,
        "machine": machine(),
        "versions": versions(),
        "peers": peers,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")


def summarize(sc: dict) -> dict:
    s: dict = {}
    a = echo_summary(get(sc, "echo-a", "runs", default=[]))
    b = echo_summary(get(sc, "echo-b", "runs", default=[]))
    s["aMsgsPerSec"] = a.get("msgsPerSec")
    s["aP99Us"] = a.get("p99Us")
    s["aAllMsgsPerSec"] = a.get("allMsgsPerSec")
    s["bMsgsPerSec"] = b.get("msgsPerSec")
    s["bP99Us"] = b.get("p99Us")
    s["bAllMsgsPerSec"] = b.get("allMsgsPerSec")
    s["bServerCpuUsPerMsg"] = b.get("serverCpuUsPerMsgProc") or b.get("serverCpuUsPerMsgBench")
    s["bServerCpuUsPerMsgBench"] = b.get("serverCpuUsPerMsgBench")
    idle = get(sc, "idle", "report") or {}
    s["idleBytesPerConn"] = idle.get("serverBytesPerConnection")
    s["idleOpened"] = idle.get("opened")
    s["handshakesPerSec"] = idle.get("handshakesPerSec")
    churn = get(sc, "churn", "report") or {}
    s["churnPerSec"] = first(churn, "connectionsPerSec", "cyclesPerSec", "ratePerSec", "perSec")
    if s["churnPerSec"] is None:
        for k, v in churn.items():
            if k.endswith("PerSec") and isinstance(v, (int, float)):
                s["churnPerSec"] = v
                break
    bc = get(sc, "broadcast", "report") or {}
    s["broadcastP99Us"] = latency_p99(bc, "lastReceiverLatency", "fanoutLatency", "latency")
    st = get(sc, "stats", "report") or {}
    s["statsMs"] = st.get("medianMs")
    s["statsConnections"] = st.get("connectionsListed")
    s["statsBodyBytes"] = st.get("bodyBytes")
    ref = st.get("referenceFields") or {}
    s["statsRefMs"] = ref.get("medianMs")
    s["statsRefBodyBytes"] = ref.get("bodyBytes")
    return s


# ---------------------------------------------------------------------------------------------
# render


def fmt(v, unit: str) -> str:
    if v is None:
        return "—"
    if unit == "rate":
        return f"{v:,.0f}"
    if unit == "us":
        return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"
    if unit == "us_fine":
        return f"{v:.2f} µs"
    if unit == "bytes":
        return f"{v / 1024:.1f} KiB" if abs(v) >= 1024 else f"{v:.0f} B"
    if unit == "ms":
        return f"{v:.1f} ms"
    return str(v)


def ratio(w, p) -> float | None:
    if w is None or p is None or p == 0:
        return None
    return w / p


def fmt_ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}×"


def present(results: dict) -> list[str]:
    return [p for p in ORDER if p in results["peers"]] + [
        p for p in results["peers"] if p not in ORDER
    ]


def md_section(results: dict, json_rel: str, svg_rel: str) -> str:
    peers = results["peers"]
    st = results.get("settings", {})
    mach = results.get("machine", {})
    ver = results.get("versions", {})
    mode = st.get("mode", "?")
    n_idle = st.get("idleConnections", "?")
    order = present(results)
    ran = [p for p in order if "skipped" not in peers[p]]
    lines: list[str] = []
    w = lines.append

    w("## Peer comparison")
    w("")
    w(
        f"Generated by `scripts/report.py` from `{json_rel}`, written by "
        f"`scripts/run-peers.sh{' ' + st['argv'] if st.get('argv') else ''}` "
        f"({mode} run, {results.get('generatedAt', '?')}, wscope commit "
        f"`{ver.get('wscopeCommit')}`{' with uncommitted changes' if ver.get('wscopeTreeDirty') else ''}). "
        "Everything between the `peers` markers is rewritten by each run; edit the script, not this text."
    )
    w("")
    w(
        "Every peer runs alone on loopback, the load generator (`wscope bench`) on the same machine"
        + (
            f" (pinned with `--pin {st['pin']}`: every server on CPUs {st['pin'].split(':')[0]}, "
            f"the load generator on CPUs {st['pin'].split(':')[1]})"
            if st.get("pin")
            else " (not pinned: server and load generator share every core)"
        )
        + "; 64-byte text echo. \"a\" = "
        f"{get(st, 'echoA', 'connections', default='?')} connections × {get(st, 'echoA', 'inFlight', default='?')} in flight, "
        f"\"b\" = {get(st, 'echoB', 'connections', default='?'):,} connections × {get(st, 'echoB', 'inFlight', default='?')} in flight"
        f" ({st.get('echoDuration', '?')} after {st.get('echoWarmup', '?')} warm-up"
        + (f", median of {st.get('echoRepeat')} runs by msg/s" if (st.get("echoRepeat") or 1) > 1 else "")
        + f"); idle = server RSS growth per open idle connection at {n_idle:,} connections"
        f" (opened {st.get('handshakeConcurrency', '?')} handshakes at a time, which also gives handshakes/s); "
        f"connect-echo-close/s with {st.get('churnWorkers', '?')} workers for {st.get('churnDuration', '?')}; "
        f"broadcast = {st.get('broadcastListeners', '?'):,} chat listeners, {st.get('broadcastMessages', '?')} messages, "
        "latency to the last receiver; `GET /api/stats` = median of "
        f"{st.get('statsSamples', '?')} timed `curl` requests (after one warm-up) while {n_idle:,} idle connections are open "
        "(the full connection list in the body). Server CPU/msg in \"b\" = the server's utime+stime from "
        "`/proc/PID/stat` across the whole `wscope bench echo` run divided by the messages it echoed."
    )
    w("")
    if mode == "quick":
        w(
            "> **Quick run**: small counts and short durations, for checking that the suite works. "
            "The figures are indicative only."
        )
        w("")
    w(
        "> **Noise**: 2 cores shared by the server, the load generator and, during this run, other "
        "engineers' builds and tests (load average when the results were collected: "
        f"`{mach.get('loadAverage', '?')}`). Treat differences below ~20 % as noise; ratios are "
        "measured within one run, so they are more telling than absolute figures."
    )
    w("")

    # figures
    w("### Figures")
    w("")
    cols = list(METRICS)
    head = ["peer"] + [
        METRICS[c][0].replace("N conns", f"{n_idle:,} conns" if isinstance(n_idle, int) else "N conns")
        for c in cols
    ]
    w("| " + " | ".join(head) + " |")
    w("|" + "---|" * len(head))
    for p in order:
        e = peers[p]
        if "skipped" in e:
            w(f"| {e['label']} | skipped: {e['skipped']} |" + " |" * (len(cols) - 1))
            continue
        s = e.get("summary", {})
        w("| " + " | ".join([e["label"]] + [fmt(s.get(c), METRICS[c][1]) for c in cols]) + " |")
    w("")
    w("— = not measured (scenario skipped or failed, see the notes; the untracked axum baseline has no `/api/stats`).")
    w("")

    # ratios
    if "wscope" in ran:
        ws = peers["wscope"]["summary"]
        w("### wscope relative to each peer (same run)")
        w("")
        w(
            "wscope's figure divided by the peer's. For ↑ columns above 1.00× means wscope is ahead; "
            "for ↓ columns (latency, CPU, memory, time) below 1.00× means wscope is ahead."
        )
        w("")
        head = ["wscope ÷"] + [f"{METRICS[c][0]} {'↑' if METRICS[c][2] else '↓'}" for c in cols]
        head = [h.replace("N conns", f"{n_idle:,} conns" if isinstance(n_idle, int) else "N conns") for h in head]
        w("| " + " | ".join(head) + " |")
        w("|" + "---|" * len(head))
        for p in order:
            if p == "wscope" or p not in ran:
                continue
            s = peers[p]["summary"]
            w("| " + " | ".join([peers[p]["label"]] + [fmt_ratio(ratio(ws.get(c), s.get(c))) for c in cols]) + " |")
        w("")

    # engine comparison
    if "wscope" in ran and any(p in ran for p in ENGINE_VARIANTS):
        w("### Engine comparison (issue 3, item 2)")
        w("")
        w(
            "The same tracked server (`wscope serve`) on each engine wscope supports, in the same run. "
            "The default, wscope's own, holds no buffer while idle (it reads into one buffer per thread) "
            "and corks its writes; tungstenite's read buffer is configurable (512 B here); "
            "tokio-websockets and fastwebsockets each allocate a fixed 8 KiB read buffer per connection; "
            "fastwebsockets also fails one Autobahn case (7.3.6) that the others pass (docs/CONFORMANCE.md)."
        )
        w("")
        cols = ["aMsgsPerSec", "aP99Us", "bMsgsPerSec", "bServerCpuUsPerMsg", "idleBytesPerConn", "handshakesPerSec"]
        w("| engine | " + " | ".join(METRICS[c][0] for c in cols) + " |")
        w("|---|" + "---|" * len(cols))
        for p in ("wscope",) + ENGINE_VARIANTS:
            if p not in ran:
                continue
            e = peers[p]["summary"]
            name = "wscope (default)" if p == "wscope" else p.removeprefix("wscope-")
            w("| " + " | ".join([name] + [fmt(e.get(c), METRICS[c][1]) for c in cols]) + " |")
        w("")

    # tracking overhead
    tracked = "wscope-tungstenite" if "wscope-tungstenite" in ran else "wscope"
    if "axum_tuned" in ran and tracked in ran:
        base = peers["axum_tuned"]["summary"]
        w("### Tracking overhead (issue 3, item 5)")
        w("")
        w(
            f"Echo against `{peers[tracked]['label']}` (every connection registered, every frame counted, queued and written "
            "by its writer) and against the same engine untracked: the axum example with wscope's "
            "engine settings (tungstenite 0.29 through axum, TCP_NODELAY, 512 B read and 16 KiB write "
            "buffers), in the same run. What differs besides tracking: axum's handler writes each "
            "message itself with one flush per message, while wscope batches what is queued. "
            "Overhead = 1 − tracked ÷ untracked (negative: the tracked server was faster)."
        )
        w("")
        w("| shape | tracked msg/s | untracked msg/s | ratio | overhead | server CPU/msg tracked / untracked | idle bytes/conn tracked / untracked |")
        w("|---|---|---|---|---|---|---|")
        s0 = peers[tracked]["summary"]
        for shape, k, cpu in (('"a"', "aMsgsPerSec", None), ('"b"', "bMsgsPerSec", "bServerCpuUsPerMsg")):
            r = ratio(s0.get(k), base.get(k))
            over = "—" if r is None else f"{(1 - r) * 100:+.1f} %"
            cpu_txt = "—" if cpu is None else f"{fmt(s0.get(cpu), 'us_fine')} / {fmt(base.get(cpu), 'us_fine')}"
            w(
                f"| {shape} | {fmt(s0.get(k), 'rate')} | {fmt(base.get(k), 'rate')} | {fmt_ratio(r)} | {over} | {cpu_txt} | "
                f"{fmt(s0.get('idleBytesPerConn'), 'bytes')} / {fmt(base.get('idleBytesPerConn'), 'bytes')} |"
            )
        w("")

    # goals
    if "wscope" in ran:
        w("### Goals of issue 16 (reported, never asserted)")
        w("")
        w("| goal | measured | met |")
        w("|---|---|---|")
        for goal, measured, ok in goals(peers):
            w(f"| {goal} | {measured} | {ok} |")
        w("")

    # chart
    w("### Chart")
    w("")
    w(f"![Echo throughput and idle memory per peer]({svg_rel})")
    w("")

    # runs of echo
    echo_lines = []
    for p in ran:
        s = peers[p]["summary"]
        for k, lab in (("aAllMsgsPerSec", '"a"'), ("bAllMsgsPerSec", '"b"')):
            if s.get(k) and len(s[k]) > 1:
                echo_lines.append(f"- {peers[p]['label']} {lab}: " + ", ".join(f"{v:,.0f}" for v in s[k]) + " msg/s")
    if echo_lines:
        w("All echo runs (the table shows the median):")
        w("")
        lines.extend(echo_lines)
        w("")

    # machine
    w("### Machine")
    w("")
    w(f"- `nproc`: {mach.get('nproc')}; CPU: {mach.get('cpuModel')}; kernel {mach.get('kernel')} ({mach.get('os')})")
    w(f"- `somaxconn` {mach.get('somaxconn')}, `ip_local_port_range` {mach.get('ipLocalPortRange')}")
    w("- `free -h`:")
    w("")
    w("  ```")
    for line in (mach.get("memory") or "?").splitlines():
        w("  " + line)
    w("  ```")
    w("")
    vs = [
        ("rustc", ver.get("rustc")), ("axum", ver.get("axum")), ("tokio", ver.get("tokio")),
        ("tungstenite", ver.get("tungstenite")), ("tokio-websockets", ver.get("tokio-websockets")),
        ("node", ver.get("node")), ("npm", ver.get("npm")), ("ws", ver.get("ws")),
        ("bun", ver.get("bun")), ("curl", ver.get("curl")), ("python", ver.get("python")),
    ]
    w("- Versions: " + "; ".join(v if str(v).startswith(k) else f"{k} {v}" for k, v in vs if v))
    w("")

    # commands
    w("### Commands")
    w("")
    w("The whole suite, from the repository root:")
    w("")
    w("```sh")
    w(f"scripts/run-peers.sh{' ' + st['argv'] if st.get('argv') else ''}")
    w("```")
    w("")
    w(
        "which runs, for each peer in turn (`$PORT`/`$ADMIN_PORT` are free ports picked for the run, "
        "`$PID` the server's process id; every process gets `ulimit -n 20000`):"
    )
    w("")
    w("```sh")
    w("cargo build --release -p wscope --bin wscope --example axum_plain")
    w("(cd scripts/peers/node-ws && npm ci) && (cd scripts/peers/bun && npm ci)")
    for p in ran:
        e = peers[p]
        w(f"# {e['label']}")
        w(placeholders(e.get("serverCommand") or "?", e))
        seen = set()
        for name in ("idle", "stats", "echo-a", "echo-b", "churn", "broadcast"):
            sc = e["scenarios"].get(name, {})
            cmds = [r.get("command") for r in sc.get("runs", [])] if "runs" in sc else [sc.get("command")]
            for c in cmds:
                if c:
                    for line in c.splitlines():
                        line = placeholders(line, e)
                        if line not in seen:
                            seen.add(line)
                            w(line)
    w("```")
    w("")

    # notes
    notes = []
    for p in order:
        e = peers[p]
        if "skipped" in e:
            notes.append(f"{e['label']}: skipped: {e['skipped']}")
            continue
        for name, sc in e["scenarios"].items():
            runs = sc.get("runs", [sc])
            for r in runs:
                tag = f"{name}" + (f" run {r['run']}" if "run" in r else "")
                if r.get("notRun"):
                    continue
                if "skipped" in r:
                    notes.append(f"{e['label']} {tag}: skipped: {r['skipped']}")
                elif "failed" in r:
                    notes.append(f"{e['label']} {tag}: failed: {one_line(r['failed'])}")
                else:
                    rep = r.get("report") or {}
                    errs = rep.get("errors") or rep.get("failed")
                    if errs:
                        notes.append(
                            f"{e['label']} {tag}: {errs} errors"
                            + (f" (first: {one_line(rep.get('firstError'))})" if rep.get("firstError") else "")
                        )
                    if rep.get("mismatches"):
                        notes.append(
                            f"{e['label']} {tag}: {rep['mismatches']} replies were not the echo of what "
                            "was sent (counted in the errors, not in messages/s)"
                        )
                    lost = rep.get("lost") or {}
                    if lost.get("count"):
                        notes.append(
                            f"{e['label']} {tag}: {lost['count']} connections lost, "
                            f"{lost.get('firstSecs') or 0:.1f}-{lost.get('lastSecs') or 0:.1f} s after the start"
                            + (
                                f"; every one, so the rates are over the {rep['activeSecs']:.1f} s before"
                                if lost.get("all") and rep.get("activeSecs") is not None
                                else ""
                            )
                        )
                    if rep.get("timedOut"):
                        notes.append(f"{e['label']} {tag}: stopped by --timeout")
                    if rep.get("unclean_closes") or rep.get("uncleanCloses"):
                        notes.append(f"{e['label']} {tag}: {rep.get('uncleanCloses')} unclean closes")
    loads = [
        f"{peers[p]['label']} {peers[p]['loadAverageAtStart'].split()[0]}"
        for p in order
        if "skipped" not in peers[p] and peers[p].get("loadAverageAtStart")
    ]
    if loads:
        notes.append(
            "Load average (1 min) when each peer started, a hint of how busy the machine was: "
            + ", ".join(loads) + f" ({mach.get('nproc', '?')} cores)."
        )
    missing = [
        peers[p]["label"]
        for p in order
        if "skipped" not in peers[p]
        and any(
            "echoes still missing" in str(get(r, "report", "firstError") or "")
            for shape in ("echo-a", "echo-b")
            for r in get(peers[p], "scenarios", shape, "runs", default=[])
        )
    ]
    if missing:
        notes.append(
            '"echoes still missing" errors (' + ", ".join(missing) + "): a false alarm of the load "
            "generator at the end of the measured window, not lost messages. In `wscope bench echo`, "
            "an echo that arrives just after the window ends sets `sending = false` before the timer "
            "branch has switched to the drain phase; the timer, already due, then sees `!sending` and "
            "reports the 1-3 echoes still in flight as missing instead of waiting for them. A counting "
            "build of the axum example confirmed it had received and sent every message the client "
            "sent. The messages/s and latency inside the window are not affected; the connection is "
            "dropped instead of closed. Slower servers hit the race more often."
        )
    notes.append(
        "The Bun peer fans chat messages out through the tracker's connection map (as the reference's "
        "broadcast example does), not through Bun's pub/sub; it turns Bun's 120 s WebSocket idle "
        "timeout off so held connections stay open like on the other peers. The Node peer listens "
        "with a backlog of 4096 (as wscope serve); the axum example uses tokio's default."
    )
    w("### Notes")
    w("")
    for n in notes:
        w(f"- {n}")
    w("")
    return "\n".join(lines)


def one_line(s) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= 200 else s[:197] + "..."


def placeholders(cmd: str, e: dict) -> str:
    out = cmd
    if e.get("adminPort"):
        out = re.sub(rf"\b{e['adminPort']}\b", "$ADMIN_PORT", out)
    if e.get("port"):
        out = re.sub(rf"\b{e['port']}\b", "$PORT", out)
    if e.get("pid"):
        out = re.sub(rf"(--pid )\b{e['pid']}\b", r"\1$PID", out)
    out = out.replace(str(ROOT) + "/", "")
    return out


def goals(peers: dict) -> list[tuple[str, str, str]]:
    ws = peers["wscope"]["summary"]

    def s(p, k):
        if p in peers and "skipped" not in peers[p]:
            return peers[p]["summary"].get(k)
        return None

    def check(r, target, higher=True):
        if r is None:
            return "—"
        ok = r >= target if higher else r <= target
        return "yes" if ok else "no"

    out = []
    r = ratio(ws.get("bMsgsPerSec"), s("bun", "bMsgsPerSec"))
    out.append(('"b" msg/s ≥ 1.1 × Bun', fmt_ratio(r), check(r, 1.1)))
    r = ratio(ws.get("bServerCpuUsPerMsg"), s("bun", "bServerCpuUsPerMsg"))
    out.append(
        (
            '"b" server CPU/msg ≤ 0.9 × Bun\'s',
            f"{fmt(ws.get('bServerCpuUsPerMsg'), 'us_fine')} vs {fmt(s('bun', 'bServerCpuUsPerMsg'), 'us_fine')} ({fmt_ratio(r)})",
            check(r, 0.9, False),
        )
    )
    r = ratio(ws.get("aMsgsPerSec"), s("bun", "aMsgsPerSec"))
    out.append(('"a" msg/s ≥ 1.1 × Bun', fmt_ratio(r), check(r, 1.1)))
    r = ratio(ws.get("aP99Us"), s("node-ws", "aP99Us"))
    out.append(
        (
            '"a" p99 ≤ 0.8 × Node ws\'s',
            f"{fmt(ws.get('aP99Us'), 'us')} vs {fmt(s('node-ws', 'aP99Us'), 'us')} ({fmt_ratio(r)})",
            check(r, 0.8, False),
        )
    )
    b = ws.get("idleBytesPerConn")
    out.append(
        (
            "idle tracked connection ≤ 2,048 B of RSS",
            f"{fmt(b, 'bytes')} (Bun {fmt(s('bun', 'idleBytesPerConn'), 'bytes')})",
            "—" if b is None else ("yes" if b <= 2048 else "no"),
        )
    )
    r = ratio(ws.get("handshakesPerSec"), s("bun", "handshakesPerSec"))
    out.append(("handshakes/s ≥ 1.1 × Bun", fmt_ratio(r), check(r, 1.1)))
    r = ratio(ws.get("churnPerSec"), s("bun", "churnPerSec"))
    out.append(("connect-echo-close/s ≥ 1.2 × Bun", fmt_ratio(r), check(r, 1.2)))
    r = ratio(ws.get("statsMs"), s("bun", "statsMs"))
    out.append(("`GET /api/stats` with the full list ≤ 0.5 × Bun's time", fmt_ratio(r), check(r, 0.5, False)))
    if ws.get("statsRefMs") is not None:
        r = ratio(ws.get("statsRefMs"), s("bun", "statsMs"))
        out.append(
            (
                "the same, wscope's rows cut to the reference's fields (`?fields=id,age,idleTime,state,remoteAddress,userAgent`: "
                "the peers' row) ≤ 0.5 × Bun's time",
                f"{fmt(ws.get('statsRefMs'), 'ms')}, {fmt(ws.get('statsRefBodyBytes'), 'bytes')} vs "
                f"{fmt(s('bun', 'statsMs'), 'ms')}, {fmt(s('bun', 'statsBodyBytes'), 'bytes')} ({fmt_ratio(r)})",
                check(r, 0.5, False),
            )
        )
    r = ratio(ws.get("broadcastP99Us"), s("bun", "broadcastP99Us"))
    out.append(("broadcast, last-receiver p99 ≤ Bun's", fmt_ratio(r), check(r, 1.0, False)))
    r = ratio(ws.get("bMsgsPerSec"), s("node-ws", "bMsgsPerSec"))
    out.append(('(issue 3) "b" msg/s ≥ 4 × Node ws', fmt_ratio(r), check(r, 4.0)))
    return out


# ---------------------------------------------------------------------------------------------
# SVG


def svg_chart(results: dict) -> str:
    peers = results["peers"]
    order = [p for p in present(results) if "skipped" not in peers[p]]
    st = results.get("settings", {})
    panels = [
        ("Echo throughput, msg/s (higher is better)", [("bMsgsPerSec", '"b"'), ("aMsgsPerSec", '"a"')], "rate"),
        (f"Idle server RSS per connection at {st.get('idleConnections', '?'):,} conns (lower is better)", [("idleBytesPerConn", "")], "bytes"),
    ]
    colors = {"wscope": "#d9480f", "wscope-tungstenite": "#fd7e14", "wscope-tokio-websockets": "#f08c00", "wscope-fastwebsockets": "#e8590c",
              "axum_tuned": "#4dabf7", "axum_plain": "#1971c2", "node-ws": "#2f9e44", "bun": "#7048e8"}
    shades = ["1.0", "0.55"]
    width, label_w, bar_h, gap = 860, 170, 16, 6
    x0, x1 = label_w + 20, width - 110
    y = 68
    body: list[str] = []
    for title, series, unit in panels:
        body.append(f'<text x="20" y="{y}" class="t">{html.escape(title)}</text>')
        y += 14
        vals = [peers[p]["summary"].get(k) for p in order for k, _ in series]
        vmax = max([v for v in vals if isinstance(v, (int, float)) and v > 0] or [1])
        for p in order:
            s = peers[p]["summary"]
            for i, (k, tag) in enumerate(series):
                v = s.get(k)
                if v is None and i > 0:
                    continue  # a missing second series is left out rather than shown as a gap
                label = SHORT.get(p, p) + (f" {tag}" if tag else "")
                body.append(f'<text x="{label_w + 10}" y="{y + bar_h - 4}" class="l" text-anchor="end">{html.escape(label)}</text>')
                if isinstance(v, (int, float)) and v > 0:
                    wpx = max(1.0, (x1 - x0) * v / vmax)
                    body.append(
                        f'<rect x="{x0}" y="{y}" width="{wpx:.1f}" height="{bar_h}" fill="{colors.get(p, "#868e96")}" fill-opacity="{shades[i % 2]}"/>'
                    )
                    body.append(f'<text x="{x0 + wpx + 6:.1f}" y="{y + bar_h - 4}" class="v">{html.escape(fmt(v, unit))}</text>')
                else:
                    body.append(f'<text x="{x0 + 4}" y="{y + bar_h - 4}" class="v">not measured</text>')
                y += bar_h + gap
            y += 4
        y += 24
    height = y + 10
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="DejaVu Sans, Helvetica, Arial, sans-serif">\n'
        "<style>.h{font-size:16px;font-weight:bold}.s{font-size:11px;fill:#495057}.t{font-size:13px;font-weight:bold}"
        ".l{font-size:12px}.v{font-size:11px;fill:#212529}</style>\n"
        f'<rect width="{width}" height="{height}" fill="white"/>\n'
        f'<text x="20" y="24" class="h">wscope peer comparison ({html.escape(st.get("mode", "?"))} run)</text>\n'
        f'<text x="20" y="40" class="s">{html.escape(results.get("generatedAt", ""))}, {html.escape(str(results.get("machine", {}).get("nproc")))} cores, '
        "server and load generator on one machine; 64-byte text echo</text>\n"
    )
    return head + "\n".join(body) + "\n</svg>\n"


def replace_section(md_path: Path, section: str, begin: str = BEGIN, end: str = END) -> None:
    """Puts `section` between the markers `begin` and `end` of `md_path` (appended with them when
    they are missing); nothing outside them is touched. scripts/proxies/report.py uses it too."""
    block = f"{begin}\n{section.rstrip()}\n{end}"
    if md_path.exists():
        text = md_path.read_text()
        b = text.find(begin)
        e = text.find(end, b) if b != -1 else text.find(end)
        if b != -1 and e != -1 and e > b:
            text = text[:b] + block + text[e + len(end):]
        else:
            if b != -1 or e != -1:
                print(f"report.py: {md_path} has only one of the markers {begin} {end}; appending a new section", file=sys.stderr)
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        text = "# Benchmarks\n\n" + block + "\n"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = md_path.with_suffix(md_path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, md_path)


def render(json_path: Path, md_path: Path, svg_path: Path) -> None:
    results = json.loads(json_path.read_text())
    json_rel = os.path.relpath(json_path.resolve(), ROOT)
    svg_rel = os.path.relpath(svg_path.resolve(), md_path.resolve().parent)
    replace_section(md_path, md_section(results, json_rel, svg_rel))
    svg_path.parent.mkdir(parents=True, exist_ok=True)
    svg_path.write_text(svg_chart(results))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="gather a run directory into one results JSON")
    c.add_argument("run_dir", type=Path)
    c.add_argument("--out", type=Path, default=ROOT / "scripts/results/latest.json")
    r = sub.add_parser("render", help="write the peer section of BENCHMARKS.md and the SVG chart")
    r.add_argument("json", type=Path, nargs="?", default=ROOT / "scripts/results/latest.json")
    r.add_argument("--md", type=Path, default=ROOT / "docs/BENCHMARKS.md")
    r.add_argument("--svg", type=Path, default=ROOT / "docs/peers.svg")
    args = ap.parse_args()
    if args.cmd == "collect":
        collect(args.run_dir, args.out)
    else:
        render(args.json, args.md, args.svg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
