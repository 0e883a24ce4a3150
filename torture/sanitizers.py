"""Sanitizers: the Rust unit tests under AddressSanitizer (with LeakSanitizer), and the Python layer's encoder and
decoder under valgrind's memcheck.

    python -m torture.sanitizers [--quick] [--seed N] [--only asan,valgrind]

- **asan**: `cargo +nightly test --lib` built with `-Zsanitizer=address` (its own target folder,
  target/sanitizers/), LeakSanitizer checking at exit. One test is left out, by name: the decompression-bomb test
  limits its child's address space (`ulimit -v`), where ASan cannot reserve its shadow memory; it runs in
  `make test`, and the fuzz targets (built with ASan) inflate bombs of their own.
- **valgrind**: memcheck over `torture._probe` (every entry point of the extension, seeded, results checked; quick
  and full) and, in the full run, pytest on the encoder and decoder tests (the heaviest property tests of
  test_fidelity.py left out: they would take an hour under valgrind). Python runs with PYTHONMALLOC=malloc, so
  that every object is a block memcheck tracks. What fails the run:
  - any invalid read, write or free, overlapping copy or bad syscall buffer, wherever it is (but for the known
    glibc over-reads in torture/valgrind-python.supp);
  - a use of an uninitialised value, or a block definitely lost, where the extension (`_core*.so`) is on the stack
    below the innermost Python frame: made by the extension, or by CPython for it. CPython 3.11 reports both of its
    own under valgrind (digits `int.from_bytes` never initialised, in imports; blocks it never frees at exit), also
    when Python code the extension calls runs into them: those are counted (`cpython_noise`), not failures.
  A planted read of freed memory (`torture._probe --plant`) is reported; run `--only valgrind --plant` to see.

Figures: tests run and errors under each tool, the seconds each took (the ASan build apart).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .common import ROOT, Result, env_with_package, parse, parser, workdir

TOOLS = ["asan", "valgrind"]
SUPPRESSIONS = ROOT / "torture" / "valgrind-python.supp"
# Left out under ASan, with the reason in the module doc.
ASAN_SKIP = ["a_decompression_bomb_is_an_error_not_an_abort"]
# Left out under valgrind in the full run (property tests of 300 examples each: minutes natively under load,
# an hour under valgrind); the probe and the fuzz targets cover the same code.
VALGRIND_DESELECT = [
    "tests/test_fidelity.py::test_many_messages_round_trip",
    "tests/test_fidelity.py::test_round_trip_matches_stdlib",
    "tests/test_fidelity.py::test_mutated_json_text_is_judged_as_the_stdlib_judges_it",
    "tests/test_fidelity.py::test_any_json_text_loads_as_the_stdlib_reads_it",
]
VALGRIND_TESTS = [
    "tests/test_decode_source.py",
    "tests/test_depth.py",
    "tests/test_reentrant.py",
    "tests/test_jsontestsuite.py",
    "tests/test_fidelity.py",
]
# Addressability errors: a failure wherever they are.
ADDRESS_KINDS = {
    "InvalidRead",
    "InvalidWrite",
    "InvalidFree",
    "MismatchedFree",
    "InvalidJump",
    "Overlap",
    "InvalidMemPool",
    "FishyValue",
    "SyscallParam",
}
TIMEOUT = 3600

_RESULT = re.compile(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored; \d+ measured; (\d+) filtered out")
_PYTEST = re.compile(r"(\d+) passed")


def main(argv: list[str] | None = None) -> int:
    p = parser("sanitizers", __doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(TOOLS), help="comma-separated subset of: " + ", ".join(TOOLS))
    p.add_argument("--plant", action="store_true", help="plant a read of freed memory in the valgrind probe")
    args = parse(p, argv)
    tools = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown:
        p.error(f"unknown tool(s): {', '.join(unknown)}")
    result = Result("sanitizers", args)
    with workdir(args, "sanitizers") as work:
        if "asan" in tools:
            result.figures["asan"] = asan(result)
        if "valgrind" in tools:
            result.figures["valgrind"] = valgrind(result, args.quick, args.seed, args.plant, work)
    return result.finish()


def asan(result: Result) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYO3_PYTHON"] = sys.executable
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, env.get("LD_LIBRARY_PATH", "")]))
    env["RUSTFLAGS"] = "-Zsanitizer=address -Cforce-frame-pointers=yes"
    # LeakSanitizer runs at exit with ASan; an allocation the data asks for that fails returns NULL, as without ASan.
    env["ASAN_OPTIONS"] = "detect_odr_violation=0:allocator_may_return_null=1:detect_leaks=1"
    cargo = [
        "cargo",
        "+nightly",
        "test",
        "--lib",
        "--target",
        "x86_64-unknown-linux-gnu",
        "--target-dir",
        str(ROOT / "target" / "sanitizers"),
    ]
    start = time.monotonic()
    build = subprocess.run([*cargo, "--no-run"], cwd=ROOT, env=env, capture_output=True, text=True)
    figures: dict[str, Any] = {"build_seconds": round(time.monotonic() - start, 1)}
    if build.returncode:
        sys.stderr.write(build.stderr[-5000:])
        result.fail(f"asan: the build failed (exit {build.returncode})")
        return figures
    skips = [arg for name in ASAN_SKIP for arg in ("--skip", name)]
    start = time.monotonic()
    run = subprocess.run(
        [*cargo, "--", *skips], cwd=ROOT, env=env, capture_output=True, text=True, errors="replace", timeout=TIMEOUT
    )
    figures["seconds"] = round(time.monotonic() - start, 1)
    output = run.stdout + run.stderr
    counts = [tuple(map(int, m)) for m in _RESULT.findall(output)]
    passed = sum(c[0] for c in counts)
    failed = sum(c[1] for c in counts)
    reports = len(re.findall(r"ERROR: (?:AddressSanitizer|LeakSanitizer)", output))
    filtered = sum(c[3] for c in counts)
    figures.update(tests=passed, failed=failed, errors=reports, skipped=ASAN_SKIP)
    if run.returncode or failed or reports or not counts:
        sys.stderr.write(output[-8000:])
        result.fail(f"asan: exit {run.returncode}, {failed} failed, {reports} sanitizer report(s)")
    if filtered != len(ASAN_SKIP):
        result.fail(f"asan: {filtered} tests left out, expected exactly {ASAN_SKIP}")
    print(f"[sanitizers] asan: {figures}", flush=True)
    return figures


def valgrind(result: Result, quick: bool, seed: int, plant: bool, work: Path) -> dict[str, Any]:
    runs: list[tuple[str, list[str]]] = [
        ("probe", ["-m", "torture._probe", "--seed", str(seed), "--rounds", "200" if quick else "2000"])
    ]
    if plant:
        runs[0][1].append("--plant")
    if not quick:
        deselect = [arg for test in VALGRIND_DESELECT for arg in ("--deselect", test)]
        runs.append(("pytest", ["-m", "pytest", "-q", "-p", "no:cacheprovider", *deselect, *VALGRIND_TESTS]))
    env = env_with_package()
    env["PYTHONMALLOC"] = "malloc"
    figures: dict[str, Any] = {"errors": 0, "cpython_noise": 0, "suppressed": 0, "seconds": 0.0}
    for name, python_args in runs:
        xml = work / f"valgrind-{name}.xml"
        cmd = [
            "valgrind",
            "--tool=memcheck",
            "--xml=yes",
            f"--xml-file={xml}",
            # A test that forks (without exec) would write a second XML document into the same file.
            "--child-silent-after-fork=yes",
            "--leak-check=full",
            "--show-leak-kinds=definite",
            "--errors-for-leak-kinds=definite",
            "--num-callers=40",
            f"--suppressions={SUPPRESSIONS}",
            sys.executable,
            *python_args,
        ]
        print(f"[sanitizers] valgrind: {name}", flush=True)
        start = time.monotonic()
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, errors="replace", timeout=TIMEOUT)
        seconds = round(time.monotonic() - start, 1)
        figures["seconds"] = round(figures["seconds"] + seconds, 1)
        output = run.stdout + run.stderr
        if name == "probe":
            m = re.search(r"probe: (\d+) checks passed", output)
            figures["probe_checks"] = int(m.group(1)) if m else 0
        else:
            m = _PYTEST.search(output)
            figures["pytest_tests"] = int(m.group(1)) if m else 0
        if run.returncode:
            sys.stderr.write(output[-5000:])
            result.fail(f"valgrind {name}: exit {run.returncode}")
        ours, noise, suppressed = judge(xml)
        figures["errors"] += len(ours)
        figures["cpython_noise"] += noise
        figures["suppressed"] += suppressed
        for error in ours[:20]:
            result.fail(f"valgrind {name}: {error}")
        print(f"[sanitizers] valgrind {name}: {seconds} s, {len(ours)} error(s), {noise} CPython noise", flush=True)
    return figures


def judge(xml: Path) -> tuple[list[str], int, int]:
    """The errors that fail the run (each described), the count of CPython's own, and how many were suppressed."""
    root = ET.parse(xml).getroot()
    failures: list[str] = []
    noise = 0
    for error in root.iter("error"):
        kind = error.findtext("kind") or "?"
        stack = error.find("stack")
        frames = [(f.findtext("fn") or "?", f.findtext("obj") or "?") for f in (stack if stack is not None else [])]
        if kind in ADDRESS_KINDS or by_extension(frames):
            what = error.findtext("what") or error.findtext("xwhat/text") or ""
            where = " <- ".join(f"{fn} ({Path(obj).name})" for fn, obj in frames[:12])
            failures.append(f"{kind}: {what}: {where}")
        else:
            noise += 1
    suppressed = sum(int(p.findtext("count") or 0) for p in root.iterfind("suppcounts/pair"))
    return failures, noise, suppressed


def by_extension(frames: list[tuple[str, str]]) -> bool:
    """Whether the extension did it: a frame of `_core*.so` below the innermost Python frame. Python code that the
    extension calls (a dict subclass's items() that runs gc.collect()) has the extension's frames further out, and
    what goes wrong in it is not the extension's doing."""
    for fn, obj in frames:
        if fn == "_PyEval_EvalFrameDefault":
            return False
        if Path(obj).name.startswith("_core."):
            return True
    return False


if __name__ == "__main__":
    sys.exit(main())
