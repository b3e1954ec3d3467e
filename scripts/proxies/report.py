#!/usr/bin/env python3
"""Results and tables of the proxy comparison (scripts/run-proxies.sh). Standard library only.

    report.py RUN_DIR --out scripts/results/proxies.json [--write-doc docs/BENCHMARKS.md]

Gathers what run-proxies.sh left in RUN_DIR (one directory per proxy with NAME.json, .cmd,
.proc.json, .failed files; settings.json) into one JSON document -- every bench run with its
command, its output and the proxy's /proc figures, and each proxy's headline figures -- and
prints the markdown tables: the figures, the ratios against nginx and against direct, and the
reload-under-load runs. --write-doc puts the same tables into docs/BENCHMARKS.md between
<!-- proxies:begin --> and <!-- proxies:end --> (nothing outside the markers is touched).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
# The peer suite's helpers: file reading, the machine's description, the marked-section writer.
from report import machine, read, read_json, replace_section, sh  # noqa: E402
BEGIN = "<!-- proxies:begin -->"
END = "<!-- proxies:end -->"
SCENARIOS = ("idle", "thru", "lat", "churn", "reload")
LABELS = {
    "direct": "direct (no proxy)",
    "wscope": "wscope proxy",
    "nginx": "nginx",
    "haproxy": "HAProxy",
    "caddy": "Caddy",
}
# (key, column title, higher is better?, shown in the ratio against direct?)
COLUMNS = [
    ("thruMsgsPerSec", '"thru" msg/s', True, True),
    ("cpuUsPerMsg", '"thru" CPU/msg', False, True),
    ("latP50Us", '"lat" p50', False, True),
    ("latP99Us", '"lat" p99', False, True),
    ("addedP50Us", "added p50", False, False),
    ("addedP99Us", "added p99", False, False),
    ("idleBytesPerConn", "idle bytes/conn", False, True),
    ("handshakesPerSec", "handshakes/s", True, True),
    ("churnPerSec", "connect-echo-close/s", True, True),
]


def collect_runs(run_dir: Path, proxy: str) -> list[dict]:
    d, runs = run_dir / proxy, []
    for scenario in SCENARIOS:
        if not (d / f"{scenario}.cmd").exists():
            continue
        runs.append(
            {
                "proxy": proxy,
                "scenario": scenario,
                "command": read(d / f"{scenario}.cmd"),
                "bench": read_json(d / f"{scenario}.json"),
                "proc": read_json(d / f"{scenario}.proc.json"),
                "failed": read(d / f"{scenario}.failed"),
            }
        )
    return runs


def summary(runs: list[dict]) -> dict:
    """A proxy's headline figures from its runs (None where a run is missing or failed)."""
    by = {r["scenario"]: r for r in runs if r["bench"] and not r["failed"]}
    s: dict = {k: None for k, *_ in COLUMNS}
    s["errors"] = sum((r["bench"] or {}).get("errors", 0) for r in runs if r["scenario"] != "reload")
    if "thru" in by:
        b, p = by["thru"]["bench"], by["thru"]["proc"] or {}
        s["thruMsgsPerSec"] = b.get("messagesPerSec")
        received = b.get("messagesReceived") or 0
        if received and p.get("clkTck"):
            # The whole bench run's CPU (handshakes and warm-up included) over every echo.
            s["cpuUsPerMsg"] = p["ticks"] / p["clkTck"] * 1e6 / received
        s["benchServerCpuUsPerMsg"] = b.get("serverCpuUsPerMessage")
    if "lat" in by:
        lat = by["lat"]["bench"].get("latency") or {}
        s["latP50Us"], s["latP99Us"] = lat.get("p50"), lat.get("p99")
    if "idle" in by:
        b, p = by["idle"]["bench"], by["idle"]["proc"] or {}
        opened = b.get("opened") or 0
        if opened and "peakBytes" in p:
            s["idleBytesPerConn"] = (p["peakBytes"] - p["startBytes"]) / opened
        s["handshakesPerSec"] = b.get("handshakesPerSec")
        s["idleOpened"], s["idleFailed"] = opened, b.get("failed")
    if "churn" in by:
        s["churnPerSec"] = by["churn"]["bench"].get("connectionsPerSec")
    return s


