"""Kill: a writer process appends turns and saves, acknowledging each call on a pipe after it returns, and is
SIGKILLed at random moments, thousands of times; after every kill the file must hold exactly what was acknowledged.

Each format runs `--kills` cycles on one file, which carries over from cycle to cycle. A cycle forks a writer (the
parent has imported the codec and holds no lock, so a child is writing within a millisecond, where a fresh
interpreter takes ~0.3 s: that is what makes thousands of kills fit in minutes). The writer announces each call on
the pipe before making it (`A <turn> ...` for an append, `S ...` for a save of the acknowledged history, or its
last part when it has grown past a budget, plus new turns) and writes `ok` once the call has returned. The
parent kills it: after a random delay, or a random time into its k-th call (its duration estimated from earlier
ones), preferring saves of the whole history and big appends, so that kills land inside writes and flushes.

A SIGKILL cuts a write only between two page-cache folios, and on a recent kernel (large folios) a write of even
half a megabyte is often one or two of them: SIGKILLs alone leave a torn tail a few times in a thousand. So in a
quarter of the cycles ("cut"), the writer dies inside a write at a byte drawn from the seed instead: before its
k-th call it waits for the parent, which lowers the writer's file size limit (RLIMIT_FSIZE, by prlimit) to that
byte of the frame (or of a save's temporary file); the write stops there and the writer's next write kills it
(SIGXFSZ, whose default action the writer restores). Its file is then exactly what a process dying at that byte
leaves.

After each kill the parent checks, with fresh codecs, that:
- the file is the acknowledged history, or (when a call was in flight) the history that call would make: an
  unacknowledged append may be there, whole and once, at the end; an unacknowledged save wholly or not at all.
  Every message is regenerated from the seed and compared (torture/workload.py): no partial turn, no altered one;
- load(), len(), iteration, load(last=n) and verify() agree, and they all see a torn tail or none; nothing else
  warns or raises; verify() finds no error and no wrong index; the file stays 0600;
- a torn tail (counted) only follows an append in flight, and its bytes are a prefix of that turn's frame (plain,
  gzip; encrypted: of a token line). Half the time the parent then appends a turn itself: it must work, move
  exactly those bytes to `<name>.torn-<offset>`, keep the bytes before them, and leave a sound file. Otherwise the
  torn tail is left to the next writers (which may be killed while they set it aside): once it is gone from the
  file, a side file must hold it whole, and side files named after it hold nothing but a prefix of it. No other
  file may appear beside the conversation but its index and the temporary file of a killed save or index write.
"""

from __future__ import annotations

import os
import re
import resource
import select
import signal
import stat
import sys
import time
import traceback
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any, Callable

from conversation_codec import ConversationCodec, TornTailWarning

from .common import FORMATS, Result, parse, parser, workdir
from .workload import HistoryError, Shape, TurnId, Workload, describe, duplicates

NAME = "kill"
SHAPE = Shape(multi=0.4, max_messages=5, medium=0.15, big=0.05)
SAVE_CHANCE = 0.1  # of a writer's calls
DURABLE_CHANCE = 0.75  # the default, durable=True; else a run without fsyncs
SILENCE = 60.0  # seconds without a word from a writer that is supposed to be writing: it hangs
BIG = 50_000  # JSONL bytes from which an append is big (worth aiming a kill at)
CUTS = hasattr(resource, "prlimit")  # Linux: cut writes at a chosen byte (see the module's docstring)
LEAVE_TORN_CHANCE = 0.5  # a torn tail is left to the next writers (else the parent appends at once)
REPAIR_WRITER = 0  # the parent's own turns (after a torn tail) are turns of writer 0; writer runs are 1, 2, ...
_BASE64URL = re.compile(rb"[A-Za-z0-9_=-]*")
_TOKEN_START = b"gAAAA"  # base64url of a token's version byte 0x80 and its timestamp's leading zeros


