#!/usr/bin/env python3
"""Per-section summary of kosoku (Autobahn|Testsuite) report directories, one per pass.

    summarize.py --pass NAME REPORT_DIR SERVE_CMD KOSOKU_CMD SECONDS [--pass ...]
                 [--through-proxy --proxy NAME PROXY_CMD [--proxy ...]]
                 [--write-doc] [--doc PATH] [--sections 1,2,...] [run details...]

Reads each REPORT_DIR/index.json and the per-case JSON files kosoku writes next to it, prints one
table of all passes (section, cases, OK, NON-STRICT, INFORMATIONAL, FAILED/other) and lists every
case that is not OK. A pass is one server and one kosoku run (wscope's: sections 1-10, then 12-13
against a server with --permessage-deflate); no case may appear in two passes.

A case passes, as Autobahn grades it, when its behavior is OK, NON-STRICT or INFORMATIONAL and its
closing behavior is OK or INFORMATIONAL. Exit status: 0 when every case passes and every expected
section ran; 1 when a case did not pass, an expected section is missing or an unexpected one ran;
2 when there are no results at all. With --write-doc, docs/CONFORMANCE.md is rewritten from the
run (whatever the outcome, as long as some case ran).

--through-proxy: the passes ran through `wscope proxy` (kosoku -> wscope proxy -> wscope serve),
each with the proxy's command given by --proxy NAME PROXY_CMD; the table and the commands say so,
and --write-doc rewrites docs/CONFORMANCE-PROXY.md instead (the direct run's file is left alone).

Standard library only.
"""

from __future__ import annotations

import argparse
import datetime
import html
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ACCEPTED = ("OK", "NON-STRICT", "INFORMATIONAL")
ACCEPTED_CLOSE = ("OK", "INFORMATIONAL")
OTHER = "FAILED/other"
COLUMNS = ACCEPTED + (OTHER,)

# Autobahn|Testsuite's section titles.
SECTION_NAMES = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved Bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8 Handling",
    "7": "Close Handling",
    "9": "Limits/Performance",
    "10": "Misc",
    "12": "WebSocket Compression (different payloads)",
    "13": "WebSocket Compression (different parameters)",
}


def case_key(case_id: str) -> list[int]:
    return [int(p) for p in case_id.split(".")]


def outcome(entry: dict) -> str:
    """The table column a case falls in."""
    if entry.get("behavior") in ACCEPTED and entry.get("behaviorClose") in ACCEPTED_CLOSE:
        return entry["behavior"]
    return OTHER


def verdict(entry: dict) -> str:
    """Both verdicts, as Autobahn shows them."""
    return f"{entry.get('behavior')} (close: {entry.get('behaviorClose')})"


def plain(text: str) -> str:
    """Autobahn descriptions carry HTML; keep the text, on one line."""
    text = re.sub(r"<br\s*/?>", " ", text or "")
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    return re.sub(r"\s+", " ", text).strip()


def first_sentence(text: str, limit: int = 160) -> str:
    text = plain(text)
    m = re.match(r"(.+?[.!?])(\s|$)", text)
    text = m.group(1) if m else text
    if len(text) > limit:
        return text[: limit - 1] + "…"
    return text if text.endswith((".", "!", "?")) else text + "."


def load(report_dir: Path, cases: dict[str, dict], pass_name: str) -> None:
    """Adds case id -> index entry to `cases`, with the per-case report merged in under `report`
    and the pass it ran in under `pass`."""
    index_path = report_dir / "index.json"
    if not index_path.is_file():
        return
    index = json.loads(index_path.read_text())
    for agent, agent_cases in index.items():
        for case_id, entry in agent_cases.items():
            if case_id in cases:
                raise SystemExit(f"summarize: case {case_id} appears twice (agent {agent!r}, pass {pass_name!r})")
            entry = dict(entry)
            entry["agent"] = agent
            entry["pass"] = pass_name
            entry["report_dir"] = report_dir
            path = report_dir / entry.get("reportfile", "")
            entry["report"] = json.loads(path.read_text()) if path.is_file() else {}
            cases[case_id] = entry