def collect(run_dir: Path) -> dict:
    settings = read_json(run_dir / "settings.json") or {}
    proxies, runs = {}, []
    for name in settings.get("proxies", "").split():
        d = run_dir / name
        pr = collect_runs(run_dir, name)
        runs.extend(pr)
        proc_count = read(d / "processes")
        proxies[name] = {
            "label": LABELS.get(name, name),
            "version": read(d / "version"),
            "command": read(d / "proxy.cmd") if name != "direct" else settings.get("upstream"),
            "processes": int(proc_count) if proc_count else None,
            "skipped": read(d / "skipped.txt"),
            "loadavg": read(d / "loadavg"),
            "summary": summary(pr) if pr else None,
        }
    for name, p in proxies.items():
        direct = (proxies.get("direct") or {}).get("summary") or {}
        s = p["summary"]
        if s is None:
            continue
        for key, base in (("addedP50Us", "latP50Us"), ("addedP99Us", "latP99Us")):
            if s.get(base) is not None and direct.get(base) is not None:
                s[key] = s[base] - direct[base]
    commit = sh(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT)
    dirty = bool(sh(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT))
    return {
        "settings": settings,
        "generatedAt": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit,
        "dirty": dirty,
        "machine": machine(),
        "proxies": proxies,
        "runs": runs,
    }


def fmt(key: str, v) -> str:
    if v is None:
        return "—"
    if key.endswith("Us"):
        sign = "+" if key.startswith("added") and v >= 0 else ""
        return f"{sign}{v / 1000:.2f} ms" if abs(v) >= 1000 else f"{sign}{v:.0f} µs"
    if key == "cpuUsPerMsg":
        return f"{v:.2f} µs"
    if key == "idleBytesPerConn":
        return f"{v / 1024:.1f} KiB"
    return f"{v:,.0f}"


def ratio(a, b, positive: bool = False) -> str:
    """a ÷ b; with `positive`, only when both are above zero (an added latency within noise of
    zero or below it has no meaningful ratio)."""
    if a is None or b is None or b == 0 or (positive and (a <= 0 or b <= 0)):
        return "—"
    return f"{a / b:.2f}×"


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def rule(columns: int) -> str:
    return "|" + "---|" * columns


def figures_table(res: dict) -> list[str]:
    out = [
        row(["proxy", "processes × threads"] + [c[1] for c in COLUMNS] + ["errors"]),
        rule(len(COLUMNS) + 3),
    ]
    threads = res["settings"].get("proxyThreads", "?")
    shape = {"nginx": "{p} (master + workers)", "haproxy": "1 × {t}", "caddy": "1 × {t} (GOMAXPROCS)"}
    for name, p in res["proxies"].items():
        label = p["label"] + (f" ({p['version']})" if p.get("version") and name not in ("direct", "wscope") else "")
        if p["summary"] is None:
            out.append(row([label, "—"] + ["—"] * len(COLUMNS) + [f"skipped: {p['skipped'] or 'no run'}"]))
            continue
        s = p["summary"]
        procs = shape.get(name, "1 × {t}").format(p=p.get("processes") or "?", t=threads)
        out.append(row([label, procs] + [fmt(k, s.get(k)) for k, *_ in COLUMNS] + [str(s.get("errors", "—"))]))
    return out


def ratio_table(res: dict, base: str) -> list[str]:
    base_s = (res["proxies"].get(base) or {}).get("summary")
    if not base_s:
        return [f"(no {LABELS.get(base, base)} figures in this run)"]
    cols = [c for c in COLUMNS if base != "direct" or c[3]]
    out = [
        row([f"÷ {LABELS.get(base, base)}"] + [f"{c[1]} {'↑' if c[2] else '↓'}" for c in cols]),
        rule(len(cols) + 1),
    ]
    for name, p in res["proxies"].items():
        if name == base or p["summary"] is None:
            continue
        s = p["summary"]
        out.append(row([p["label"]] + [ratio(s.get(k), base_s.get(k), k.startswith("added")) for k, *_ in cols]))
    return out