@dataclass
class Settings:
    kills: int
    budget: int  # JSONL bytes of history beyond which a save keeps only the newer part
    max_wait_calls: int  # calls a cycle waits for a save or a big append before it kills anyway


@dataclass
class Figures:
    kills: int = 0
    cuts: int = 0  # writers that died inside a write at a chosen byte (SIGXFSZ)
    kills_in_call: int = 0
    turns_acked: int = 0
    saves_acked: int = 0
    unacked_turns_landed: int = 0
    unacked_saves_landed: int = 0
    turns_lost: int = 0
    duplicates: int = 0
    partial_turns: int = 0
    torn_tails: int = 0
    set_aside: int = 0
    set_aside_by_writers: int = 0  # of those, torn tails left to the writers (the others: the parent's append)
    partial_side_files: int = 0  # side files that a writer died writing (the next one wrote a whole one)
    tmp_left: int = 0
    idx_tmp_left: int = 0
    non_durable_runs: int = 0
    max_history_bytes: int = 0
    seconds: float = 0.0


class Abort(Exception):
    """A violation after which the file no longer matches any model: the format's run stops there."""


# ------------------------------------------------------------------------------------------------ the writer


def _writer(
    wfd: int,
    go: int,
    path: Path,
    options: dict[str, Any],
    durable: bool,
    run: int,
    seed: str,
    history: list[TurnId],
    workload: Workload,
    budget: int,
) -> None:
    """The child: appends and saves until killed, announcing each call before it and acknowledging it after.
    With a `go` pipe, it waits for a byte on it before each call (the parent may lower its file size limit).

    Its lines: `A <turn> <messages> <JSONL bytes> <file size before>` (an append of turn (run, turn)),
    `S <first new turn> <new turns> <turns kept> <digest of the content> <JSONL bytes>` (a save of the last kept
    turns of its history and the new ones), `ok <nanoseconds the call took>`, `E <traceback>`."""

    def say(line: str) -> None:
        os.write(wfd, (line + "\n").encode())

    def wait() -> None:
        if go >= 0:
            os.read(go, 1)

    try:
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it: a write past the limit then kills
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        codec = ConversationCodec(path, **options, durable=durable)
        rng = Random(f"{seed}:{run}:writer")
        t = 0
        held = sum(workload.size(*turn) for turn in history)
        while True:
            if rng.random() < (SAVE_CHANCE if held <= budget else 0.5):
                new = [(run, t + i) for i in range(rng.randint(1, 3))]
                keep = _keep(workload, history, budget)
                content = history[len(history) - keep :] + new
                size = sum(workload.size(*turn) for turn in content)
                say(f"S {t} {len(new)} {keep} {_digest(content)} {size}")
                wait()
                t += len(new)
                start = time.monotonic_ns()
                codec.save(iter(workload.messages(content)))
                say(f"ok {time.monotonic_ns() - start}")
                history, held = content, size
            else:
                messages = workload.turn(run, t)
                size = os.stat(path).st_size if os.path.exists(path) else 0
                say(f"A {t} {len(messages)} {workload.size(run, t)} {size}")
                wait()
                start = time.monotonic_ns()
                codec.append_turn(messages[0] if len(messages) == 1 and rng.random() < 0.5 else messages)
                say(f"ok {time.monotonic_ns() - start}")
                history.append((run, t))
                held += workload.size(run, t)
                t += 1
    except BaseException:
        say("E " + traceback.format_exc().replace("\n", " | "))
    finally:
        os._exit(3)


def _keep(workload: Workload, history: list[TurnId], budget: int) -> int:
    """How many of the last turns a save keeps: all of them, unless they pass the budget (then half of it)."""
    sizes = [workload.size(w, t) for w, t in history]
    if sum(sizes) <= budget:
        return len(history)
    total, keep = 0, 0
    for size in reversed(sizes):
        if total + size > budget // 2:
            break
        total += size
        keep += 1
    return keep