def tabulate(cases: dict[str, dict]) -> tuple[list[list[str]], Counter]:
    per_section: dict[str, Counter] = {}
    for case_id, entry in cases.items():
        per_section.setdefault(case_id.split(".")[0], Counter())[outcome(entry)] += 1
    header = ["Section", "Name", "Cases"] + list(COLUMNS)
    rows = [header]
    total: Counter = Counter()
    for section in sorted(per_section, key=int):
        counts = per_section[section]
        total.update(counts)
        rows.append(
            [section, SECTION_NAMES.get(section, "?"), str(sum(counts.values()))]
            + [str(counts[c]) for c in COLUMNS]
        )
    rows.append(["All", "", str(sum(total.values()))] + [str(total[c]) for c in COLUMNS])
    return rows, total


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |"]
    out.append("|" + "|".join("---" if i == 1 else "---:" for i in range(len(rows[0]))) + "|")
    for row in rows[1:]:
        cells = [f"**{c}**" if row[0] == "All" and c else c for c in row]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def server_close(report: dict, peer: str = "server") -> str:
    """How the connection ended; `peer` is what kosoku talked to (the server, or the proxy)."""
    code = report.get("remoteCloseCode")
    if code is not None:
        return f"the {peer} sent close code {code}"
    if report.get("droppedByMe"):
        return "kosoku dropped the TCP connection"
    return f"the {peer} dropped the TCP connection without a close frame"


def what_happened(entry: dict, peer: str = "server") -> str:
    """One data-driven sentence about a non-OK case: expected versus observed, and the close;
    `peer` is what kosoku talked to (the server, or the proxy)."""
    r = entry["report"]
    expected = r.get("expected") or {}
    ok = expected.get("OK")
    received = r.get("received") or []
    parts = [plain(r.get("result", "")).rstrip(".") + "."]
    if ok is not None and ok != received:
        n_ok = sum(1 for e in ok if e and e[0] == "message")
        n_rx = sum(1 for e in received if e and e[0] == "message")
        if n_ok > n_rx:
            parts.append(f"The strict outcome has {n_ok} echoed message(s); {n_rx} came back.")
        elif any(e and e[0] == "timeout" for e in received) and len(received) > len(ok):
            parts.append(
                f"The {peer} failed the connection only once the frame was complete, "
                "not at the first invalid UTF-8 chop (no fail-fast)."
            )
    close = server_close(r, peer)
    parts.append(close[0].upper() + close[1:] + ".")
    return " ".join(parts)


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", "crates", "Cargo.lock", "Cargo.toml"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        return f"{rev} (with uncommitted changes under crates/)" if dirty else rev
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


PROXY_TITLE = "through wscope proxy"


def doc_intro(args: argparse.Namespace, sections: str, total: int) -> list[str]:
    """The title and opening paragraph: the direct run's, or the run through the proxy's."""
    if not args.through_proxy:
        return [
            "# WebSocket protocol conformance",
            "",
            "`wscope serve`'s `/ws` echo route against the Autobahn|Testsuite cases, sections "
            f"{sections} ({total} cases), driven by [kosoku](https://pypi.org/project/kosoku/) "
            f"{args.kosoku_version}, a Python 3 runner of the Autobahn case files (no Docker). "
            "Sections 12 and 13 (permessage-deflate, RFC 7692) run against a second server started "
            "with `--permessage-deflate`. CI (`.ci/run`) runs this after the tests and fails when any "
            "case is graded anything other than OK, NON-STRICT or INFORMATIONAL.",
        ]
    return [
        "# WebSocket protocol conformance through `wscope proxy`",
        "",
        "The Autobahn|Testsuite cases of [CONFORMANCE.md](CONFORMANCE.md), sections "
        f"{sections} ({total} cases), driven by [kosoku](https://pypi.org/project/kosoku/) "
        f"{args.kosoku_version}, with `wscope proxy` between the client and `wscope serve`'s "
        "`/ws` echo route: kosoku → `wscope proxy --upstream http://127.0.0.1:PORT` → `wscope "
        "serve`. The proxy reads each of the client's messages on its own WebSocket connection "
        "(its frame and message checks, its limits), relays it as a message over a second "
        "connection it opens to the server, and relays the echo back the same way; closes are "
        "passed on with their code and reason. A grade here is the proxy's and the server's "
        "together. Each hop negotiates compression on its own: in the deflate pass the proxy "
        "and the server both run with `--permessage-deflate`. CI (`.ci/run`) runs this after "
        "the direct run and fails when any case is graded anything other than OK, NON-STRICT or "
        "INFORMATIONAL.",
    ]


