"""What every torture suite shares: its command line, its seed, the four formats, and its result file.

A suite is a module `torture/<name>.py` with `main(argv: list[str] | None = None) -> int`, run as
`python -m torture.<name> [--quick] [--seed N] [--formats plain,gzip,...] [--out DIR]`. It:

- draws every random choice from `random.Random(args.seed)` (or seeds derived from it), so a failure is replayed
  by passing the seed it prints;
- records its figures and failures in a `Result` and returns `result.finish()` (0 when nothing failed);
- writes nothing outside `args.workdir` (a fresh temporary folder) and `args.out`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "torture-results"

# The four ways a conversation is stored, as codec options. The key is fixed, so a seed replays exactly.
KEY = b"dG9ydHVyZS1rZXktMDEyMzQ1Njc4OWFiY2RlZjAxMjM="  # base64 of 32 bytes: a test key, protects nothing
FORMATS: dict[str, dict[str, Any]] = {
    "plain": {},
    "gzip": {"compressed": True},
    "fernet": {"fernet_key": KEY},
    "gzip+fernet": {"compressed": True, "fernet_key": KEY},
}


def parser(name: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m torture.{name}", description=description)
    p.add_argument("--quick", action="store_true", help="the bounded variant CI runs (seconds, not minutes)")
    p.add_argument("--seed", type=int, default=None, help="replay a run (a failure prints its seed)")
    p.add_argument("--formats", default=",".join(FORMATS), help="comma-separated subset of: " + ", ".join(FORMATS))
    p.add_argument("--out", type=Path, default=RESULTS, help="where the JSON result goes (default torture-results/)")
    p.add_argument("--keep", action="store_true", help="keep the working folder (printed) for inspection")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = sorted(set(args.formats) - set(FORMATS))
    if unknown:
        p.error(f"unknown format(s): {', '.join(unknown)}")
    return args


@contextmanager
def workdir(args: argparse.Namespace, name: str) -> Iterator[Path]:
    """A fresh folder for the suite's files, removed afterwards unless --keep (or the suite failed and says so)."""
    path = Path(tempfile.mkdtemp(prefix=f"torture-{name}-"))
    try:
        yield path
    finally:
        if args.keep:
            print(f"[{name}] files kept in {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


@dataclass
class Result:
    """A suite's outcome: figures (counts, per format where it matters) and failures (each a replayable story)."""

    suite: str
    args: argparse.Namespace
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def fail(self, what: str) -> None:
        self.failures.append(what)
        print(f"[{self.suite}] FAIL (seed {self.args.seed}): {what}", file=sys.stderr, flush=True)

    def finish(self) -> int:
        seconds = round(time.monotonic() - self.started, 1)
        record = {
            "suite": self.suite,
            "seed": self.args.seed,
            "quick": self.args.quick,
            "formats": self.args.formats,
            "seconds": seconds,
            "figures": self.figures,
            "failures": self.failures[:100],
            "failure_count": len(self.failures),
            "ok": not self.failures,
        }
        self.args.out.mkdir(parents=True, exist_ok=True)
        (self.args.out / f"{self.suite}.json").write_text(json.dumps(record, indent=2) + "\n")
        status = "ok" if not self.failures else f"{len(self.failures)} FAILURE(S); replay with --seed {self.args.seed}"
        print(f"[{self.suite}] {status} in {seconds} s: {json.dumps(self.figures)}", flush=True)
        return 0 if not self.failures else 1


def env_with_package() -> dict[str, str]:
    """The environment for a child Python process: the same interpreter and installed package, unbuffered."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env
