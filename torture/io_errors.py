"""I/O errors: ENOSPC and EIO injected into every system call of a save, an append, an encrypt() and the readers,
and a real full disk, with the conversation checked after each.

Two mechanisms, both real failures of the real calls:

(a) libfiu (Debian's fiu-utils): a child process runs under `fiu-run -x`, whose POSIX preload library wraps open,
    write/writev, pwrite, fsync/fdatasync, rename, ftruncate, unlink and the reads. The child enables its failure
    points only around the call under test (through libfiu's own API, loaded with ctypes), with a callback that counts
    the calls of each kind and fails exactly the chosen one, with the chosen errno: SQLite's I/O-error test, call by
    call. A counting run of each scenario first finds how many calls of each kind it makes; then the scenario is run
    again for each call (and in quick mode, for a seeded sample of errnos and modes), from a fresh copy of its folder:
      once     the call fails, the next ones work (a transient EIO);
      persist  the call and every later one of its kind fail (a disk that stays full or broken);
      short    (writes) the call writes only part of its buffer, every later write fails ENOSPC: a disk filling up;
      double   (appends) the fault, and every ftruncate failing too: the cut-back of a failed append cannot happen;
      short-double  both: a partial write that cannot be cut back, which the next writer must set aside.
    close() is not failed: libfiu's failing close keeps the descriptor open, which Linux never does (a close that
    reports EIO has still freed its descriptor), so it would test a kernel that does not exist.
(b) a small tmpfs, filled with a filler file, so that the call meets a real ENOSPC (with the real partial write
    before it). Mounting needs root: without it this part is reported as not run, never as passed.

After each fault, with the failures cleared: the call raised an OSError (never silently succeeded after a failed
fsync, never anything else), or returned with the new conversation stored; a fresh codec reads the old conversation
or the new one, whole, with len()/load(last)/iteration agreeing; verify() finds no damage and no torn bytes beyond
any the folder already held (unless the fault was double: then they are counted, and must be mended by the next
writer); a torn tail the folder held is kept; no descriptor leaked; the same codec then repeats the call, which must
work and leave a sound file, without its temporary file. The readers (load, len, load(last), iteration, verify) under
EIO must raise OSError or give the exact result, and never write.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conversation_codec import ConversationCodec, Report

from .common import Result, env_with_package, parse, parser, workdir
from .scenarios import SCENARIOS, Prepared, big_bytes, clone, codec, is_encrypted, messages, prepare, reader

NAME = "io_errors"
FIU_RUN = "/usr/bin/fiu-run"
SCRATCH = "/dev/shm"

# The kinds of call faults are injected into, and the libfiu failure points (posix preload) of each.
KINDS: dict[str, tuple[str, ...]] = {
    "open": ("posix/io/oc/open",),
    "write": ("posix/io/rw/write", "posix/io/rw/writev"),
    "pwrite": ("posix/io/rw/pwrite", "posix/io/rw/pwritev"),
    "fsync": ("posix/io/sync/fsync", "posix/io/sync/fdatasync"),
    "rename": ("posix/io/dir/rename",),
    "ftruncate": ("posix/io/rw/ftruncate",),
    "unlink": ("posix/io/dir/unlink",),
    "read": ("posix/io/rw/pread", "posix/io/rw/read", "posix/io/rw/preadv", "posix/io/rw/readv"),
}
REDUCE = ("posix/io/rw/write/reduce", "posix/io/rw/writev/reduce")
KIND_OF = {name: kind for kind, names in KINDS.items() for name in names}
# The errnos each kind really returns for a full or failing disk (ftruncate that shrinks, unlink and reads do not
# run out of space).
ERRNOS = {
    "open": (errno.ENOSPC, errno.EIO),
    "write": (errno.ENOSPC, errno.EIO),
    "pwrite": (errno.ENOSPC, errno.EIO),
    "fsync": (errno.ENOSPC, errno.EIO),
    "rename": (errno.ENOSPC, errno.EIO),
    "ftruncate": (errno.EIO,),
    "unlink": (errno.EIO,),
    "read": (errno.EIO,),
}
READERS = ["load", "len", "last", "iter", "verify"]
RETRY_TURN = [{"role": "user", "content": "sent again once the disk recovered"}]
CASE_SECONDS = 20  # a case that takes longer is hung (a lock that outlived its failed call)


def main(argv: list[str] | None = None) -> int:
    p = parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--scenarios", default="", help="comma-separated subset of: " + ", ".join([*SCENARIOS, "read"]))
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parse(p, argv)
    if args.child is not None:
        return child(args.child)
    result = Result(NAME, args)
    with workdir(args, NAME) as work:
        work = Path(os.path.realpath(work))
        result.figures["not_run"] = []
        run_fiu(args, work, result)
        run_tmpfs(args, work, result)
    return result.finish()


def chosen(args: argparse.Namespace) -> list[str]:
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not names:
        names = [s for s, sc in SCENARIOS.items() if not (sc.big and args.quick)] + ["read"]
    unknown = sorted(set(names) - set(SCENARIOS) - {"read"})
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)}")
    return names


# ================================================================================================ libfiu

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.POINTER(ctypes.c_int),
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.POINTER(ctypes.c_uint),
)


@dataclass(frozen=True)
class Fault:
    kind: str
    at: int  # the call of that kind that fails (1-based)
    err: int
    mode: str  # once, persist, short, double, short-double (the module docstring says what each does)

    def describe(self) -> str:
        return f"{self.kind} call #{self.at} {errno.errorcode[self.err]} ({self.mode})"


class Fiu:
    """libfiu's failure points, driven from inside the process that fiu-run preloaded its wrappers into."""

    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libfiu.so.0")
        self.libc = ctypes.CDLL(None)
        self.lib.fiu_enable_external.argtypes = [
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_uint,
            _CALLBACK,
        ]
        self.lib.fiu_disable.argtypes = [ctypes.c_char_p]
        if self.lib.fiu_init(0) != 0:
            raise OSError("fiu_init failed")
        self.callback = _CALLBACK(self._decide)
        self.counts: Counter[str] = Counter()
        self.fault: Fault | None = None
        self.injected = 0
        self.reduced = 0  # short writes made (libfiu may draw the whole length: then nothing else fails)

    def _decide(self, name: bytes, failnum: Any, failinfo: Any, flags: Any) -> int:
        # Runs inside the wrapped call, in whatever thread made it (the GIL is taken by ctypes). No I/O here.
        label = name.decode()
        fault = self.fault
        if label in REDUCE:
            hit = fault is not None and fault.mode.startswith("short") and self.counts["write"] + 1 == fault.at
            self.reduced += hit
            return 1 if hit else 0
        kind = KIND_OF[label]
        self.counts[kind] += 1
        if fault is None:
            return 0
        n = self.counts[kind]
        fail = False
        if kind == fault.kind:
            if fault.mode.startswith("short"):
                fail = n > fault.at
            elif fault.mode == "once":
                fail = n == fault.at
            else:
                fail = n >= fault.at
        elif fault.mode.endswith("double") and kind == "ftruncate":
            fail = self.injected > 0  # the cut-back after the fault fails too
        if fail:
            failinfo[0] = fault.err if kind == fault.kind else errno.EIO
            self.injected += 1
            return 1
        return 0

    def arm(self, fault: Fault | None, seed: int = 0) -> None:
        self.counts.clear()
        self.injected = 0
        self.reduced = 0
        self.fault = fault
        self.libc.srandom(seed)  # libfiu's "reduce" (short write) draws its length from random()
        for name in [*KIND_OF, *REDUCE]:
            self.lib.fiu_enable_external(name.encode(), 1, None, 0, self.callback)

    def disarm(self) -> None:
        for name in [*KIND_OF, *REDUCE]:
            self.lib.fiu_disable(name.encode())
        self.fault = None


