"""Fuzzing: builds the coverage-guided targets in fuzz/ (cargo-fuzz, nightly, AddressSanitizer) and runs each for a
bounded time, starting from its committed corpus and replaying the inputs that once failed.

    python -m torture.fuzz [--quick] [--seed N] [--targets decode,gzip] [--seconds S] [--update-corpus] [--reseed]

Targets (fuzz/src/<name>.rs says what each checks): decode (the decoder in an embedded interpreter, against the
validator, the stdlib's json and the encoder), differential (the validator against serde_json), frames (the plain
frame scanner), gzip (the gzip scanner and inflater, against flate2), index (the index reader).

Every target runs with `-seed` derived from the suite's seed, over fuzz/corpus/<target>/ and
fuzz/regressions/<target>/ (read, never written: new inputs go to the working folder). A crash, a failed check, a
leak or a timeout fails the suite; the input is copied to torture-results/fuzz-artifacts/<target>/ and printed with
the command that replays it. Figures per target: executions, seconds, corpus size, coverage (libFuzzer's final
`cov` and `ft`), crashes; in all: executions and hours, this run's and the cumulative total kept in
torture-results/fuzz-cumulative.json (both folders follow --out).

--update-corpus merges what the run found into fuzz/corpus/ (libFuzzer's -merge=1 keeps only inputs that add
coverage); --reseed first merges the seeds (JSONTestSuite files, files the codec writes in every format) into it.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

from .common import FORMATS, ROOT, Result, parse, parser, workdir

FUZZ = ROOT / "fuzz"
TARGETS = ["decode", "differential", "frames", "gzip", "index"]
BINARIES = FUZZ / "target" / "x86_64-unknown-linux-gnu" / "release"
QUICK_SECONDS = 5
FULL_SECONDS = 180
# Inputs up to this size: the codec's own small files fit, and a target runs thousands of inputs a second.
MAX_LEN = 8192
# A single input slower than this is a hang (the decode target runs CPython: allow it more than a pure scan).
TIMEOUT_SECONDS = 30

# The decode target runs CPython, whose caches make libFuzzer suspect a leak after nearly every input, and a leak
# check of the interpreter's heap costs ~40 ms: it would fuzz at 25 inputs a second instead of 2,000+. Leaks are
# still caught: LeakSanitizer checks at exit, and the target puts every Python object in malloc's blocks
# (PYTHONMALLOC=malloc) where it sees a reference the decoder lost (a planted one fails the run).
EXTRA_FLAGS = {"decode": ["-detect_leaks=0"]}

_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
_PROGRESS = re.compile(r"cov: (\d+) ft: (\d+) corp: (\d+)/")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


def main(argv: list[str] | None = None) -> int:
    p = parser("fuzz", __doc__.split("\n\n")[0])
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset of: " + ", ".join(TARGETS))
    p.add_argument(
        "--seconds", type=int, default=None, help=f"per target (default {QUICK_SECONDS} quick, else {FULL_SECONDS})"
    )
    p.add_argument("--update-corpus", action="store_true", help="merge new coverage into fuzz/corpus/")
    p.add_argument("--reseed", action="store_true", help="merge freshly written seed files into fuzz/corpus/ first")
    args = parse(p, argv)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        p.error(f"unknown target(s): {', '.join(unknown)}")
    seconds = args.seconds if args.seconds is not None else QUICK_SECONDS if args.quick else FULL_SECONDS
    result = Result("fuzz", args)
    rng = random.Random(args.seed)
    env = fuzz_env()

    start = time.monotonic()
    build = subprocess.run(
        # One target, or all of them (cargo fuzz builds one or all). Debug assertions include overflow checks.
        ["cargo", "+nightly", "fuzz", "build", "--debug-assertions", *(targets if len(targets) == 1 else [])],
        cwd=FUZZ,
        env=env,
        capture_output=True,
        text=True,
    )
    result.figures["build_seconds"] = round(time.monotonic() - start, 1)
    if build.returncode:
        sys.stderr.write(build.stderr[-5000:])
        result.fail(f"cargo fuzz build failed (exit {build.returncode})")
        return result.finish()

    with workdir(args, "fuzz") as work:
        if args.reseed:
            seeds = work / "seeds"
            write_seeds(seeds)
            for target in targets:
                merge(target, FUZZ / "corpus" / target, [seeds / target], env)
        per_target: dict[str, Any] = {}
        for target in targets:
            per_target[target] = run_target(target, seconds, rng.randrange(1, 2**31), work, env, result)
            if args.update_corpus:
                # A fresh merge of the old corpus and the new inputs keeps only those that add coverage (cmin).
                fresh = work / "min" / target
                merge(target, fresh, [FUZZ / "corpus" / target, work / "new" / target], env)
                shutil.rmtree(FUZZ / "corpus" / target, ignore_errors=True)
                shutil.copytree(fresh, FUZZ / "corpus" / target)
                per_target[target]["corpus_committed"] = count_files(FUZZ / "corpus" / target)
    result.figures["targets"] = per_target
    executions = sum(t["executions"] for t in per_target.values())
    fuzz_seconds = sum(t["seconds"] for t in per_target.values())
    result.figures["executions"] = executions
    result.figures["fuzz_seconds"] = round(fuzz_seconds, 1)
    result.figures["fuzz_hours"] = round(fuzz_seconds / 3600, 3)
    result.figures["crashes"] = sum(t["crashes"] for t in per_target.values())
    result.figures["cumulative"] = add_to_ledger(args.out, executions, fuzz_seconds, per_target)
    return result.finish()


def fuzz_env() -> dict[str, str]:
    """What building and running the targets need: pyo3 builds against this interpreter and links its libpython,
    which the binaries then find at run time (as `make test-rust` does)."""
    env = dict(os.environ)
    env["PYO3_PYTHON"] = sys.executable
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, env.get("LD_LIBRARY_PATH", "")]))
    # As `cargo fuzz run` sets it; and an allocation the data asks for that cannot be had must return NULL (the
    # core turns it into MemoryError), as in a normal build, not abort.
    env["ASAN_OPTIONS"] = "detect_odr_violation=0:allocator_may_return_null=1"
    return env


def run_target(target: str, seconds: int, seed: int, work: Path, env: dict[str, str], result: Result) -> dict[str, Any]:
    new = work / "new" / target
    artifacts = work / "artifacts" / target
    new.mkdir(parents=True)
    artifacts.mkdir(parents=True)
    inputs = [d for d in (FUZZ / "corpus" / target, FUZZ / "regressions" / target) if d.is_dir()]
    cmd = [
        str(BINARIES / target),
        str(new),
        *map(str, inputs),
        f"-seed={seed}",
        f"-max_total_time={seconds}",
        f"-max_len={MAX_LEN}",
        f"-timeout={TIMEOUT_SECONDS}",
        "-rss_limit_mb=3072",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/",
        *EXTRA_FLAGS.get(target, []),
    ]
    print(f"[fuzz] {target}: {seconds} s, -seed={seed}", flush=True)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=FUZZ, env=env, capture_output=True, text=True, errors="replace")
    elapsed = time.monotonic() - start
    log = proc.stderr
    stats = {k: int(v) for k, v in _STAT.findall(log)}
    progress = _PROGRESS.findall(log)
    cov, ft, corpus = map(int, progress[-1]) if progress else (0, 0, 0)
    # libFuzzer writes crash-, leak-, timeout- and oom- inputs there, and names each in its log.
    crashes = sorted({str(p) for p in artifacts.iterdir()} | set(_ARTIFACT.findall(log)))
    figures = {
        "executions": stats.get("number_of_executed_units", 0),
        "seconds": round(elapsed, 1),
        "exec_per_sec": stats.get("average_exec_per_sec", 0),
        "corpus": corpus,
        "new_units": stats.get("new_units_added", 0),
        "cov": cov,
        "ft": ft,
        "peak_rss_mb": stats.get("peak_rss_mb", 0),
        "crashes": len(crashes),
    }
    if proc.returncode or crashes:
        kept = result.args.out / "fuzz-artifacts" / target
        kept.mkdir(parents=True, exist_ok=True)
        saved = []
        for path in crashes:
            if Path(path).is_file():
                shutil.copy(path, kept / Path(path).name)
                saved.append(kept / Path(path).name)
        figures["crashes"] = max(1, len(crashes))
        tail = "\n".join(log.splitlines()[-60:])
        sys.stderr.write(f"[fuzz] {target} failed (exit {proc.returncode}):\n{tail}\n")
        replay = " ".join(str(p) for p in saved) or "(no input saved)"
        if "LeakSanitizer" in log:
            # Checked at exit (see EXTRA_FLAGS), so libFuzzer cannot name the input: find it by replaying.
            replay += (
                f" (a leak found at exit: find its input with {BINARIES / target} -runs=0 -detect_leaks=1"
                f" {' '.join(map(str, inputs))} {new})"
            )
        result.fail(
            f"{target}: exit {proc.returncode}, crashing input(s): {replay}; replay with "
            f"LD_LIBRARY_PATH={env['LD_LIBRARY_PATH']} {BINARIES / target} <input> "
            f"(or: cd fuzz && cargo +nightly fuzz run {target} <input>)"
        )
    elif not stats:
        result.fail(f"{target}: libFuzzer printed no final stats:\n{log[-2000:]}")
    print(f"[fuzz] {target}: {json.dumps(figures)}", flush=True)
    return figures


def merge(target: str, into: Path, sources: list[Path], env: dict[str, str]) -> None:
    """libFuzzer's -merge=1: adds to `into` the inputs of `sources` that reach coverage it lacks."""
    into.mkdir(parents=True, exist_ok=True)
    sources = [s for s in sources if s.is_dir()]
    cmd = [str(BINARIES / target), "-merge=1", f"-max_len={MAX_LEN}", str(into), *map(str, sources)]
    subprocess.run(cmd, cwd=FUZZ, env=env, capture_output=True, check=True)