def doc_passes(args: argparse.Namespace, cases: dict[str, dict]) -> list[str]:
    """The run's passes, each with the commands it ran."""
    proxies = dict(args.proxies or [])
    L = []
    if args.through_proxy:
        L.append(
            "- Passes, each a server and a proxy in front of it on loopback with free ports, "
            "and a kosoku run against the proxy:"
        )
    else:
        L.append("- Passes, each a server on loopback with free ports and a kosoku run against it:")
    for name, _dir, serve, kosoku, seconds in args.passes:
        ran = sorted({cid.split(".")[0] for cid, e in cases.items() if e["pass"] == name}, key=int)
        L.append(f"  - {name} (sections {', '.join(ran) or 'none'}; kosoku {seconds} s):")
        if name in proxies:
            L.append(f"    server `{serve}`, proxy `{proxies[name]}`, client `{kosoku}`")
        else:
            L.append(f"    server `{serve}`, client `{kosoku}`")
    return L


def doc_reproduce(args: argparse.Namespace) -> list[str]:
    """How to run it again, and where the reports land."""
    if not args.through_proxy:
        return [
            "```sh",
            "bash scripts/conformance/run.sh              # table on stdout, exit status for CI",
            "bash scripts/conformance/run.sh --write-doc  # also rewrites this file",
            "bash scripts/conformance/run.sh -- --engine tungstenite   # extra `wscope serve` flags",
            "```",
            "",
            "Needs `python3` ≥ 3.10 with the `venv` module and access to PyPI (or a mirror through "
            "`PIP_INDEX_URL`) the first time. Per-case reports (JSON, HTML with wire logs) land in "
            "`target/conformance/report-plain/` and `report-deflate/` (open `index.html`), the "
            "servers' logs in `target/conformance/server-plain.log` and `server-deflate.log`.",
        ]
    return [
        "```sh",
        "bash scripts/conformance/run.sh --through-proxy              # table on stdout, exit status for CI",
        "bash scripts/conformance/run.sh --through-proxy --write-doc  # also rewrites this file",
        "bash scripts/conformance/run.sh --through-proxy -- --engine tungstenite   # extra flags, to server and proxy",
        "```",
        "",
        "Needs `python3` ≥ 3.10 with the `venv` module and access to PyPI (or a mirror through "
        "`PIP_INDEX_URL`) the first time. Per-case reports (JSON, HTML with wire logs) land in "
        "`target/conformance/report-proxy-plain/` and `report-proxy-deflate/` (open `index.html`), "
        "the servers' logs in `target/conformance/server-proxy-plain.log` and "
        "`server-proxy-deflate.log`, the proxies' in `proxy-proxy-plain.log` and "
        "`proxy-proxy-deflate.log`.",
    ]