def run_fiu(args: argparse.Namespace, work: Path, result: Result) -> None:
    if not os.access(FIU_RUN, os.X_OK):
        result.figures["not_run"].append(f"libfiu: {FIU_RUN} not found (run torture/setup.sh)")
        result.fail(f"{FIU_RUN} not found: run torture/setup.sh (I/O errors not injected)")
        return
    scenarios = chosen(args)
    for fmt in args.formats:
        out = work / f"fiu-{fmt}.jsonl"
        plan = {
            "seed": args.seed,
            "fmt": fmt,
            "scenarios": scenarios,
            "quick": args.quick,
            "work": str(work / f"fiu-{fmt}"),
            "out": str(out),
        }
        plan_path = work / f"plan-{fmt}.json"
        plan_path.write_text(json.dumps(plan))
        cmd = [FIU_RUN, "-x", "-f", "", sys.executable, "-m", "torture.io_errors", "--child", str(plan_path)]
        started = time.monotonic()
        done = subprocess.run(cmd, env=env_with_package(), capture_output=True, text=True, timeout=1800)
        records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        if done.returncode != 0:
            result.fail(f"{fmt}: the fiu child failed (exit {done.returncode}): {done.stderr[-3000:]}")
        figures = summarize(records, result, fmt)
        figures["seconds"] = round(time.monotonic() - started, 1)
        result.figures.setdefault(fmt, {})["fiu"] = figures
        print(f"[{NAME}] {fmt} (libfiu): {json.dumps(figures)}", flush=True)