def count_files(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.is_file()) if folder.is_dir() else 0


def add_to_ledger(out: Path, executions: int, seconds: float, per_target: dict[str, Any]) -> dict[str, Any]:
    """Adds this run to the running totals (fuzz-cumulative.json beside the result) and returns them."""
    path = out / "fuzz-cumulative.json"
    ledger: dict[str, Any] = {"runs": 0, "executions": 0, "seconds": 0.0, "targets": {}}
    if path.exists():
        ledger = json.loads(path.read_text())
    ledger["runs"] += 1
    ledger["executions"] += executions
    ledger["seconds"] = round(ledger["seconds"] + seconds, 1)
    ledger["hours"] = round(ledger["seconds"] / 3600, 3)
    for target, figures in per_target.items():
        t = ledger["targets"].setdefault(target, {"executions": 0, "seconds": 0.0})
        t["executions"] += figures["executions"]
        t["seconds"] = round(t["seconds"] + figures["seconds"], 1)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ledger, indent=2) + "\n")
    return ledger


def write_seeds(dest: Path) -> None:
    """Seed inputs per target: the JSONTestSuite files, and small files the codec writes in every format (with
    the choice byte the frames, gzip and index targets read first)."""
    from conversation_codec import ConversationCodec

    suite = sorted((ROOT / "tests" / "jsontestsuite" / "test_parsing").glob("*.json"))
    written = dest / "written"
    written.mkdir(parents=True)
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello \u2028 \u00e9 \U0001f600", "n": [1, -2.5e-7, 1e300, None]},
        {"role": "tool", "content": "\ud800 lone", "nested": {"a": [{"b": {}}], "x": True}},
        "a string message",
        12345678901234567890,
        [float("nan"), float("inf"), -0.0],
    ]
    files: dict[str, list[bytes]] = {kind: [] for kind in ("plain", "gzip", "idx")}
    # Members of another tool (gzip's own), one and several, one cut inside a line (as bgzip cuts).
    jsonl = b"".join(json.dumps(m).encode() + b"\n" for m in messages)
    files["gzip"] += [gzip.compress(jsonl), gzip.compress(jsonl[:50]) + gzip.compress(jsonl[50:])]
    for name, options in FORMATS.items():
        if "fernet_key" in options:
            continue  # a token's bytes are opaque to every target: the frames inside are the other formats'
        for i in range(len(messages)):
            path = written / f"{name}-{i}.jsonl".replace("+", "-")
            codec = ConversationCodec(path, **options)
            codec.save(messages[: i + 1])
            codec.append_turn(messages[i])
            codec.append_turn(messages[: i + 2])
            kind = "gzip" if options.get("compressed") else "plain"
            files[kind].append(path.read_bytes())
            idx = path.with_name(path.name + ".idx")
            if idx.exists():
                files["idx"].append(idx.read_bytes())
    # Plain files' bytes are also documents for the JSON targets.
    seeds: dict[str, list[bytes]] = {
        "decode": [p.read_bytes() for p in suite] + files["plain"],
        "differential": [p.read_bytes() for p in suite],
        "frames": [bytes([choice]) + data for data in files["plain"] for choice in (0, 1, 0x80 | 16)],
        "gzip": [bytes([choice]) + data for data in files["gzip"] for choice in (0, 13)],
        "index": [bytes([choice]) + data for data in files["idx"] for choice in (0, 1)],
    }
    for target, inputs in seeds.items():
        folder = dest / target
        folder.mkdir(parents=True)
        for i, data in enumerate(inputs):
            (folder / f"seed-{i:04d}").write_bytes(data[:MAX_LEN])


if __name__ == "__main__":
    sys.exit(main())
