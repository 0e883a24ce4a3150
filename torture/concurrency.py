"""Concurrency: writer processes and threads append turns to one conversation while a saver rewrites it and readers
read it in a loop; afterwards every acknowledged turn is accounted for, exactly.

Per format and round, on one file (which starts as a saved history: marker turn 0 and a few preloaded turns):
- P writer processes each append M turns (turn i of writer w, regenerated from the seed: torture/workload.py),
  and one more process runs T writer threads (each with its own codec) doing the same, plus a reader thread;
- a saver process saves now and then: either "racy", `save(load() + marker)`, which drops any turn appended
  between its load and its save (a lost update the API allows), or "atomic", `save(chain(iter(codec), marker))`,
  whose reading happens inside the save, under the writer lock, and so drops nothing. It records what it read;
- reader processes (and the thread) call load(), len(), load(last=n) and iteration in a loop, each between two
  load()s. Any exception or warning (a TornTailWarning included: only live writers exist, and a write in progress
  is not a torn tail) is a failure. Every result must be whole, unaltered turns, each writer's in order, no turn
  twice, the save markers 0..g in order; and when both loads have the same number of markers g (no save took
  effect in between, see below), the result must be what the file held at some moment in between: a whole-turn
  prefix of the second load at least as long as the first (len(): a count of whole turns' messages of it; last=n:
  the last n messages of such a prefix).

The invariant checked at the end, and why it is exact. Writes are serialized: every append and save holds the
writer lock (an exclusive flock of the file the path names) for its whole operation, and a save renames its new
file over the path while it holds it. So the writes form one sequence, and with the saves S_1..S_K (the saver is
one process, so they come in that order) the file evolves as: C_0, the initial content; the appends serialized
after S_{i-1} add their turns to C_{i-1}, giving D_i just before S_i; S_i replaces D_i by C_i = L_i + [marker i],
where L_i is what S_i read. A load returns the whole turns of the file at one moment (that is what the readers
check), and the saver's load for S_i starts after S_{i-1} returned and ends before S_i starts, so L_i is a whole-
turn prefix of D_i: C_{i-1} followed by the first appends after S_{i-1}; for an atomic save L_i = D_i. Hence:
  1. L_i starts with C_{i-1} exactly; the rest of it, A_i, are appended turns. The final file F starts with C_K
     exactly and the rest of it, A_{K+1}, are appended turns.
  2. A_1 + ... + A_{K+1} hold every appended turn at most once, each writer's turns in increasing order (a writer
     appends one turn after the other, so the serialization keeps its order).
  3. An acknowledged turn X is in none of them if and only if a racy save S_i dropped it: X is in D_i but not in
     L_i, i.e. X's write came after S_i's load began and before S_i ended. So X is not in L_i, X's call began
     before S_i returned, and it returned after S_i's load began. A missing turn without such a save is lost.
  4. Timing bounds on the rest: X in A_i was serialized after S_{i-1} (so it returned after S_{i-1}'s load
     began) and before S_i's read (so it was called before S_i returned). Call and return times are the
     system-wide monotonic clock, read around each call.
Then P x M + T x M turns were acknowledged, and present + dropped-by-racy-saves is exactly that number (with only
atomic saves, every one of them is present). The final file is also read every way (load, len, last, iter,
verify) and must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import traceback
import warnings
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

from conversation_codec import ConversationCodec

from .common import FORMATS, ROOT, Result, env_with_package, parse, parser, workdir
from .workload import HistoryError, Shape, TurnId, Workload, duplicates, out_of_order

NAME = "concurrency"
SHAPE = Shape(multi=0.4, max_messages=5, medium=0.05, big=0.0)
MARKER = 0  # writer id of the saves' marker turns (turn i: save i; turn 0: the initial save)
PRELOAD = 1  # writer id of the turns of the initial history
PRELOADED = 20
FIRST_PROCESS_WRITER = 10  # writer ids: processes 10, 11, ...; threads 100, 101, ...
FIRST_THREAD_WRITER = 100
MAX_FAILURES = 20  # recorded per child: beyond that, only counted
TIMEOUT = 300.0  # seconds a round may take before it is called hung


@dataclass
class Round:
    processes: int  # writer processes
    threads: int  # writer threads in the one mixed process
    appends: int  # per writer
    readers: int  # reader processes (the mixed process has one reader thread more)
    min_saves: int
    save_gap: float  # seconds, at most, between two saves
    append_gap: float  # seconds, at most, between two appends of a writer
    durable: bool
    racy: float  # the share of racy saves; with none, every acknowledged turn must be in the final file


QUICK = [Round(3, 2, 25, 1, 3, 0.05, 0.002, True, 0.25)]
FULL = [
    Round(4, 2, 150, 2, 5, 0.1, 0.002, True, 0.3),
    Round(6, 2, 100, 2, 5, 0.02, 0.002, False, 0.0),
]


# ============================================================================================== the children


class Child:
    """What every child process shares: its spec, its workload, its record of failures."""

    def __init__(self, spec: dict[str, Any], ident: int) -> None:
        self.spec = spec
        self.ident = ident
        self.path = spec["path"]
        self.options = FORMATS[spec["format"]]
        self.workload = Workload(spec["seed"], SHAPE)
        self.failures: list[str] = []
        self.failure_count = 0
        self.lock = threading.Lock()

    def codec(self, durable: bool = True) -> ConversationCodec:
        return ConversationCodec(self.path, **self.options, durable=durable)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failure_count += 1
            if len(self.failures) < MAX_FAILURES:
                self.failures.append(what)

    def stopped(self) -> bool:
        return os.path.exists(self.spec["stop"])


def _writer(child: Child, writer: int, rng: Random, out: dict[str, Any]) -> None:
    """Appends the writer's turns one after the other; records (turn, called, returned) for each acknowledged."""
    spec = child.spec
    codec = child.codec(durable=spec["durable"])
    acks: list[tuple[int, int, int]] = out.setdefault("acks", {}).setdefault(str(writer), [])
    for t in range(spec["appends"]):
        messages = child.workload.turn(writer, t)
        turn: Any = messages[0] if len(messages) == 1 and rng.random() < 0.5 else messages
        called = time.monotonic_ns()
        try:
            codec.append_turn(turn)
        except Exception as exc:
            child.fail(f"writer {writer}: append of turn {t} raised {type(exc).__name__}: {exc}")
            return
        acks.append((t, called, time.monotonic_ns()))
        if spec["append_gap"]:
            time.sleep(rng.uniform(0, spec["append_gap"]))


