"""Run every torture suite in turn (each in its own process), then print a summary of their results.

    python -m torture.run [--quick] [--seed N] [--only kill,corruption] [suite options...]

Exit status 0 only when every suite passed. The results are in torture-results/<suite>.json and the summary
in torture-results/summary.md (the figures RELIABILITY.md records).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from .common import RESULTS, ROOT, env_with_package

# In the order they run: the fast, fundamental ones first.
SUITES = ["corruption", "kill", "concurrency", "crash_states", "io_errors", "sanitizers", "fuzz"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m torture.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--only", default=",".join(SUITES), help="comma-separated suites, from: " + ", ".join(SUITES))
    args, rest = p.parse_known_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SUITES))
    if unknown:
        p.error(f"unknown suite(s): {', '.join(unknown)}")
    failed = []
    for suite in chosen:
        cmd = [sys.executable, "-m", f"torture.{suite}", *rest]
        if args.quick:
            cmd.append("--quick")
        if args.seed is not None:
            cmd += ["--seed", str(args.seed)]
        print(f"== {suite}: {' '.join(cmd[1:])}", flush=True)
        start = time.monotonic()
        code = subprocess.call(cmd, cwd=ROOT, env=env_with_package())
        print(f"== {suite}: exit {code} after {time.monotonic() - start:.0f} s", flush=True)
        if code:
            failed.append(suite)
    summary = summarize(chosen)
    (RESULTS / "summary.md").write_text(summary)
    print(summary)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def summarize(suites: list[str]) -> str:
    lines = ["| suite | mode | seed | seconds | result | figures |", "|---|---|---|---|---|---|"]
    for suite in suites:
        path = RESULTS / f"{suite}.json"
        if not path.exists():
            lines.append(f"| {suite} | | | | no result | |")
            continue
        r = json.loads(path.read_text())
        result = "pass" if r["ok"] else f"{r['failure_count']} failures"
        mode = "quick" if r["quick"] else "full"
        lines.append(f"| {suite} | {mode} | {r['seed']} | {r['seconds']} | {result} | `{json.dumps(r['figures'])}` |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