def summarize(records: list[dict[str, Any]], result: Result, fmt: str) -> dict[str, Any]:
    shown: Counter[str] = Counter()
    fig: dict[str, Any] = {
        "cases": 0,
        "faults_injected": Counter(),
        "raised": Counter(),
        "returned": Counter(),
        "outcomes": Counter(),
        "losses": 0,
        "torn_bytes_left": 0,
        "double_faults": Counter(),
        "tmp_left_after_fault": 0,
        "retries_ok": 0,
        "failures": 0,
    }
    for r in records:
        if r.get("counting"):
            continue
        fig["cases"] += 1
        kind = r["kind"]
        fig["faults_injected"][kind] += r["injected"]
        fig["raised" if r["raised"] else "returned"][kind] += 1
        fig["outcomes"][r["outcome"]] += 1
        fig["losses"] += r["lost"]
        if r["mode"].endswith("double"):
            fig["double_faults"]["cases"] += 1
            fig["double_faults"]["torn_bytes_left"] += r["torn_left"]
            fig["double_faults"]["mended_by_next_writer"] += bool(r["torn_left"]) and r["retry_ok"]
        else:
            fig["torn_bytes_left"] += r["torn_left"]
        fig["tmp_left_after_fault"] += r["tmp_left"]
        fig["retries_ok"] += r["retry_ok"]
        for problem in r["problems"]:
            # Every failure is counted; the first two of each kind (numbers aside) are shown.
            fig["failures"] += 1
            label = re.sub(r"\d+", "N", f"{r['scenario']} {r['kind']} {problem}")[:160]
            shown[label] += 1
            if shown[label] <= 2:
                result.fail(f"{fmt} {r['scenario']} ({r['op']}), {r['fault']}: {problem}")
    for key, value in list(fig.items()):
        if isinstance(value, Counter):
            fig[key] = dict(sorted(value.items()))
    return fig


# ================================================================================================ the fiu child


def child(plan_path: Path) -> int:
    plan = json.loads(plan_path.read_text())
    fmt, work = plan["fmt"], Path(plan["work"])
    fiu = Fiu()
    signal.signal(signal.SIGALRM, _hung)
    scratch = Path(tempfile.mkdtemp(prefix="torture-io-", dir=SCRATCH if os.path.isdir(SCRATCH) else work.parent))
    try:
        with open(plan["out"], "w") as out:
            for scenario in plan["scenarios"]:
                if scenario != "read" and fmt not in SCENARIOS[scenario].formats:
                    continue
                rng = random.Random(f"{plan['seed']}:{fmt}:{scenario}")
                template = work / scenario
                base = "append" if scenario == "read" else scenario
                prep = prepare(base, fmt, template, rng, big_bytes=big_bytes(fmt))
                ops = READERS if scenario == "read" else [scenario]
                for op in ops:
                    for record in run_cases(fiu, prep, scenario, op, scratch, rng, plan["quick"], plan["seed"]):
                        out.write(json.dumps(record) + "\n")
                        out.flush()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


class Hung(Exception):
    pass


def _hung(signum: int, frame: Any) -> None:
    raise Hung(f"no answer in {CASE_SECONDS} s")


