#!/usr/bin/env python3
"""CPU and memory of a process and all its descendants, read from /proc, for
scripts/run-proxies.sh: `wscope bench --pid` reads one process, while nginx serves from worker
processes under its master. Standard library only; Linux only.

    proctree.py pids PID          the process and its descendants, one pid a line
    proctree.py ticks PID         their utime + stime, summed, in clock ticks
    proctree.py rss PID           their resident set sizes, summed, in bytes
    proctree.py peak-rss PID --while WATCH [--baseline BYTES] [--interval 0.1]
        samples the summed RSS until process WATCH exits (or becomes a zombie) and prints one
        JSON object: {"startBytes", "peakBytes", "endBytes", "samples", "processes"};
        startBytes is BYTES when given (read with `rss` before WATCH started: by the time this
        runs, WATCH may have done part of its work), else the first sample

Summed RSS counts pages the processes share (nginx workers share the master's) once per
process; the script only ever uses differences of these sums, where the shared part cancels.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3, the state, comes first)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def tree(root: int) -> list[int]:
    """`root` and every descendant that is alive now (zombies excluded)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if not running(pid):
            continue
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def ticks(root: int) -> int:
    """utime + stime (fields 14 and 15) of the tree, in clock ticks."""
    total = 0
    for pid in tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total


def rss(root: int) -> tuple[int, int]:
    """Summed VmRSS of the tree in bytes, and how many processes it has."""
    total, n = 0, 0
    for pid in tree(root):
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        n += 1
                        break
        except OSError:
            continue
    return total, n


def running(pid: int) -> bool:
    """Whether `pid` exists and has not exited (a zombie not yet reaped counts as exited)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def peak_rss(root: int, watch: int, interval: float, baseline: int | None) -> dict:
    """Samples the tree's RSS while `watch` runs; `baseline`, when given, is the start."""
    first, procs = rss(root)
    start = first if baseline is None else baseline
    peak, end, samples = first, first, 1
    while running(watch):
        time.sleep(interval)
        end, n = rss(root)
        peak, procs, samples = max(peak, end), max(procs, n), samples + 1
    return {"startBytes": start, "peakBytes": peak, "endBytes": end, "samples": samples, "processes": procs}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["pids", "ticks", "rss", "peak-rss"])
    p.add_argument("pid", type=int)
    p.add_argument("--while", dest="watch", type=int, help="peak-rss: sample until this process exits")
    p.add_argument("--baseline", type=int, help="peak-rss: the RSS before WATCH started, in bytes")
    p.add_argument("--interval", type=float, default=0.1)
    a = p.parse_args()
    if a.what == "pids":
        print("\n".join(map(str, tree(a.pid))))
    elif a.what == "ticks":
        print(ticks(a.pid))
    elif a.what == "rss":
        print(rss(a.pid)[0])
    else:
        if a.watch is None:
            p.error("peak-rss needs --while PID")
        print(json.dumps(peak_rss(a.pid, a.watch, a.interval, a.baseline)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