class Reader:
    """Reads in a loop until told to stop, checking every result (see the module's docstring)."""

    def __init__(self, child: Child, name: str, rng: Random) -> None:
        self.child = child
        self.name = name
        self.rng = rng
        self.codec = child.codec()
        self.ops = 0
        self.exact = 0  # results checked against the two loads around them (no save in between)
        self.across_saves = 0  # results with a save in between: checked for whole turns only

    def run(self) -> None:
        while not self.child.stopped():
            try:
                self.once()
            except Exception as exc:
                self.child.fail(f"{self.name}: {type(exc).__name__}: {exc} ({traceback.format_exc(limit=3)!r})")

    def once(self) -> None:
        workload, codec = self.child.workload, self.codec
        op = self.rng.choice(["load", "len", "last", "iter"])
        before = self.snapshot(codec.load(), "load")
        n = self.rng.randint(1, 40)
        if op == "len":
            result: Any = len(codec)
        elif op == "last":
            result = codec.load(last=n)
        elif op == "iter":
            result = list(codec.iter())
        else:
            result = codec.load()
        after = self.snapshot(codec.load(), "load")
        self.ops += 3
        if op in ("load", "iter"):
            self.snapshot(result, op)
        elif op == "last":
            try:
                workload.parse(result, head_cut=True)
            except HistoryError as exc:
                self.child.fail(f"{self.name}: load(last={n}): {exc}")
                return
        if before is None or after is None:
            return
        (a, _, a_gen), (b, b_turns, b_gen) = before, after
        if a_gen != b_gen:
            self.across_saves += 1
            return
        self.exact += 1
        if b[: len(a)] != a:
            self.child.fail(
                f"{self.name}: with no save in between, a load of {len(a)} messages is not the start of "
                f"the next one ({len(b)} messages)"
            )
            return
        cuts = workload.counts(b_turns)
        cuts = cuts[bisect_left(cuts, len(a)) :]
        if op == "len":
            if result not in cuts:
                self.child.fail(
                    f"{self.name}: len() = {result}, not the message count of whole turns between two "
                    f"loads of {len(a)} and {len(b)} messages (counts {cuts[:8]})"
                )
        elif op == "last":
            if not any(b[max(0, cut - n) : cut] == result for cut in cuts):
                self.child.fail(
                    f"{self.name}: load(last={n}) is not the end of the file at any moment between two "
                    f"loads of {len(a)} and {len(b)} messages"
                )
        elif len(result) not in cuts or b[: len(result)] != result:
            self.child.fail(
                f"{self.name}: {op} of {len(result)} messages is not the file at any moment between two "
                f"loads of {len(a)} and {len(b)} messages"
            )

    def snapshot(self, messages: list[Any], op: str) -> tuple[list[Any], list[TurnId], int] | None:
        """The messages, their turns and their save generation (the number of markers), once checked whole."""
        try:
            turns = self.child.workload.parse(messages)
        except HistoryError as exc:
            self.child.fail(f"{self.name}: {op}: {exc}")
            return None
        problems = check_turns(turns)
        if problems:
            self.child.fail(f"{self.name}: {op}: {problems}")
            return None
        return messages, turns, sum(w == MARKER for w, _ in turns)