def run_cases(
    fiu: Fiu, template: Prepared, scenario: str, op: str, scratch: Path, rng: random.Random, quick: bool, seed: int
) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    folder = scratch / "case"
    # A first run imports whatever the call imports lazily (its opens and reads are not the call's own); the
    # second counts how many calls of each kind the operation makes.
    for counting in (False, True):
        shutil.rmtree(folder, ignore_errors=True)
        clone(template.root, folder)
        prep = _moved(template, folder)
        if counting:
            fiu.arm(None)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _perform(prep, op, codec(prep.fmt, prep.path, durable=True))
        finally:
            fiu.disarm()
    counts = dict(fiu.counts)
    records.append({"counting": True, "scenario": scenario, "op": op, "counts": counts})
    faults = []
    for kind, n in sorted(counts.items()):
        for at in range(1, n + 1):
            variants = [(err, mode) for err in ERRNOS[kind] for mode in _modes(kind, template.op, op)]
            if quick:  # one variant per call; a short write (a disk filling up) whenever the call is a write
                short = [v for v in variants if v[1] == "short"]
                variants = list(dict.fromkeys([rng.choice(variants), *short[:1]]))
            faults += [Fault(kind, at, err, mode) for err, mode in variants]
    for fault in faults:
        shutil.rmtree(folder, ignore_errors=True)
        clone(template.root, folder)
        prep = _moved(template, folder)
        record = {"scenario": scenario, "op": op, "kind": fault.kind, "mode": fault.mode, "fault": fault.describe()}
        signal.alarm(CASE_SECONDS)
        try:
            if op in READERS:
                record.update(judge_reader(fiu, prep, op, fault, rng.randrange(1 << 30)))
            else:
                record.update(judge_writer(fiu, prep, fault, rng.randrange(1 << 30)))
        except Hung as exc:
            fiu.disarm()
            record.update(_broken(f"hung: {exc}"))
        finally:
            signal.alarm(0)
        records.append(record)
    return records


def _modes(kind: str, scenario_op: str, op: str) -> list[str]:
    if op in READERS:
        return ["once", "persist"]
    modes = ["once", "persist"]
    if kind == "write":
        modes.append("short")
    if scenario_op == "append" and kind in ("write", "fsync"):
        modes.append("double")
    if scenario_op == "append" and kind == "write":
        modes.append("short-double")
    return modes


def _moved(template: Prepared, root: Path) -> Prepared:
    return Prepared(
        template.scenario, template.fmt, root, template.rel, template.old, template.new, template.payload, template.torn
    )


def _perform(prep: Prepared, op: str, c: ConversationCodec) -> Any:
    if op == "load":
        return c.load()
    if op == "len":
        return len(c)
    if op == "last":
        return c.load(last=2)
    if op == "iter":
        return list(c)
    if op == "verify":
        return c.verify()
    prep.run(c)
    return None


def _broken(problem: str) -> dict[str, Any]:
    return {
        "injected": 0,
        "raised": None,
        "outcome": "broken",
        "lost": 0,
        "torn_left": 0,
        "tmp_left": 0,
        "retry_ok": False,
        "problems": [problem],
    }


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def judge_writer(fiu: Fiu, prep: Prepared, fault: Fault, seed: int) -> dict[str, Any]:
    """Runs the scenario's call with the fault, then checks the folder and repeats the call."""
    c = codec(prep.fmt, prep.path, durable=True)
    fds = _fds()
    raised: BaseException | None = None
    fiu.arm(fault, seed)
    try:
        prep.run(c)
    except BaseException as exc:  # judged below, whatever it is
        raised = exc
    finally:
        injected = fiu.injected or fiu.reduced  # a short write is a fault injected, even one the caller completed
        fiu.disarm()
    return judge_after(prep, c, raised, injected, fault.kind, fault.mode, fds)