def reload_table(res: dict) -> list[str]:
    runs = [r for r in res["runs"] if r["scenario"] == "reload"]
    if not runs:
        return ["(no reload-under-load run)"]
    out = [
        row(["proxy", "action at", "connections", "connected", "errors", "lost", "unclean closes",
             "sent / received", "max latency", "proxy alive after", "processes before → after"]),
        rule(11),
    ]
    for r in runs:
        b, p = r["bench"] or {}, r["proc"] or {}
        lost = (b.get("lost") or {}).get("count")
        sent, recv = b.get("messagesSent"), b.get("messagesReceived")
        out.append(row([
            LABELS.get(r["proxy"], r["proxy"]),
            f"`{p.get('action', '?')}` at {p.get('atSecs', '?')} s" + (f" (exit {p['actionExit']})" if p.get("actionExit") else ""),
            str(b.get("connections", "—")), str(b.get("connected", "—")),
            str(b.get("errors", "—")), str(lost if lost is not None else "—"), str(b.get("uncleanCloses", "—")),
            f"{sent:,} / {recv:,}" if sent is not None and recv is not None else "—",
            fmt("maxUs", (b.get("latency") or {}).get("max")),
            str(p.get("aliveAfter", "—")).lower(),
            f"{p.get('processesBefore', '?')} → {p.get('processesAfter', '?')}",
        ]))
        if r["failed"]:
            out.append(f"\n(the run failed: {r['failed']})")
    return out


def markdown(res: dict) -> str:
    st = res["settings"]
    mode = st.get("mode", "?")
    cmd = f"scripts/run-proxies.sh {st.get('argv', '')}".rstrip()
    load = " ".join((res["machine"].get("loadAverage") or "?").split()[:3])
    lines = [
        f"Written by `{cmd}` ({mode} run, {res['generatedAt']}, wscope commit `{res['commit']}`"
        + (" with uncommitted changes" if res["dirty"] else "") + f", load average at the end `{load}`).",
        "",
    ]
    if mode == "quick":
        lines += ["> **Quick run: not final figures** (3 s runs, few connections).", ""]
    lines += [
        f'"thru" = echo {st["thru"]["connections"]:,} connections × {st["thru"]["inFlight"]} in flight, '
        f'"lat" = {st["lat"]["connections"]:,} × {st["lat"]["inFlight"]} ({st.get("echoDuration")} after '
        f'{st.get("echoWarmup")} warm-up, {st.get("echoSize")}-byte text); CPU/msg = the proxy\'s utime+stime '
        "(all its processes) over the whole thru run ÷ echoes received (one echo crosses the proxy twice); "
        f'added = the proxy\'s latency − direct\'s; idle = the proxy\'s RSS growth (all processes, peak over the hold) '
        f'÷ connections at {st.get("idleConnections", 0):,} idle connections, which also gives handshakes/s; '
        f'connect-echo-close/s with {st.get("churnWorkers")} workers for {st.get("churnDuration")}. '
        "direct = the upstream `wscope serve` measured as the \"proxy\".",
        "",
        *figures_table(res),
        "",
        "Against nginx (for ↑ columns above 1.00× is ahead of nginx, for ↓ columns below 1.00×):",
        "",
        *ratio_table(res, "nginx"),
        "",
        "Against direct (what putting the proxy in the path costs; CPU and memory compare the proxy with the echo server):",
        "",
        *ratio_table(res, "direct"),
        "",
        f'Reload under load: echo {st.get("reload", {}).get("connections", "?")} × 1 for '
        f'{st.get("reload", {}).get("duration", "?")}, the reload at {st.get("reload", {}).get("atSecs", "?")} s.',
        "",
        *reload_table(res),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--write-doc", type=Path)
    a = ap.parse_args()
    res = collect(a.run_dir)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1) + "\n")
    md = markdown(res)
    print(md)
    if a.write_doc:
        replace_section(a.write_doc, md, BEGIN, END)
        print(f"wrote the proxies table of {a.write_doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