def check_turns(turns: list[TurnId]) -> str:
    """What is wrong with a history of this suite ('' when nothing): duplicates, writers out of order, markers
    that are not 0, 1, 2... in order."""
    twice = duplicates(turns)
    if twice:
        return f"turns seen twice: {twice[:5]}"
    disorder = out_of_order(turns)
    if disorder:
        return f"out of order: {disorder[:3]}"
    markers = [t for w, t in turns if w == MARKER]
    if markers != list(range(len(markers))):
        return f"save markers {markers[:10]}, not 0, 1, 2..."
    return ""


def _saver(child: Child, rng: Random, out: dict[str, Any]) -> None:
    """Saves now and then until told to stop (and at least `min_saves` times): racy or atomic, at random."""
    spec = child.spec
    codec = child.codec(durable=spec["durable"])
    saves: list[dict[str, Any]] = out.setdefault("saves", [])
    number = 1
    while number <= spec["min_saves"] or not child.stopped():
        time.sleep(rng.uniform(0, spec["save_gap"]))
        marker = child.workload.turn(MARKER, number)
        kind = "racy" if rng.random() < spec["racy"] else "atomic"
        started = time.monotonic_ns()
        try:
            if kind == "racy":
                seen = codec.load()
                codec.save(seen + marker)
            else:
                seen = []
                codec.save(_read_inside(codec, seen, marker))
        except Exception as exc:
            child.fail(f"saver: {kind} save {number} raised {type(exc).__name__}: {exc}")
            return
        ended = time.monotonic_ns()
        try:
            loaded = child.workload.parse(seen)
        except HistoryError as exc:
            child.fail(f"saver: save {number} read {exc}")
            return
        saves.append({"number": number, "kind": kind, "loaded": loaded, "started": started, "ended": ended})
        number += 1


def _read_inside(codec: ConversationCodec, seen: list[Any], marker: list[Any]) -> Iterator[Any]:
    """The conversation then the marker, for save(): the reading starts when save() takes its first message,
    under the writer lock, so no append can come between the reading and the saving."""
    for message in codec.iter():
        seen.append(message)
        yield message
    yield from marker