def judge_after(
    prep: Prepared,
    c: ConversationCodec,
    raised: BaseException | None,
    injected: int,
    kind: str,
    mode: str,
    fds: set[str] | None,
) -> dict[str, Any]:
    problems: list[str] = []
    record: dict[str, Any] = {"injected": injected, "raised": None if raised is None else type(raised).__name__}
    if not injected:
        problems.append("no fault was injected (the calls differ from the counting run's)")
    if raised is not None and not isinstance(raised, OSError):
        problems.append(f"raised {type(raised).__name__} (not an OSError): {raised}")
    if raised is None and kind == "fsync" and injected:
        problems.append("an fsync failed and the call reported success: what it wrote may not be on disk")
    if fds is not None and _fds() - fds:
        problems.append(f"descriptors leaked by the failed call: {sorted(_fds() - fds)}")
    state = inspect(prep)
    problems += state.problems
    record["outcome"] = ("returned-" if raised is None else "raised-") + state.outcome
    if raised is None and state.outcome != "new":
        problems.append(f"the call returned but the stored conversation is the {state.outcome} one")
    lost = state.outcome not in ("old", "new") or not prep.torn_kept()
    if lost:
        problems.append(
            f"acknowledged data lost: the conversation is {state.outcome}, torn tail kept: {prep.torn_kept()}"
        )
    if state.new_torn and not mode.endswith("double"):
        problems.append(f"{state.new_torn} torn bytes left behind by the failed call")
    record.update(lost=int(lost), torn_left=state.new_torn, tmp_left=int(_tmp(prep).exists()))
    # The same codec, the fault cleared, repeats the call.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a torn tail left by a double fault: the call sets it aside
            if prep.op == "append":
                c.append_turn(RETRY_TURN)
                expected = [*state.got, *RETRY_TURN]
            elif prep.op.startswith("pop"):  # a pop again takes off what is last now (the old ends with a pair)
                prep.run(c)
                expected = state.got[:-2] if prep.op == "pop_turn" and state.got == prep.old else state.got[:-1]
            else:
                prep.run(c)
                expected = prep.new
        after = inspect(prep)
        retry_problems = [f"after the repeated call: {p}" for p in after.problems]
        if after.got != expected:
            retry_problems.append(f"the repeated call left {len(after.got)} messages, not the {len(expected)} expected")
        if after.torn_bytes:
            retry_problems.append(f"the repeated call left {after.torn_bytes} torn bytes")
        if prep.op != "append" and _tmp(prep).exists():
            retry_problems.append(f"the repeated save left its temporary file {_tmp(prep).name}")
    except Exception as exc:
        retry_problems = [f"the repeated call raised {type(exc).__name__}: {exc}"]
    problems += retry_problems
    record["retry_ok"] = not retry_problems
    record["problems"] = problems
    return record