def write_doc(path: Path, args: argparse.Namespace, cases: dict[str, dict], rows: list[list[str]], problems: list[str]) -> None:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    total = len(cases)
    passed = not problems
    sections = ", ".join(args.sections)
    sec9 = [e for cid, e in cases.items() if cid.split(".")[0] == "9"]
    sec9_ms = sum(int(e.get("duration") or 0) for e in sec9)
    slowest = max(sec9, key=lambda e: int(e.get("duration") or 0), default=None)
    notable = {cid: e for cid, e in cases.items() if outcome(e) != "OK"}
    peer = "proxy" if args.through_proxy else "server"

    L: list[str] = doc_intro(args, sections, total)
    L.append("")
    L.append("This file is written by `scripts/conformance/summarize.py --write-doc`; do not edit it by hand.")
    L.append("")
    L.append("## Run")
    L.append("")
    L.append(f"- Date: {now}")
    L.append(f"- Outcome: **{'every case passed' if passed else 'FAILED'}**")
    L.append(f"- kosoku: {args.kosoku_version} (pinned in `scripts/conformance/requirements.txt`, installed in `target/kosoku-venv`)")
    L.append(f"- wscope: commit {git_revision()}, release build, engine {args.engine}")
    L.append(f"- Command: `{args.command}`")
    L.extend(doc_passes(args, cases))
    if sec9:
        L.append(f"- Section 9 cases together: {sec9_ms / 1000:.1f} s")
    L.append("")
    L.append("## Result per section")
    L.append("")
    L.append(markdown_table(rows))
    L.append("")
    L.append(
        "Grading, as Autobahn defines it: **OK** — the server behaved exactly as the case requires; "
        "**NON-STRICT** — conformant, but it diverges from a SHOULD of RFC 6455 or from the "
        "canonical behaviour; **INFORMATIONAL** — the case probes behaviour the RFC leaves open; "
        "anything else (FAILED, UNIMPLEMENTED, a close graded UNCLEAN, WRONG CODE, FAILED BY CLIENT) "
        f"counts as **{OTHER}** and fails the run. A case's closing handshake must also be graded "
        "OK or INFORMATIONAL."
    )
    L.append("")
    if problems:
        L.append("## Problems")
        L.append("")
        for p in problems:
            L.append(f"- {p}")
        L.append("")
    L.append("## Cases not graded OK")
    L.append("")
    if not notable:
        L.append("None: every case is OK.")
    for cid, e in notable.items():
        r = e["report"]
        L.append(
            f"- **{cid}** {verdict(e)} — {first_sentence(r.get('description', ''))} "
            f"{what_happened(e, peer)}"
        )
    L.append("")
    early_fail = [
        cid for cid, e in notable.items()
        if e.get("behavior") == "NON-STRICT" and "echoed message" in what_happened(e)
        and e["report"].get("remoteCloseCode") is None
    ]
    no_fail_fast = [
        cid for cid, e in notable.items()
        if e.get("behavior") == "NON-STRICT" and "no fail-fast" in what_happened(e)
    ]
    # Through the proxy, the same cases usually end this way, with a close frame.
    proxy_first = [
        cid for cid, e in notable.items()
        if args.through_proxy and e.get("behavior") == "NON-STRICT"
        and "echoed message" in what_happened(e) and e["report"].get("remoteCloseCode") is not None
    ]
    if early_fail or proxy_first or no_fail_fast or any(e.get("behavior") == "INFORMATIONAL" for e in notable.values()):
        L.append("Why:")
        L.append("")
    if proxy_first:
        L.append(
            f"- {', '.join(proxy_first)}: the client sends a valid message and, in the same burst, "
            "a frame that breaks the protocol. The proxy relays the valid message to the server, "
            "but its client hop reads the bad frame before the server's echo has come back over "
            "the upstream hop (a loopback round trip), and fails the connection at once: the "
            "client gets a close frame with 1002 (1007 for invalid UTF-8), the server 1001 "
            "\"Going away\", and the echo that arrives after that is not passed on to a client "
            "that is closing. Autobahn grades failing the connection before echoing NON-STRICT "
            "(the echo is the strict outcome, nothing is the accepted one); directly against "
            "`wscope serve` the echo is usually written before the bad frame is read "
            "([CONFORMANCE.md](CONFORMANCE.md)). Which cases land here varies from run to run "
            "with timing."
        )
    if early_fail:
        L.append(
            f"- {', '.join(early_fail)}: the client sends a valid message and, in the same burst, "
            "a frame that breaks the protocol. wscope's `/ws` handler queues the echo for the "
            "connection's writer task, but the reader meets the bad frame before the echo is "
            "written: wscope then fails the connection at once (it stops reading and stops the "
            "writer), so the queued echo, and any 1002 close frame the engine queued, never reach "
            "the wire; the TCP connection is dropped. Autobahn grades failing the connection "
            "before echoing NON-STRICT (RFC 6455 §7.1.7: a failed connection SHOULD send a close "
            "frame first); the close code is not graded in these cases. Which of them land here "
            "varies from run to run with timing."
        )
    if no_fail_fast:
        L.append(
            f"- {', '.join(no_fail_fast)}: the engine checks a text frame's UTF-8 once the whole "
            "frame has arrived rather than as its bytes arrive, so an invalid sequence early in a "
            "frame fails the connection a little later than it could; Autobahn grades that "
            "NON-STRICT (fail-fast is not required by RFC 6455 §8.1)."
        )
    if any(e.get("behavior") == "INFORMATIONAL" for e in notable.values()):
        L.append(
            "- INFORMATIONAL cases: 7.1.6 sends a 256 KiB message followed at once by a close; "
            "whether the echo is written before the close is processed is up to the implementation. "
            "7.13.x send close codes outside the ranges the RFC defines (5000, 65535); what the "
            "server answers is undefined by the spec."
        )
    L.append("")
    L.append("## Limits (section 9)")
    L.append("")
    line = (
        "Section 9 sends text and binary messages of up to 16 MiB in one frame (9.1, 9.2), 4 MiB "
        "messages in fragments of 64 bytes up to 4 MiB (9.3, 9.4: up to 65,536 fragments), 1 MiB "
        "messages in chops of 64 bytes up to 1 MiB (9.5, 9.6) and 1,000 messages back to back "
        "(9.7, 9.8). wscope's defaults (largest message and frame 1 MiB, docs/SECURITY.md says "
        "why) would close the larger of these with 1009, so the first pass raises both to 16 MiB "
        "(`--max-message-size 16MiB --max-frame-size 16MiB`); the number of fragments is not "
        "limited, only their total. Sections 12 and 13 send messages of up to 128 KiB, within the "
        "defaults."
    )
    if args.through_proxy:
        line += (
            " Through the proxy, the proxy gets the same flags: its limits hold on both of its "
            "hops, the client's and the one it opens to the server."
        )
    if slowest is not None:
        sid = next(cid for cid, e in cases.items() if e is slowest)
        line += f" The slowest section-9 case was {sid} at {slowest.get('duration')} ms."
    L.append(line)
    L.append("")
    L.append("## Keepalive pings")
    L.append("")
    L.append(
        f"{'The servers and proxies' if args.through_proxy else 'Both servers'} run with "
        "`--ping-interval 0`. A case expects exactly the frames it asked "
        "for: an unsolicited ping from the server (every 30 s by default, docs/SECURITY.md, "
        "\"Liveness\") arriving in the middle of a long compression case is taken as a wrong "
        "answer and the case never finishes. Liveness itself is tested in "
        "`crates/wscope-axum/tests/flow.rs`."
    )
    L.append("")
    compressed = {cid: e for cid, e in cases.items() if cid.split(".")[0] in ("12", "13")}
    if compressed:
        ms = sum(int(e.get("duration") or 0) for e in compressed.values())
        slow_id, slow = max(compressed.items(), key=lambda kv: int(kv[1].get("duration") or 0))
        L.append("## Compression (sections 12, 13)")
        L.append("")
        L.append(
            "Each case sends 1,000 compressed messages of one size, from 16 bytes to 128 KiB (some "
            "split into frames of 256 bytes to 32 KiB), of JSON, HTML, German text, a bitmap or a "
            "PDF, and expects each echoed intact; section 13 varies the offer "
            "(`server_no_context_takeover`, `server_max_window_bits` 9 or 15, several offers at "
            "once). wscope answers every offer with `server_no_context_takeover; "
            "client_no_context_takeover` (and the window asked for), inflates each message under "
            "the message limit and compresses every reply (docs/SECURITY.md, \"Messages and "
            f"compression\"). The {len(compressed)} cases took {ms / 1000:.0f} s together; the "
            f"slowest was {slow_id} at {slow.get('duration')} ms."
        )
        L.append("")
    L.append("## Reproduce")
    L.append("")
    L.extend(doc_reproduce(args))
    L.append("")
    path.write_text("\n".join(L))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--pass", dest="passes", nargs=5, action="append", required=True,
        metavar=("NAME", "REPORT_DIR", "SERVE_CMD", "KOSOKU_CMD", "SECONDS"),
        help="one pass: its name, kosoku's report directory (holds index.json), the server and "
        "client commands as shown, and kosoku's time in seconds",
    )
    p.add_argument(
        "--through-proxy", action="store_true",
        help="the passes ran through wscope proxy: say so, and --write-doc writes "
        "docs/CONFORMANCE-PROXY.md",
    )
    p.add_argument(
        "--proxy", dest="proxies", nargs=2, action="append", metavar=("NAME", "PROXY_CMD"),
        help="the proxy command (as shown) of the pass NAME",
    )
    p.add_argument(
        "--write-doc", action="store_true",
        help="rewrite docs/CONFORMANCE.md (docs/CONFORMANCE-PROXY.md with --through-proxy)",
    )
    p.add_argument("--doc", type=Path, help="the file --write-doc writes, instead")
    p.add_argument("--sections", default="1,2,3,4,5,6,7,9,10,12,13", help="sections that must have run")
    p.add_argument("--kosoku-version", default="unknown")
    p.add_argument("--command", default="bash scripts/conformance/run.sh --write-doc")
    p.add_argument("--engine", default="unknown")
    args = p.parse_args()
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if args.doc is None:
        args.doc = ROOT / "docs" / ("CONFORMANCE-PROXY.md" if args.through_proxy else "CONFORMANCE.md")

    cases: dict[str, dict] = {}
    for name, report_dir, *_ in args.passes:
        load(Path(report_dir), cases, name)
    cases = dict(sorted(cases.items(), key=lambda kv: case_key(kv[0])))
    if not cases:
        dirs = ", ".join(d for _, d, *_ in args.passes)
        print(f"summarize: no case results in {dirs} (no index.json, or it is empty)", file=sys.stderr)
        return 2

    rows, total = tabulate(cases)
    if args.through_proxy:
        names = ", ".join(name for name, *_ in args.passes)
        print(f"Autobahn {PROXY_TITLE} (kosoku -> wscope proxy -> wscope serve /ws), passes {names}:")
    print(text_table(rows))

    problems: list[str] = []
    ran = {cid.split(".")[0] for cid in cases}
    for s in args.sections:
        if s not in ran:
            problems.append(f"section {s} did not run")
    for s in sorted(ran - set(args.sections), key=int):
        problems.append(f"section {s} ran but was not asked for")
    bad = {cid: e for cid, e in cases.items() if outcome(e) == OTHER}
    for cid, e in bad.items():
        r = e["report"]
        problems.append(
            f"case {cid}: {verdict(e)} — {first_sentence(r.get('description', ''))} "
            f"{plain(r.get('result', ''))} {plain(r.get('resultClose', ''))} "
            f"(report: {e['report_dir'] / e.get('reportfile', '')})"
        )

    notable = [(cid, e) for cid, e in cases.items() if outcome(e) in ("NON-STRICT", "INFORMATIONAL")]
    if notable:
        print("\nNot OK but accepted:")
        for cid, e in notable:
            print(f"  {cid:8} {verdict(e)}: {first_sentence(e['report'].get('description', ''), 100)}")
    if problems:
        print("\nProblems:", file=sys.stderr)
        for prob in problems:
            print(f"  {prob}", file=sys.stderr)

    if args.write_doc:
        write_doc(args.doc, args, cases, rows, problems)
        print(f"\nwrote {args.doc}")

    n = sum(total.values())
    via = f" {PROXY_TITLE}" if args.through_proxy else ""
    if problems:
        print(f"\nconformance{via}: FAILED ({len(bad)} of {n} cases not passing, {len(problems)} problem(s))", file=sys.stderr)
        return 1
    print(f"\nconformance{via}: all {n} cases passed ({total['OK']} OK, {total['NON-STRICT']} NON-STRICT, {total['INFORMATIONAL']} INFORMATIONAL)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