def child_main(args: argparse.Namespace) -> int:
    """A child process: `--child writer|mixed|saver|reader --spec FILE --id N`. Says "ready", waits for "go" on
    stdin, works, writes its record to `<folder>/<role>-<id>.json`."""
    spec = json.loads(Path(args.spec).read_text())
    warnings.simplefilter("error")  # any warning a reader (or writer) sees is a failure, raised where it happens
    child = Child(spec, args.id)
    rng = Random(f"{spec['seed']}:{args.child}:{args.id}")
    out: dict[str, Any] = {"role": args.child, "id": args.id}
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 2
    try:
        if args.child == "writer":
            _writer(child, args.id, rng, out)
        elif args.child == "saver":
            _saver(child, rng, out)
        elif args.child == "reader":
            reader = Reader(child, f"reader process {args.id}", rng)
            reader.run()
            out["reads"] = [reader.ops, reader.exact, reader.across_saves]
        elif args.child == "mixed":
            reader = Reader(child, "reader thread", Random(f"{spec['seed']}:reader-thread"))
            writers = [
                threading.Thread(target=_writer, args=(child, writer, Random(f"{spec['seed']}:thread:{writer}"), out))
                for writer in range(FIRST_THREAD_WRITER, FIRST_THREAD_WRITER + spec["threads"])
            ]
            reading = threading.Thread(target=reader.run)
            for thread in [*writers, reading]:
                thread.start()
            for thread in writers:
                thread.join()
            print("writers done", flush=True)
            reading.join()
            out["reads"] = [reader.ops, reader.exact, reader.across_saves]
    except Exception as exc:
        child.fail(f"{args.child} {args.id}: {type(exc).__name__}: {exc} ({traceback.format_exc(limit=5)!r})")
    out["failures"] = child.failures
    out["failure_count"] = child.failure_count
    Path(spec["folder"], f"{args.child}-{args.id}.json").write_text(json.dumps(out))
    return 0


# ============================================================================================== the parent


@dataclass
class Figures:
    rounds: int = 0
    processes: int = 0
    threads: int = 0
    turns_acked: int = 0
    turns_present: int = 0
    dropped_by_racy_saves: int = 0
    saves_racy: int = 0
    saves_atomic: int = 0
    reader_ops: int = 0
    reads_checked_exactly: int = 0
    reads_across_saves: int = 0
    turns_lost: int = 0
    failures: int = 0
    seconds: float = 0.0
    per_round: list[dict[str, Any]] = field(default_factory=list)  # acknowledged, present, dropped, racy share