def judge_reader(fiu: Fiu, prep: Prepared, op: str, fault: Fault, seed: int) -> dict[str, Any]:
    """A reader under an I/O error raises OSError or gives the exact result; it never writes."""
    expected = _perform(prep, op, codec(prep.fmt, prep.path))
    before = _snapshot(prep.root)
    c = codec(prep.fmt, prep.path)
    fds = _fds()
    raised: BaseException | None = None
    got = None
    fiu.arm(fault, seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = _perform(prep, op, c)
    except BaseException as exc:
        raised = exc
    finally:
        injected = fiu.injected
        fiu.disarm()
    problems = []
    if not injected:
        problems.append("no fault was injected (the calls differ from the counting run's)")
    if raised is not None and not isinstance(raised, OSError):
        problems.append(f"raised {type(raised).__name__} (not an OSError): {raised}")
    if isinstance(got, Report) and isinstance(expected, Report):
        # Which index verify() could read is not the conversation: an index it cannot read is reported as
        # ignored, and the result is found without it.
        got, expected = dataclasses.replace(got, index=""), dataclasses.replace(expected, index="")
    if raised is None and got != expected:
        problems.append(f"returned a wrong result under the fault: {str(got)[:200]}")
    if _fds() - fds:
        problems.append(f"descriptors leaked: {sorted(_fds() - fds)}")
    if _snapshot(prep.root) != before:
        problems.append("a reader changed the folder")
    return {
        "injected": injected,
        "raised": None if raised is None else type(raised).__name__,
        "outcome": "raised" if raised is not None else "exact",
        "lost": 0,
        "torn_left": 0,
        "tmp_left": 0,
        "retry_ok": True,
        "problems": problems,
    }


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _tmp(prep: Prepared) -> Path:
    return prep.path.parent / f".{prep.path.name}.tmp"


@dataclass
class Inspection:
    got: list[Any]
    outcome: str
    torn_bytes: int
    new_torn: int  # torn bytes beyond those the folder held before the call
    problems: list[str]


def inspect(prep: Prepared) -> Inspection:
    """What a fresh codec finds in the folder: the conversation, how it compares, torn bytes and inconsistencies."""
    problems: list[str] = []
    c = reader(prep.fmt, prep.path, prep.op)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if prep.op.startswith("pop"):  # a pop cut short is undone by the next writer: repair() is one
                c.repair()
            got = c.load()
            if len(c) != len(got) or c.load(last=2) != got[-2:] or list(c) != got:
                problems.append("len(), load(last=2) or iteration disagree with load()")
            report = c.verify()
    except Exception as exc:
        return Inspection([], "unreadable", 0, 0, [f"reading raised {type(exc).__name__}: {exc}"])
    if report.errors:
        problems.append(f"verify() found damage: {report.errors[:3]}")
    if report.index.startswith("wrong"):
        problems.append(f"the index is believed but wrong: {report.index}")
    torn = report.torn_tail_bytes
    held = len(prep.torn) if prep.torn is not None and prep.path.exists() and _ends_with(prep) else 0
    new_torn = torn if torn != held else 0
    return Inspection(got, prep.outcome(got, is_encrypted(prep.path)), torn, new_torn, problems)


def _ends_with(prep: Prepared) -> bool:
    return prep.torn is not None and prep.path.read_bytes().endswith(prep.torn)


# ================================================================================================ tmpfs


def run_tmpfs(args: argparse.Namespace, work: Path, result: Result) -> None:
    mount = work / "tmpfs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        reason = f"tmpfs: not run (mount refused: {done.stderr.strip() or done.returncode})"
        result.figures["not_run"].append(reason)
        print(f"[{NAME}] NOT RUN: {reason}", flush=True)
        return
    try:
        trials = 6 if args.quick else 30
        for fmt in args.formats:
            rng = random.Random(f"{args.seed}:{fmt}:tmpfs")
            started = time.monotonic()
            fig = full_disk(fmt, mount, trials, rng, result)
            fig["seconds"] = round(time.monotonic() - started, 1)
            result.figures.setdefault(fmt, {})["tmpfs"] = fig
            print(f"[{NAME}] {fmt} (full tmpfs): {json.dumps(fig)}", flush=True)
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def full_disk(fmt: str, mount: Path, trials: int, rng: random.Random, result: Result) -> dict[str, Any]:
    """Each trial: a scenario's folder on the tmpfs, the rest of the tmpfs filled but for a few pages, the call."""
    scenarios = [s for s, sc in SCENARIOS.items() if fmt in sc.formats and not sc.big and s != "save-new-folder"]
    fig: dict[str, Any] = {
        "trials": 0,
        "enospc": 0,
        "enospc_after_partial_write": 0,
        "returned": 0,
        "outcomes": Counter(),
        "losses": 0,
        "torn_bytes_left": 0,
        "retries_ok": 0,
        "failures": 0,
    }
    for trial in range(trials):
        scenario = scenarios[trial % len(scenarios)]
        free_pages = rng.choice([0, 0, 1, 2, 3])
        for p in mount.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        prep = prepare(scenario, fmt, mount / "d", rng)
        if prep.op == "save":  # a save big enough to need several pages
            prep.payload = prep.new = _bigger(rng)
        size = prep.path.stat().st_size if prep.path.exists() else 0
        slack = (-size) % 4096 if prep.op == "append" else 0  # room left in the file's last page
        filler = _fill(mount / "filler", free_pages)
        c = codec(fmt, prep.path, durable=True)
        raised: BaseException | None = None
        try:
            prep.run(c)
        except BaseException as exc:
            raised = exc
        os.unlink(filler)  # the disk recovers before anything is checked (a check may write: the next append)
        fig["trials"] += 1
        enospc = isinstance(raised, OSError) and raised.errno == errno.ENOSPC
        fig["enospc"] += enospc
        # ENOSPC with room left: the write filled that room first (tmpfs writes what fits, then fails).
        fig["enospc_after_partial_write"] += enospc and (slack > 0 or free_pages > 0)
        fig["returned"] += raised is None
        record = judge_after(prep, c, raised, 1, "write", "once", None)
        fig["outcomes"][record["outcome"]] += 1
        fig["losses"] += record["lost"]
        fig["torn_bytes_left"] += record["torn_left"]
        fig["retries_ok"] += record["retry_ok"]
        for problem in record["problems"]:
            fig["failures"] += 1
            if fig["failures"] <= 10:
                result.fail(f"{fmt} tmpfs trial {trial} ({scenario}, {free_pages} free pages): {problem}")
    fig["outcomes"] = dict(sorted(fig["outcomes"].items()))
    return fig


def _bigger(rng: random.Random) -> list[Any]:
    return messages(rng, rng.randrange(20, 60), size=400)


def _fill(path: Path, free_pages: int) -> Path:
    """A file that takes all the space left but `free_pages` pages."""
    block = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        size = 0
        for chunk in (65536, 4096):
            while True:
                try:
                    size += os.write(fd, block[:chunk])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        os.ftruncate(fd, max(0, size - free_pages * 4096))
    finally:
        os.close(fd)
    return path


if __name__ == "__main__":
    sys.exit(main())
