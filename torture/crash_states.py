"""Crash states: every folder a power cut during a save, an append or an encrypt() could leave, and recovery from each.

SIGKILL keeps the page cache, so killing a writer says nothing of `durable=True`. This suite does what ALICE
(Pillai et al., OSDI 2014) does instead: a child process runs each scenario of torture/scenarios.py (save over a
conversation, over a torn one, into a new folder; append to one, to a torn one, to a file of the original design,
where none is; encrypt()) in each format and with durable=True and False, under `strace -f -y -xx`. The trace of each
call becomes logical operations on inodes, and every on-disk state a power cut could leave is built from a snapshot
of the folder before the call, under the persistence model of torture/syscalls.py. Its assumptions, in short (a
generic POSIX file system, deliberately not ext4's data=ordered):

- fsync of a file makes its data and size durable, and nothing else: not its name, not other files;
- fsync of a folder makes the entries created, renamed or removed in it durable; nothing else does;
- until then, each folder keeps any subset of its pending entry changes and each file any prefix of its pending
  writes, the last one cut at any byte (small writes), or at sectors, line breaks and random offsets (large ones);
  files and folders lose their pending changes independently of each other;
- what a disk does after fsync returned is trusted (a disk that lies about its cache is out of scope).

Each state is materialized in a fresh folder (an index is made to name the copy of its data file) and checked with
fresh codecs: load() returns the old conversation or the new one (for an append: old, or old plus the whole turn),
raising nothing and warning of nothing but a torn tail; len(), load(last=n) and iteration agree with it (the index
never changes a result); verify() finds no damage; a torn tail the folder held is kept (in the file or a side file);
the next append_turn works and leaves a sound file holding what was read plus the new turn. With durable=True a state
the call can leave after returning must hold the new conversation; a failure of any of these fails the suite.

With durable=False the same states are checked and reading them must be as sound (no exception but a CodecError,
no disagreement, the next append works), but what is lost is only reported: the documented trade-off (figures
`lost_acknowledged`: neither the old nor the new conversation; `lost_after_return`: not the new one; `unreadable`:
a CodecError, such as an encrypted file cut inside its first frame, which reads as a wrong key). The model's
states are built exhaustively with durable=True (`sampled_out` says when a crash point had more than its cap);
durable=False ones, far more numerous since nothing is flushed, are a seeded sample.

The *weak* tier, outside the model (a write whose size persisted but whose data did not: zeros), is reported apart:
how many such states read cleanly, needed repair() (and whether repair() gave back the old or new conversation), or
could not be mended; only an exception that is not a CodecError fails the suite there.

Replay: `--seed N --formats F --scenarios S` rebuilds the same states (Fernet tokens differ in their bytes, never in
their lengths, so the cuts fall at the same places).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conversation_codec import CodecError, TornTailWarning

from . import syscalls
from .common import Result, env_with_package, parse, parser, workdir
from .scenarios import (
    SCENARIOS,
    Prepared,
    big_bytes,
    codec,
    digest,
    is_encrypted,
    prepare,
    quiet_load,
    reader,
    unencrypted,
)

NAME = "crash_states"
PROBE = {"role": "probe", "content": "written after the power cut"}
SCRATCH = "/dev/shm"  # crash states are written and removed by the thousand: a RAM folder when there is one


def main(argv: list[str] | None = None) -> int:
    p = parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--scenarios", default="", help="comma-separated subset of: " + ", ".join(SCENARIOS))
    p.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parse(p, argv)
    if args.child is not None:
        return child(args.child)
    result = Result(NAME, args)
    with workdir(args, NAME) as work:
        run(args, Path(os.path.realpath(work)), result)
    return result.finish()


def chosen_scenarios(args: argparse.Namespace) -> list[str]:
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()] or [
        s for s, sc in SCENARIOS.items() if not (sc.big and args.quick)
    ]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)}")
    return names


def cuts_for(quick: bool, big: bool, durable: bool) -> syscalls.Cuts:
    """The model's cut points, and the states built per crash point before sampling. durable=False runs are
    reported, not judged, and have many more states (nothing is flushed): they get a smaller sample."""
    if big:  # a save of MiBs: a cut at every sector would make thousands of states per crash point
        return syscalls.Cuts(every_byte=0, sector=1 << 16, random=4 if quick else 8, breaks=4, cap=20 if quick else 80)
    if quick:
        return syscalls.Cuts(every_byte=40, sector=512, random=3, breaks=16, cap=40 if durable else 12)
    return syscalls.Cuts(every_byte=4096, sector=512, random=16, cap=3000 if durable else 150)


# ================================================================================================ the child


def child(plan_path: Path) -> int:
    """Runs under strace: prepares each scenario's folder, snapshots it, runs the call between two marks,
    snapshots the result. Writes the manifest the parent replays the trace with."""
    plan = json.loads(plan_path.read_text())
    work = Path(plan["work"])
    manifest = []
    for fmt in plan["formats"]:
        for scenario in plan["scenarios"]:
            if fmt not in SCENARIOS[scenario].formats:
                continue
            # A big save's durable=False states are save-over's, at a scale that would take minutes to build.
            for durable in (True,) if SCENARIOS[scenario].big else (True, False):
                sid = f"{fmt}.{scenario}.{'durable' if durable else 'fast'}"
                rng = random.Random(f"{plan['seed']}:{sid}")
                base = work / "trace" / sid
                prep = prepare(scenario, fmt, base / "d", rng, big_bytes=big_bytes(fmt))
                before = syscalls.copy_folder(base / "d", base / "before")
                error = None
                syscalls.mark("begin", sid)
                try:
                    prep.run(durable=durable)
                except Exception as exc:  # reported by the parent
                    error = f"{type(exc).__name__}: {exc}"
                syscalls.mark("end", sid)
                if error is None and quiet_load(reader(fmt, prep.path, prep.op)) != prep.new:
                    error = "the call returned but the file does not hold the new conversation"
                after = syscalls.copy_folder(base / "d", base / "after")
                manifest.append(
                    {
                        "sid": sid,
                        "durable": durable,
                        "root": str(base / "d"),
                        "error": error,
                        "before_ids": before,
                        "after_ids": after,
                        **prep.manifest(),
                    }
                )
    (work / "manifest.json").write_text(json.dumps(manifest))
    return 0


# ================================================================================================ the parent


def run(args: argparse.Namespace, work: Path, result: Result) -> None:
    if not os.access(syscalls.STRACE, os.X_OK):
        result.fail(f"{syscalls.STRACE} not found: run torture/setup.sh (crash states not explored)")
        return
    scenarios = chosen_scenarios(args)
    plan = {"seed": args.seed, "formats": args.formats, "scenarios": scenarios, "work": str(work)}
    (work / "plan.json").write_text(json.dumps(plan))
    trace_path = work / "trace.txt"
    started = time.monotonic()
    done = syscalls.run_traced(
        trace_path,
        [sys.executable, "-m", "torture.crash_states", "--child", str(work / "plan.json")],
        env_with_package(),
        timeout=600,
    )
    if done.returncode != 0:
        result.fail(f"the traced child failed (exit {done.returncode}): {done.stderr[-2000:]}")
        return
    windows = syscalls.parse(trace_path.read_text())
    trace_seconds = round(time.monotonic() - started, 1)
    manifest = json.loads((work / "manifest.json").read_text())
    figures: dict[str, Any] = {"trace_seconds": trace_seconds}
    totals = {"states_durable": 0, "states_fast": 0, "weak_states": 0, "failures": 0, "syscalls": 0, "lost_fast": 0}
    for entry in manifest:
        rng = random.Random(f"{args.seed}:{entry['sid']}:states")
        fig = explore(entry, windows.get(entry["sid"], []), work, rng, args.quick, result)
        figures.setdefault(entry["fmt"], {}).setdefault(entry["scenario"], {})[
            "durable" if entry["durable"] else "fast"
        ] = fig
        totals["states_durable" if entry["durable"] else "states_fast"] += fig.get("states", 0)
        totals["weak_states"] += fig.get("weak_states", 0)
        totals["failures"] += fig.get("failures", 0)
        totals["syscalls"] += fig.get("syscalls", 0)
        if not entry["durable"]:
            totals["lost_fast"] += fig.get("lost_acknowledged", 0)
        print(f"[{NAME}] {entry['sid']}: {json.dumps(fig)}", flush=True)
    figures["totals"] = totals
    result.figures = figures


def explore(
    entry: dict[str, Any], calls: list[syscalls.Call], work: Path, rng: random.Random, quick: bool, result: Result
) -> dict[str, Any]:
    """Replays one window of the trace, then builds and checks each crash state of it."""
    sid, durable = entry["sid"], entry["durable"]
    fig: dict[str, Any] = {"syscalls": len(calls), "failures": 0}

    shown: Counter[str] = Counter()

    def fail(what: str, story: str = "") -> None:
        # Every failure is counted; the first two of each kind (numbers aside) are shown, with their story.
        fig["failures"] += 1
        kind = re.sub(r"\d+", "N", what)[:120]
        shown[kind] += 1
        if shown[kind] <= 2:
            result.fail(f"{sid}: {what}" + (f" [{story}]" if story else ""))

    if entry["error"]:
        fail(f"the call itself raised {entry['error']}")
        return fig
    if not calls:
        fail("no system call recorded between the marks (was the trace cut?)")
        return fig
    base = Path(entry["root"]).parent
    before, inodes = syscalls.Tree.load(base / "before")
    replay = syscalls.Replay(entry["root"], before)
    try:
        for call in calls:
            replay.feed(call)
    except syscalls.TraceError as exc:
        fail(f"the trace could not be replayed: {exc}")
        return fig
    # The model must reproduce what the call really left; otherwise every state built from it is fiction.
    expected = syscalls.flat_folder(base / "after")
    if replay.live.flat() != expected:
        got = replay.live.flat()
        diff = sorted(k for k in set(got) | set(expected) if got.get(k, b"?") != expected.get(k, b"?"))
        fail(f"replaying the trace does not give the folder the call left (differs: {diff})")
        return fig
    # The conversations before and after, read here from the snapshots, must be the ones the child meant.
    before_path, after_path = base / "before" / entry["rel"], base / "after" / entry["rel"]
    old_fmt = unencrypted(entry["fmt"]) if entry["scenario"] == "encrypt" else entry["fmt"]
    old = quiet_load(codec(old_fmt, before_path)) if before_path.exists() else []
    new = quiet_load(codec(entry["fmt"], after_path))
    if (digest(old), digest(new)) != (entry["old"], entry["new"]):
        fail("the snapshots do not hold the conversations the child prepared")
        return fig
    identities = {tuple(v): inodes[k] for k, v in entry["before_ids"].items()}
    after_files, _ = replay.live.files()
    identities.update({tuple(v): after_files[k] for k, v in entry["after_ids"].items() if k in after_files})
    ops = replay.ops
    fig["ops"] = len(ops)
    fig["fsyncs"] = sum(1 for op in ops if op.kind == "sync")
    fig["crash_points"] = len(ops) + 1
    big = SCENARIOS[entry["scenario"]].big
    enumeration, states = syscalls.crash_states(
        before, ops, cuts_for(quick, big, durable), rng, weak=durable or not quick
    )
    outcomes: dict[str, int] = {}
    weak: dict[str, int] = {}
    weak_examples = 0  # the weak tier is outside the model: reported, with a few examples, never failed
    lost = lost_after = unreadable = 0
    scratch_root = Path(tempfile.mkdtemp(prefix="torture-state-", dir=SCRATCH if os.path.isdir(SCRATCH) else work))
    scratch = scratch_root / "s"
    try:
        for n, state in enumerate(states):
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            syscalls.materialize(state, scratch, identities)
            prep = Prepared.from_manifest(scratch, entry, old, new)
            returned = state.point == len(ops)
            verdict = check_state(prep)
            story = f"state #{n} ({state.story})"
            if state.weak:
                weak["states"] = weak.get("states", 0) + 1
                if not verdict.problems:
                    weak[verdict.outcome] = weak.get(verdict.outcome, 0) + 1
                    continue
                if verdict.foreign_error:
                    fail(f"weak state: {verdict.problems[0]}", story)
                    continue
                shutil.rmtree(scratch)  # the probe may have written to it: start again from the crash state
                scratch.mkdir()
                syscalls.materialize(state, scratch, identities)
                repaired, why = repair_state(prep)
                weak[repaired] = weak.get(repaired, 0) + 1
                if why and weak_examples < 3:
                    weak_examples += 1
                    print(
                        f"[{NAME}] weak tier (reported): {sid} {story}: {verdict.problems[0]}; then {why}", flush=True
                    )
                continue
            outcomes[verdict.outcome] = outcomes.get(verdict.outcome, 0) + 1
            if not durable and verdict.outcome == "raised" and not verdict.foreign_error:
                # durable=False: nothing was flushed, so a file may be cut inside its first frame; an encrypted one
                # then reads as a wrong key (one token without its line break is the original design's file). A
                # CodecError is the documented trade-off, reported; anything else still fails.
                unreadable += 1
                lost += 1
                continue
            for problem in verdict.problems:
                fail(problem, story)
            acknowledged = verdict.outcome in ("old", "new")
            if not durable:
                lost += not acknowledged or not verdict.torn_kept
                lost_after += returned and verdict.outcome != "new"
                continue
            if not acknowledged:
                fail(f"the conversation is neither the old one nor the new one ({verdict.outcome})", story)
            elif returned and verdict.outcome != "new":
                fail(f"the call returned (durable=True) but a power cut leaves the {verdict.outcome} one", story)
            if not verdict.torn_kept:
                fail("the torn tail the file held is nowhere (not in the file, not in a side file)", story)
    finally:
        shutil.rmtree(scratch_root, ignore_errors=True)
    fig["states"] = sum(outcomes.values())
    fig["outcomes"] = outcomes
    fig["sampled_out"] = enumeration.sampled_out
    fig["weak_states"] = weak.pop("states", 0)
    fig["weak_outcomes"] = weak
    if replay.resolved_by_path:
        fig["fds_resolved_by_path"] = replay.resolved_by_path
    if not durable:
        fig["lost_acknowledged"] = lost
        fig["lost_after_return"] = lost_after
        fig["unreadable"] = unreadable
    return fig


@dataclass
class Verdict:
    outcome: str  # "old", "new", or how it is neither (Prepared.outcome), or "raised"
    problems: list[str] = field(default_factory=list)  # what a sound recovery never does, whatever the durability
    torn_kept: bool = True  # the torn tail the folder held before the call is still somewhere
    foreign_error: bool = False  # something other than a CodecError was raised


def check_state(prep: Prepared) -> Verdict:
    """Reads the crash state as a fresh process would, then appends to it."""
    path = prep.path
    encrypted = is_encrypted(path)
    torn_kept = prep.torn_kept()
    c = reader(prep.fmt, path, prep.op)
    if prep.op.startswith("pop"):  # a pop cut short is finished by the next writer: repair() is one
        try:
            c.repair()
        except Exception as exc:
            return Verdict("raised", [f"repair() raised {type(exc).__name__}: {exc}"], torn_kept)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            got = c.load()
        except Exception as exc:
            what = f"load() raised {type(exc).__name__}: {exc}"
            return Verdict("raised", [what], torn_kept, not isinstance(exc, CodecError))
    verdict = Verdict(prep.outcome(got, encrypted), torn_kept=torn_kept)
    problems = verdict.problems
    torn_warned = any(issubclass(w.category, TornTailWarning) for w in caught)
    problems += [
        f"load() warned {w.category.__name__}: {w.message}" for w in caught if w.category is not TornTailWarning
    ]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TornTailWarning)
            if len(c) != len(got):
                problems.append(f"len() is {len(c)} but load() has {len(got)} messages")
            for last in (1, 3):
                if c.load(last=last) != got[-last:]:
                    problems.append(f"load(last={last}) is not the end of load()")
            if list(c) != got:
                problems.append("iteration does not give load()")
            report = c.verify()
        if report.errors:
            problems.append(f"verify() found damage: {report.errors[:3]}")
        if report.messages != len(got):
            problems.append(f"verify() counts {report.messages} messages, load() {len(got)}")
        if bool(report.torn_tail_bytes) != torn_warned:
            problems.append(
                f"verify() says {report.torn_tail_bytes} torn bytes, load() warned of a torn tail: {torn_warned}"
            )
        if report.index.startswith("wrong"):
            problems.append(f"the index is believed but wrong: {report.index}")
    except Exception as exc:
        problems.append(f"reading raised {type(exc).__name__}: {exc}")
        verdict.foreign_error = not isinstance(exc, CodecError)
    if problems:
        return verdict
    try:
        if prep.op == "encrypt" and path.exists() and not encrypted:
            codec(prep.fmt, path).encrypt()
        codec(prep.fmt, path).append_turn(PROBE)
    except Exception as exc:
        problems.append(f"the next append_turn raised {type(exc).__name__}: {exc}")
        verdict.foreign_error = not isinstance(exc, CodecError)
        return verdict
    if torn_kept and not prep.torn_kept():
        problems.append("the next append_turn lost the torn tail (no side file holds it)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            after = codec(prep.fmt, path).load()
            report = codec(prep.fmt, path).verify()
        except Exception as exc:
            problems.append(f"after the next append_turn, reading raised {type(exc).__name__}: {exc}")
            return verdict
    if after != [*got, PROBE]:
        problems.append(f"after the next append_turn the file holds {len(after)} messages, not {len(got) + 1}")
    if not report.ok:
        problems.append(f"after the next append_turn verify() is not ok: {report}")
    return verdict


def repair_state(prep: Prepared) -> tuple[str, str | None]:
    """A weak state that reads as damaged: repair() must give back a conversation that is the old or the new one.
    Returns the outcome and, when that fails, why."""
    try:
        c = reader(prep.fmt, prep.path, prep.op)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TornTailWarning)
            c.repair()
            got = c.load()
            report = c.verify()
    except CodecError as exc:
        return "unrepaired", f"repair() raised {type(exc).__name__}: {exc}"
    except Exception as exc:
        return "unrepaired", f"repair() raised {type(exc).__name__}: {exc}"
    outcome = prep.outcome(got, is_encrypted(prep.path))
    if outcome not in ("old", "new"):
        return "repaired-lost", f"after repair() the conversation is {outcome}"
    if not report.ok:
        return "repaired-unsound", f"after repair() verify() is not ok: {report}"
    return "repaired-" + outcome, None


if __name__ == "__main__":
    sys.exit(main())