class RoundRun:
    """One round of one format: start the children, let them race, then account for every turn."""

    def __init__(
        self,
        args: argparse.Namespace,
        result: Result,
        fmt: str,
        folder: Path,
        number: int,
        plan: Round,
        figures: Figures,
    ) -> None:
        self.result = result
        self.fmt = fmt
        self.plan = plan
        self.figures = figures
        self.where = f"{fmt}, round {number}"
        folder.mkdir(parents=True)
        self.folder = folder
        self.path = folder / "conversation.jsonl"
        self.seed = f"{args.seed}:{fmt}:{number}"
        self.workload = Workload(self.seed, SHAPE)
        self.spec = {
            "path": str(self.path),
            "format": fmt,
            "seed": self.seed,
            "folder": str(folder),
            "stop": str(folder / "stop"),
            "appends": plan.appends,
            "threads": plan.threads,
            "min_saves": plan.min_saves,
            "save_gap": plan.save_gap,
            "append_gap": plan.append_gap,
            "durable": plan.durable,
            "racy": plan.racy,
        }

    def fail(self, what: str) -> None:
        self.figures.failures += 1
        self.result.fail(f"{self.where}: {what}")

    def run(self) -> None:
        initial = [(MARKER, 0)] + [(PRELOAD, t) for t in range(PRELOADED)]
        ConversationCodec(self.path, **FORMATS[self.fmt]).save(self.workload.messages(initial))
        spec_file = self.folder / "spec.json"
        spec_file.write_text(json.dumps(self.spec))
        plan = self.plan
        roles = [("writer", FIRST_PROCESS_WRITER + i) for i in range(plan.processes)]
        roles += [("mixed", 0), ("saver", 0)] + [("reader", i) for i in range(plan.readers)]
        children: dict[tuple[str, int], subprocess.Popen[str]] = {}
        deadline = time.monotonic() + TIMEOUT
        try:
            for role, ident in roles:
                children[role, ident] = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        f"torture.{NAME}",
                        "--child",
                        role,
                        "--spec",
                        str(spec_file),
                        "--id",
                        str(ident),
                    ],
                    cwd=ROOT,
                    env=env_with_package(),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=open(self.folder / f"{role}-{ident}.stderr", "w"),  # noqa: SIM115 (the child owns it)
                    text=True,
                )
            for key, proc in children.items():
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "ready":
                    self.fail(f"{key[0]} {key[1]} did not start: {self._stderr(*key)}")
                    return
            for proc in children.values():
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            for (role, _), proc in children.items():
                if role == "writer":
                    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            mixed = children["mixed", 0]
            assert mixed.stdout is not None
            if mixed.stdout.readline().strip() != "writers done":
                self.fail(f"the writer threads did not finish: {self._stderr('mixed', 0)}")
            Path(str(self.spec["stop"])).touch()
            for proc in children.values():
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.fail(f"hung: not done after {TIMEOUT} s")
            return
        finally:
            for proc in children.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                for stream in (proc.stdin, proc.stdout):
                    if stream is not None:
                        stream.close()
        records = {}
        for (role, ident), proc in children.items():
            record_file = self.folder / f"{role}-{ident}.json"
            if proc.returncode != 0 or not record_file.exists():
                self.fail(f"{role} {ident} exited with {proc.returncode}: {self._stderr(role, ident)}")
                return
            records[role, ident] = json.loads(record_file.read_text())
        self.figures.rounds += 1
        self.figures.processes += len(children)
        self.figures.threads += plan.threads + 1
        for (role, ident), record in records.items():
            for failure in record["failures"]:
                self.fail(f"{role} {ident}: {failure}")
            if record["failure_count"] > len(record["failures"]):
                self.fail(f"{role} {ident}: {record['failure_count'] - len(record['failures'])} failures more")
            ops, exact, across = record.get("reads", (0, 0, 0))
            self.figures.reader_ops += ops
            self.figures.reads_checked_exactly += exact
            self.figures.reads_across_saves += across
        acks: dict[TurnId, tuple[int, int]] = {}
        for record in records.values():
            for writer, turns in record.get("acks", {}).items():
                for t, called, returned in turns:
                    acks[int(writer), t] = (called, returned)
        self.account(initial, records["saver", 0]["saves"], acks)

    def _stderr(self, role: str, ident: int) -> str:
        text = (self.folder / f"{role}-{ident}.stderr").read_text()
        return text[-1500:] or "(no output)"

    def account(self, initial: list[TurnId], saves: list[dict[str, Any]], acks: dict[TurnId, tuple[int, int]]) -> None:
        """The invariant of the module's docstring, on the final file."""
        plan = self.plan
        expected = (plan.processes + plan.threads) * plan.appends
        self.figures.turns_acked += len(acks)
        if len(acks) != expected:
            self.fail(
                f"{len(acks)} turns acknowledged, not {plan.processes} x {plan.appends} + "
                f"{plan.threads} x {plan.appends} = {expected}"
            )
        final = self.final_turns()
        if final is None:
            return
        appended: list[TurnId] = []  # A_1 + ... + A_{K+1}
        position: dict[TurnId, int] = {}  # X -> i when X is in A_i
        previous = initial
        for i, save in enumerate(saves, 1):
            self.figures.saves_racy += save["kind"] == "racy"
            self.figures.saves_atomic += save["kind"] == "atomic"
            loaded = [tuple(x) for x in save["loaded"]]
            if save["number"] != i or loaded[: len(previous)] != previous:
                self.fail(
                    f"save {i} ({save['kind']}) read a history that does not start with what save {i - 1} "
                    f"wrote ({len(loaded)} turns; {len(previous)} expected first)"
                )
                return
            for turn in loaded[len(previous) :]:
                appended.append(turn)
                position[turn] = i
            previous = [*loaded, (MARKER, i)]
        if final[: len(previous)] != previous:
            self.fail(f"the final file does not start with what the last save wrote ({len(previous)} turns)")
            return
        for turn in final[len(previous) :]:
            appended.append(turn)
            position[turn] = len(saves) + 1
        problems = check_turns(appended)
        foreign = [x for x in appended if x not in acks]
        if problems or foreign:
            self.fail(f"the appended turns, save after save: {problems or ''} unacknowledged or foreign {foreign[:5]}")
            return
        self.figures.turns_present += len(appended)
        dropped_before = self.figures.dropped_by_racy_saves
        last_return = max((returned for _, returned in acks.values()), default=0)
        started = [s["started"] for s in saves]
        ended = [s["ended"] for s in saves]
        loaded_sets = [set(map(tuple, s["loaded"])) for s in saves]
        for turn, (called, returned) in sorted(acks.items()):
            # Saves that took effect before X was called end before it; saves whose read began after X returned.
            earliest = bisect_right(ended, called) + 1  # X is serialized after saves 1..earliest-1
            latest = bisect_left(started, returned) + 1  # X is serialized before saves latest.. (1-based)
            if turn in position:
                i = position[turn]
                if not earliest <= i <= latest:
                    self.fail(
                        f"turn {turn} is in the part of save {i}, but its call ({called}..{returned}) puts it "
                        f"between saves {earliest - 1} and {latest}"
                    )
                continue
            droppers = [
                i
                for i in range(max(earliest, 1), min(latest, len(saves)) + 1)
                if saves[i - 1]["kind"] == "racy"
                and turn not in loaded_sets[i - 1]
                and called < ended[i - 1]
                and returned > started[i - 1]
            ]
            if droppers:
                self.figures.dropped_by_racy_saves += 1
            else:
                self.figures.turns_lost += 1
                self.fail(
                    f"turn {turn}, acknowledged ({called}..{returned}), is missing and no racy save can have "
                    f"dropped it (saves {earliest}..{latest})"
                )
        self.figures.per_round.append(
            {
                "racy_share": plan.racy,
                "saves": len(saves),
                "saves_racing_appends": sum(save["started"] < last_return for save in saves),
                "acknowledged": len(acks),
                "present": len(appended),
                "dropped_by_racy_saves": self.figures.dropped_by_racy_saves - dropped_before,
            }
        )

    def final_turns(self) -> list[TurnId] | None:
        """The final file's turns, once load, len, last, iter and verify agree on it without a warning."""
        codec = ConversationCodec(self.path, **FORMATS[self.fmt])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loaded = codec.load()
            length, iterated, tail, report = len(codec), list(codec.iter()), codec.load(last=7), codec.verify()
        if caught:
            self.fail(f"reading the final file warned: {[str(w.message) for w in caught]}")
        if iterated != loaded or length != len(loaded) or tail != loaded[-7:]:
            self.fail(f"the final file reads differently: load {len(loaded)}, len {length}, iter {len(iterated)}")
        if not report.ok or report.messages != len(loaded):
            self.fail(f"verify() of the final file: {report}")
        try:
            turns = self.workload.parse(loaded)
        except HistoryError as exc:
            self.fail(f"the final file: {exc}")
            return None
        problems = check_turns(turns)
        if problems:
            self.fail(f"the final file: {problems}")
            return None
        return turns


