#!/usr/bin/env python3
"""What an idle connection holds, from a DHAT heap profile.

Reads the JSON that `valgrind --tool=dhat --dhat-out-file=FILE` writes for a server that held N
idle connections at its heap peak ("t-gmax"), groups the live bytes at that peak by allocation
site, and prints the sites with blocks and bytes per connection, largest first.

A site is named by the first frame of the allocating stack that belongs to the code under study
(wscope, tokio, hyper, the engines; `--match` sets the pattern), after skipping allocator and
standard-library frames. `--depth D` appends the D frames above it, to tell apart two callers of
the same function. Sites holding fewer than `--min-blocks` blocks per connection (default 0.5) are
summed into one "other" row, so start-up state (runtimes, listeners, interned strings) stays out
of the per-connection figures. The "malloc" column estimates what glibc uses for the blocks
(8 bytes of header, rounded up to 16, at least 32 per block).

Usage (see docs/BENCHMARKS.md, "What an idle connection holds (DHAT)"):

    scripts/dhat-idle.py /tmp/dhat.json --connections 1000 [--depth 1] [--top 25]
"""

import argparse
import json
import re
import sys

# Allocator and standard-library frames: a site is named after the first frame past them.
ALLOC = re.compile(r"^(malloc|calloc|realloc|memalign|posix_memalign|aligned_alloc|aligned_malloc|alloc|__rustc::|__rdl|__rust)\b")
DEFAULT_MATCH = r"wscope|tokio|hyper|tungstenite|fastwebsockets|axum|bytes|http|futures|mio"


def split_frame(frame: str):
    """'0x4A1B2C: fn_name (file.rs:97)' -> ('fn_name', 'file.rs:97')."""
    text = frame.split(": ", 1)[1] if ": " in frame else frame
    m = re.match(r"^(.*) \(([^()]*)\)$", text)
    return (m.group(1), m.group(2)) if m else (text, "")


def is_library(name: str, place: str) -> bool:
    return bool(ALLOC.match(name)) or place.startswith("library/") or place.startswith("in /")


def site_of(frames, pattern, depth):
    parsed = [split_frame(f) for f in frames]
    # What was allocated: the innermost `new<T>` frame of the standard library names the type.
    what = ""
    for name, place in parsed:
        if place.startswith("library/") and name.startswith("new<"):
            what = shorten(name[4:-1], 70)
            break
    for i, (name, place) in enumerate(parsed):
        if is_library(name, place) or name == "UnknownInlinedFun" and not pattern.search(place):
            continue
        if pattern.search(name) or pattern.search(place) or i == len(parsed) - 1:
            chain = " <- ".join(f"{shorten(n, 60)} ({p})" for n, p in parsed[i : i + 1 + depth])
            return f"{chain}{' [' + what + ']' if what else ''}"
    return "[root]"


def shorten(name: str, width: int) -> str:
    name = re.sub(r"::h[0-9a-f]{16}", "", name)
    # Generic arguments say little past their first level: keep the outer names.
    while True:
        collapsed = re.sub(r"<([^<>]*)<[^<>]*>", r"<\1<..>", name)
        if collapsed == name or len(name) <= width:
            break
        name = collapsed
    return name if len(name) <= width else name[: width - 3] + "..."


def malloc_size(avg: float) -> int:
    return max(32, (int(avg) + 8 + 15) // 16 * 16)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--connections", "-n", type=int, required=True, help="connections held at the peak")
    ap.add_argument("--match", default=DEFAULT_MATCH, help="regex naming the frames a site is attributed to")
    ap.add_argument("--depth", type=int, default=0, help="caller frames to append to a site's name")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--min-blocks", type=float, default=0.5, help="blocks per connection below which a site is 'other'")
    args = ap.parse_args()

    d = json.load(open(args.file))
    ftbl = d["ftbl"]
    pattern = re.compile(args.match)
    n = args.connections
    sites = {}
    total_b = total_k = 0
    for pp in d["pps"]:
        if pp["gb"] == 0:
            continue
        total_b += pp["gb"]
        total_k += pp["gbk"]
        frames = [ftbl[i] for i in pp["fs"]]
        key = site_of(frames, pattern, args.depth)
        s = sites.setdefault(key, [0, 0, 0])
        s[0] += pp["gb"]
        s[1] += pp["gbk"]
        s[2] += pp["gbk"] * malloc_size(pp["gb"] / pp["gbk"])

    rows = sorted(sites.items(), key=lambda kv: -kv[1][0])
    other = [0, 0, 0]
    shown = []
    for key, (b, k, m) in rows:
        if k / n < args.min_blocks:
            other = [other[0] + b, other[1] + k, other[2] + m]
        else:
            shown.append((key, b, k, m))
    print(f"heap at t-gmax: {total_b} B in {total_k} blocks; {total_b / n:.0f} B and {total_k / n:.1f} blocks per connection (N={n})")
    print(f"{'B/conn':>8} {'malloc':>7} {'blk/conn':>8} {'B/blk':>6}  site")
    per_b = per_m = per_k = 0
    for key, b, k, m in shown[: args.top]:
        per_b += b
        per_m += m
        per_k += k
        print(f"{b / n:8.0f} {m / n:7.0f} {k / n:8.2f} {b / k:6.0f}  {key}")
    rest = shown[args.top :]
    if rest:
        b = sum(r[1] for r in rest); k = sum(r[2] for r in rest); m = sum(r[3] for r in rest)
        per_b += b; per_m += m; per_k += k
        print(f"{b / n:8.0f} {m / n:7.0f} {k / n:8.2f} {'':>6}  ({len(rest)} more per-connection sites)")
    print(f"{per_b / n:8.0f} {per_m / n:7.0f} {per_k / n:8.2f} {'':>6}  = per-connection sites")
    print(f"{other[0] / n:8.0f} {other[2] / n:7.0f} {other[1] / n:8.2f} {'':>6}  other (< {args.min_blocks} blocks/conn: start-up and shared state)")


if __name__ == "__main__":
    sys.exit(main())