def _pause(seconds: float) -> None:
    """Waits `seconds` (at most 0.2); short waits spin, since a sleep overshoots by more than the write it is aimed
    at."""
    seconds = min(seconds, 0.2)
    if seconds > 0.002:
        time.sleep(seconds)
        return
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _digest(turns: list[TurnId]) -> str:
    return f"{zlib.crc32(repr(turns).encode()):08x}"


class Lines:
    """The lines a writer sends on its pipe (each written by one `write` of less than PIPE_BUF: never torn)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.eof = False

    def next(self, timeout: float) -> str | None:
        """The next line; None at the end (the writer is dead); TimeoutError after `timeout` seconds of silence."""
        while b"\n" not in self.buffer:
            if self.eof:
                return None
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if not ready:
                raise TimeoutError(f"no word from the writer for {timeout} s")
            data = os.read(self.fd, 1 << 16)
            if data:
                self.buffer += data
            else:
                self.eof = True
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


# ------------------------------------------------------------------------------------------------ the parent


@dataclass
class Pending:
    """The call a writer had announced but not acknowledged when it was killed."""

    kind: str  # "A" or "S"
    turn: TurnId | None = None  # an append's turn
    content: list[TurnId] = field(default_factory=list)  # a save's content


@dataclass
class Reads:
    """What fresh codecs read from the file after a kill."""

    loaded: list[Any]
    length: int
    iterated: list[Any]
    last: int
    tail: list[Any]
    torn_warnings: dict[str, int]
    report: Any


class KillRun:
    """The cycles of one format on one file."""

    def __init__(self, args: Any, result: Result, fmt: str, folder: Path, settings: Settings) -> None:
        self.args = args
        self.result = result
        self.fmt = fmt
        self.options = FORMATS[fmt]
        folder.mkdir(parents=True)
        self.folder = folder
        self.path = folder / "conversation.jsonl"
        self.settings = settings
        self.seed = f"{args.seed}:{fmt}"
        self.rng = Random(f"{self.seed}:parent")  # replaced by each cycle's own
        self.workload = Workload(self.seed, SHAPE)
        self.history: list[TurnId] = []
        self.side_files: set[str] = set()  # the side files checked so far
        self.leftover: tuple[int, bytes] | None = None  # a torn tail (offset, bytes) left to the writers
        self.figures = Figures()
        # How long a call takes, estimated from the acknowledged ones (moving averages): seconds for a call of up
        # to BIG bytes, seconds per JSONL byte beyond (a flush costs the same for 1 KB or 1 MB).
        self.estimate = {("A", False): 5e-4, ("A", True): 5e-9, ("S", False): 5e-3, ("S", True): 5e-8}

    def run(self) -> Figures:
        start = time.monotonic()
        try:
            for cycle in range(1, self.settings.kills + 1):
                self.cycle(cycle)
                if cycle % 50 == 0:
                    self.workload.forget(self.history)
            self.finish(self.settings.kills + 1)
        except Abort:
            pass
        self.figures.seconds = round(time.monotonic() - start, 1)
        return self.figures

    def finish(self, cycle: int) -> None:
        """A last append by the parent: it sets aside a torn tail still left to the writers; the file is sound."""
        what = "the last append, after the last kill"
        turn = (REPAIR_WRITER, cycle)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ConversationCodec(self.path, **self.options).append_turn(self.workload.turn(*turn))
        if caught:
            raise self.fail(cycle, f"{what} warned: {[str(w.message) for w in caught]}")
        if self.leftover is not None:
            self._set_aside_by_writer(cycle, what)
        turns, torn = self._consistent(cycle, self._read(cycle, what), what)
        if torn or turns != [*self.history, turn]:
            raise self.fail(cycle, f"{what}: torn {torn}; {describe([*self.history, turn], turns)}")
        self._side_files(cycle, what)

    def fail(self, cycle: int, what: str) -> Abort:
        self.result.fail(f"{self.fmt}, cycle {cycle}: {what}")
        return Abort(what)

    # ---- one cycle: fork a writer, kill it, check the file ------------------------------------------------

    def cycle(self, cycle: int) -> None:
        # Each cycle draws from its own stream: a replay makes the same choices in every cycle, however the
        # timing of earlier ones fell out.
        rng = self.rng = Random(f"{self.seed}:parent:{cycle}")
        durable = rng.random() < DURABLE_CHANCE
        self.figures.non_durable_runs += not durable
        mode = rng.choices(["time", "call", "save", "big", "cut"], weights=[25, 20, 20, 10, 25 if CUTS else 0])[0]
        target = rng.randrange(6)
        fraction = rng.random()
        delay = rng.uniform(0.0, 0.04)
        plan = f"mode {mode}, call {target}, fraction {fraction:.3f}, delay {delay:.4f}, durable {durable}"

        rfd, wfd = os.pipe()
        go_r, go_w = os.pipe() if mode == "cut" else (-1, -1)
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(rfd)
            if go_w >= 0:
                os.close(go_w)
            _writer(
                wfd,
                go_r,
                self.path,
                self.options,
                durable,
                cycle,
                self.seed,
                list(self.history),
                self.workload,
                self.settings.budget,
            )
        os.close(wfd)
        if go_r >= 0:
            os.close(go_r)
        lines = Lines(rfd)
        got: list[str] = []
        try:
            if mode == "time":
                time.sleep(delay)
            elif mode == "cut":
                self._cut(lines, got, pid, target, fraction, go_w)
                go_w = -1
            else:
                self._wait_for_target(lines, got, mode, target, fraction)
        except TimeoutError as exc:
            raise self.fail(cycle, f"{exc} ({plan})") from None
        finally:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            try:
                while (line := lines.next(SILENCE)) is not None:
                    got.append(line)
            finally:
                os.close(rfd)
                if go_w >= 0:
                    os.close(go_w)
        signalled = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        if signalled == signal.SIGKILL:
            self.figures.kills += 1
        elif signalled == signal.SIGXFSZ and mode == "cut":
            self.figures.cuts += 1
        else:
            raise self.fail(cycle, f"the writer died by itself ({status:#x}): {got[-1:]} ({plan})")
        pending = self._replay(cycle, got, plan)
        self._check(cycle, pending, plan)

    def _wait_for_target(self, lines: Lines, got: list[str], mode: str, target: int, fraction: float) -> None:
        """Reads the writer's lines until the call to kill in is announced, then waits part of its duration."""
        calls = 0
        while True:
            line = lines.next(SILENCE)
            if line is None:
                return
            got.append(line)
            if line[0] not in "AS":
                continue
            calls += 1
            if calls <= target:
                continue
            kind, fields = line[0], line.split()
            size = int(fields[3] if kind == "A" else fields[5])
            if (
                mode == "call"
                or (mode == "save" and kind == "S")
                or (mode == "big" and kind == "A" and size > BIG)
                or calls > target + self.settings.max_wait_calls
            ):
                _pause(fraction * 1.3 * self._duration(kind, size))
                return

    def _cut(self, lines: Lines, got: list[str], pid: int, target: int, fraction: float, go: int) -> None:
        """Makes the writer die inside the write of its call number `target`, after a chosen part of the frame
        (or of a save's temporary file): it waits for a byte on `go` before each call, and before the chosen one
        the parent lowers its file size limit (RLIMIT_FSIZE) to that point. The write is cut there and the next
        one kills the writer (SIGXFSZ). A SIGKILL cuts a write only between two page-cache folios, which on a
        recent kernel (large folios) may be never: this puts the cut at any byte, as a power cut would. With a
        torn tail left in the file, the cut falls in the side file that the first call writes it to."""
        calls = 0
        try:
            while True:
                line = lines.next(SILENCE)
                if line is None:
                    return
                got.append(line)
                if line[0] not in "AS":
                    continue
                calls += 1
                if calls > target or self.leftover is not None:
                    fields = line.split()
                    if self.leftover is not None:  # the first call sets the torn tail aside: cut that side file
                        limit = int(fraction * len(self.leftover[1]))
                    elif line[0] == "A":
                        limit = int(fields[4]) + int(fraction * self._stored(int(fields[3])))
                    else:
                        limit = int(fraction * self._stored(int(fields[5])))
                    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
                    os.write(go, b"g")
                    break
                os.write(go, b"g")
        finally:
            os.close(go)  # the writer goes on without waiting: it dies at its first write past the limit
        while (line := lines.next(SILENCE)) is not None:
            got.append(line)  # the chosen call may have ended below the limit: the calls after it count too

    def _stored(self, jsonl: int) -> int:
        """About how many bytes `jsonl` bytes of JSONL take as stored in this format (a cut within them falls
        inside the frame; one past them, just after it)."""
        size = jsonl
        if self.options.get("compressed"):
            size = size * 4 // 5 + 40  # base64 text compresses to about 3/4
        if "fernet_key" in self.options:
            size = (size + 32) * 4 // 3 + 90
        return size

    def _duration(self, kind: str, size: int) -> float:
        small = self.estimate[kind, False]
        return small if size <= BIG else max(small, self.estimate[kind, True] * size)

    def _learn(self, kind: str, size: int, seconds: float) -> None:
        key = (kind, size > BIG)
        self.estimate[key] = 0.8 * self.estimate[key] + 0.2 * (seconds / size if size > BIG else seconds)

    def _replay(self, cycle: int, got: list[str], plan: str) -> Pending | None:
        """Applies the acknowledged calls to the model of the file; returns the call in flight, if any."""
        history = self.history
        announced: str | None = None
        for line in got:
            fields = line.split()
            if line.startswith("E "):
                raise self.fail(cycle, f"the writer raised: {line[2:]} ({plan})")
            if fields[0] == "ok":
                if announced is None:
                    raise self.fail(cycle, f"harness: an ok without a call ({got})")
                kind, call = self._call(cycle, announced, history)
                seconds = int(fields[1]) / 1e9
                if kind == "A":
                    assert isinstance(call, tuple)
                    history.append(call)
                    self.figures.turns_acked += 1
                    size = int(announced.split()[3])
                else:
                    assert isinstance(call, list)
                    history[:] = call
                    self.figures.saves_acked += 1
                    self.figures.turns_acked += int(announced.split()[2])
                    size = int(announced.split()[5])
                self._learn(kind, size, seconds)
                announced = None
            elif fields[0] in ("A", "S") and announced is None:
                announced = line
            else:
                raise self.fail(cycle, f"harness: unexpected line {line!r} after {announced!r}")
        if announced is None:
            return None
        self.figures.kills_in_call += 1
        kind, call = self._call(cycle, announced, history)
        if kind == "A":
            assert isinstance(call, tuple)
            return Pending("A", turn=call)
        assert isinstance(call, list)
        return Pending("S", content=call)

    def _call(self, cycle: int, line: str, history: list[TurnId]) -> tuple[str, TurnId | list[TurnId]]:
        fields = line.split()
        if fields[0] == "A":
            turn = (cycle, int(fields[1]))
            if len(self.workload.turn(*turn)) != int(fields[2]):
                raise self.fail(cycle, f"harness: the writer's turn {turn} is not the parent's ({line})")
            return "A", turn
        t0, new, keep = int(fields[1]), int(fields[2]), int(fields[3])
        content = history[len(history) - keep :] + [(cycle, t0 + i) for i in range(new)]
        if _digest(content) != fields[4]:
            raise self.fail(cycle, f"harness: the writer saves another history than the parent's model ({line})")
        return "S", content

    # ---- the checks after a kill -------------------------------------------------------------------------

    def _read(self, cycle: int, what: str) -> Reads:
        """load, len, iteration, load(last=n) and verify, each by a fresh codec, counting torn-tail warnings."""
        torn: dict[str, int] = {}
        values: dict[str, Any] = {}
        last = self.rng.randint(1, max(1, len(self.history) * 2 + 3))
        calls: dict[str, Callable[[ConversationCodec], Any]] = {
            "load": lambda c: c.load(),
            "len": lambda c: len(c),
            "iter": lambda c: list(c.iter()),
            "last": lambda c: c.load(last=last),
            "verify": lambda c: c.verify(),
        }
        for name, call in calls.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    values[name] = call(ConversationCodec(self.path, **self.options))
                except Exception as exc:
                    raise self.fail(cycle, f"{what}: {name} raised {type(exc).__name__}: {exc}") from None
            torn[name] = sum(issubclass(w.category, TornTailWarning) for w in caught)
            others = [str(w.message) for w in caught if not issubclass(w.category, TornTailWarning)]
            if others:
                raise self.fail(cycle, f"{what}: {name} warned: {others}")
        return Reads(values["load"], values["len"], values["iter"], last, values["last"], torn, values["verify"])

    def _consistent(self, cycle: int, reads: Reads, what: str) -> tuple[list[TurnId], bool]:
        """The turns of the file, once every reader agrees on them and on whether the tail is torn."""
        try:
            turns = self.workload.parse(reads.loaded)
        except HistoryError as exc:
            self.figures.partial_turns += exc.kind == "partial"
            raise self.fail(cycle, f"{what}: load() is not a history of whole turns: {exc}") from None
        n = len(reads.loaded)
        if reads.iterated != reads.loaded:
            raise self.fail(cycle, f"{what}: iteration gives {len(reads.iterated)} messages, load() {n}, or others")
        if reads.length != n:
            raise self.fail(cycle, f"{what}: len() is {reads.length}, load() has {n} messages")
        if reads.tail != reads.loaded[-reads.last :]:
            raise self.fail(cycle, f"{what}: load(last={reads.last}) is not the last messages of load()")
        report = reads.report
        if report.errors or report.messages != n or report.index.startswith("wrong"):
            raise self.fail(cycle, f"{what}: verify() says {report} for {n} messages")
        torn = report.torn_tail_bytes > 0
        warned = {name: count for name, count in reads.torn_warnings.items() if name != "verify"}
        if report.ok == torn or reads.torn_warnings["verify"] or any((n > 0) != torn for n in warned.values()):
            raise self.fail(cycle, f"{what}: torn-tail warnings {reads.torn_warnings} but verify() says {report}")
        return turns, torn

    def _check(self, cycle: int, pending: Pending | None, plan: str) -> None:
        what = f"after kill ({plan}, in flight: {pending and pending.kind})"
        raw = self.path.read_bytes() if self.path.exists() else b""
        reads = self._read(cycle, what)
        turns, torn = self._consistent(cycle, reads, what)
        expected = self.history
        if turns == expected:
            pass
        elif pending is not None and pending.kind == "A" and turns == [*expected, pending.turn]:
            self.figures.unacked_turns_landed += 1
        elif pending is not None and pending.kind == "S" and turns == pending.content:
            self.figures.unacked_saves_landed += 1
        else:
            allowed = set(expected) | (set(pending.content) if pending else set())
            self.figures.turns_lost += len(set(expected) - set(turns)) if not pending or pending.kind == "A" else 0
            self.figures.duplicates += len(duplicates(turns))
            extra = [t for t in turns if t not in allowed and (not pending or t != pending.turn)]
            raise self.fail(
                cycle,
                f"{what}: the file is not the acknowledged history: {describe(expected, turns)}; "
                f"unannounced turns {extra[:5]}",
            )
        if self.path.exists() and stat.S_IMODE(os.stat(self.path).st_mode) != 0o600:
            raise self.fail(cycle, f"{what}: the file's mode is {oct(os.stat(self.path).st_mode)}, not 0600")
        cut = len(raw) - reads.report.torn_tail_bytes
        still = torn and self.leftover is not None and self.leftover == (cut, raw[cut:])
        if self.leftover is not None and not still:
            self._set_aside_by_writer(cycle, what)
        self.history = turns
        if torn and not still:
            self._torn(cycle, raw, cut, pending, what)
        self._side_files(cycle, what)
        if cycle % 10 == 0:
            held = sum(self.workload.size(w, t) for w, t in self.history)
            self.figures.max_history_bytes = max(self.figures.max_history_bytes, held)

    def _torn(self, cycle: int, raw: bytes, cut: int, pending: Pending | None, what: str) -> None:
        """A new torn tail: it must be part of the append in flight. Either the parent appends a turn at once, and
        that append must set exactly the torn bytes aside; or the torn tail is left to the next writers, which
        may be killed while they set it aside (checked by `_set_aside_by_writer` once it is gone)."""
        self.figures.torn_tails += 1
        tail = raw[cut:]
        if pending is None or pending.kind != "A" or pending.turn is None:
            raise self.fail(cycle, f"{what}: a torn tail of {len(tail)} bytes, but no append was in flight")
        problem = self._not_a_frame_prefix(tail, pending.turn)
        if problem:
            raise self.fail(cycle, f"{what}: the torn tail (from byte {cut}) {problem}")
        if self.rng.random() < LEAVE_TORN_CHANCE:
            self.leftover = (cut, tail)
            return
        turns = self.history
        before = set(self._torn_files())
        repair = (REPAIR_WRITER, cycle)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                codec = ConversationCodec(self.path, **self.options, durable=self.rng.random() < 0.5)
                codec.append_turn(self.workload.turn(*repair))
        except Exception as exc:
            raise self.fail(cycle, f"{what}: the append after a torn tail raised {type(exc).__name__}: {exc}") from None
        if caught:
            raise self.fail(cycle, f"{what}: the append after a torn tail warned: {[str(w.message) for w in caught]}")
        new = sorted(set(self._torn_files()) - before)
        name = self.path.name + f".torn-{cut}"
        if len(new) != 1 or not (new[0] == name or new[0].startswith(name + ".")):
            raise self.fail(cycle, f"{what}: the append after a torn tail at byte {cut} wrote side files {new}")
        if (self.folder / new[0]).read_bytes() != tail:
            raise self.fail(cycle, f"{what}: {new[0]} does not hold exactly the torn bytes")
        if self.path.read_bytes()[:cut] != raw[:cut]:
            raise self.fail(cycle, f"{what}: the append after a torn tail changed the bytes before it")
        self.side_files.add(new[0])
        self.figures.set_aside += 1
        after = f"{what}, then an append after the torn tail"
        reads = self._read(cycle, after)
        now, still_torn = self._consistent(cycle, reads, after)
        if still_torn or now != [*turns, repair]:
            raise self.fail(cycle, f"{after}: torn {still_torn}; {describe([*turns, repair], now)}")
        self.history = now

    def _not_a_frame_prefix(self, tail: bytes, turn: TurnId) -> str:
        """Why `tail` cannot be the start of `turn` as stored in this format ('' when it can)."""
        if "fernet_key" in self.options:
            if _BASE64URL.fullmatch(tail) and _TOKEN_START.startswith(tail[: len(_TOKEN_START)]):
                return ""
            return f"is not the start of a token line: {tail[:40]!r}...{tail[-20:]!r}"
        if self.options.get("compressed"):
            try:
                inflated = zlib.decompressobj(wbits=31).decompress(tail)
            except zlib.error as exc:
                return f"is not the start of a gzip member: {exc}"
            if self.workload.jsonl(*turn).startswith(inflated):  # b"" when cut inside the member's header
                return ""
            return f"inflates to {len(inflated)} bytes that do not start turn {turn}"
        stored = self.workload.stored_plain(*turn)
        if stored.startswith(tail) and len(tail) < len(stored):
            return ""
        return f"({len(tail)} bytes) is not a proper prefix of turn {turn} as stored ({len(stored)} bytes)"

    def _set_aside_by_writer(self, cycle: int, what: str) -> None:
        """A torn tail left to the writers is gone: set aside by one of them, in a side file named after its offset
        that holds exactly its bytes. Writers killed while writing such a file leave one with only some of them
        (and the next writer writes another: `.torn-<offset>.1`), never anything else."""
        assert self.leftover is not None
        cut, tail = self.leftover
        self.leftover = None
        name = f"{self.path.name}.torn-{cut}"
        new = [n for n in self._torn_files() if n not in self.side_files]
        contents = {n: (self.folder / n).read_bytes() for n in new}
        wrong = [
            n
            for n, data in contents.items()
            if not (n == name or n.startswith(name + ".")) or not tail.startswith(data)
        ]
        if wrong:
            raise self.fail(cycle, f"{what}: side files that are not the torn tail of byte {cut}: {wrong}")
        if tail not in contents.values():
            raise self.fail(
                cycle,
                f"{what}: the torn tail of byte {cut} ({len(tail)} bytes) is gone from the file "
                f"but no side file holds it whole: {sorted(new)}",
            )
        self.side_files.update(new)
        self.figures.set_aside += 1
        self.figures.set_aside_by_writers += 1
        self.figures.partial_side_files += sum(data != tail for data in contents.values())

    def _torn_files(self) -> list[str]:
        return [n for n in os.listdir(self.folder) if n.startswith(self.path.name + ".torn-")]

    def _side_files(self, cycle: int, what: str) -> None:
        """Only the files a conversation may have: itself, its index, the temporary file of a killed save (or
        index write), the side files this run has checked, and side files of a torn tail left to the writers."""
        name = self.path.name
        pending = None if self.leftover is None else (f"{name}.torn-{self.leftover[0]}", self.leftover[1])
        for entry in os.listdir(self.folder):
            if entry in self.side_files:
                continue
            if pending and (entry == pending[0] or entry.startswith(pending[0] + ".")):
                if not pending[1].startswith((self.folder / entry).read_bytes()):
                    raise self.fail(cycle, f"{what}: {entry} holds other bytes than the torn tail it is named after")
                continue  # a writer died setting the torn tail aside, after or while writing this side file
            if entry == f".{name}.tmp":
                self.figures.tmp_left += 1
            elif entry == f".{name}.idx.tmp":  # the index is replaced the same way (index.py)
                self.figures.idx_tmp_left += 1
            elif entry not in (name, name + ".idx"):
                raise self.fail(cycle, f"{what}: an unexpected file beside the conversation: {entry}")