def main(argv: list[str] | None = None) -> int:
    p = parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--id", type=int, default=0, help=argparse.SUPPRESS)
    args = parse(p, argv)
    if args.child:
        return child_main(args)
    result = Result(NAME, args)
    with workdir(args, NAME) as root:
        for fmt in args.formats:
            figures = Figures()
            start = time.monotonic()
            for number, plan in enumerate(QUICK if args.quick else FULL, 1):
                RoundRun(args, result, fmt, root / f"{fmt.replace('+', '-')}-{number}", number, plan, figures).run()
            figures.seconds = round(time.monotonic() - start, 1)
            result.figures[fmt] = vars(figures)
            print(
                f"[{NAME}] {fmt}: {figures.processes} processes, {figures.threads} threads, "
                f"{figures.turns_acked} turns acknowledged ({figures.turns_present} present, "
                f"{figures.dropped_by_racy_saves} dropped by racy saves, {figures.turns_lost} lost), "
                f"{figures.saves_racy} racy + {figures.saves_atomic} atomic saves, {figures.reader_ops} reader "
                f"operations ({figures.reads_checked_exactly} checked exactly), {figures.failures} failures, "
                f"in {figures.seconds} s",
                flush=True,
            )
        if result.failures:
            args.keep = True  # the files of a failure are the evidence: keep them (the folder is printed)
    return result.finish()


if __name__ == "__main__":
    sys.exit(main())