def main(argv: list[str] | None = None) -> int:
    p = parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=None, help="kills per format (default: 30 with --quick, else 400)")
    args = parse(p, argv)
    quick = args.quick
    settings = Settings(
        kills=args.kills or (30 if quick else 400),
        budget=(512 << 10) if quick else (1 << 20),
        max_wait_calls=15 if quick else 30,
    )
    result = Result(NAME, args)
    with workdir(args, NAME) as root:
        for fmt in args.formats:
            figures = KillRun(args, result, fmt, root / fmt.replace("+", "-"), settings).run()
            result.figures[fmt] = vars(figures)
            print(
                f"[{NAME}] {fmt}: {figures.kills} kills + {figures.cuts} cut writes ({figures.kills_in_call} inside "
                f"a call), "
                f"{figures.turns_acked} turns and {figures.saves_acked} saves acknowledged, "
                f"unacknowledged landed {figures.unacked_turns_landed} turns / {figures.unacked_saves_landed} saves, "
                f"lost {figures.turns_lost}, duplicated {figures.duplicates}, partial {figures.partial_turns}, "
                f"torn tails {figures.torn_tails} (set aside {figures.set_aside}, {figures.set_aside_by_writers} of "
                f"them by writers; {figures.partial_side_files} side files cut short), "
                f"tmp files left {figures.tmp_left}, in {figures.seconds} s",
                flush=True,
            )
        if result.failures:
            args.keep = True  # the files of a failure are the evidence: keep them (the folder is printed)
    return result.finish()


if __name__ == "__main__":
    sys.exit(main())
