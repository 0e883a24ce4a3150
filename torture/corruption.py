"""Corruption: every truncation and every flipped bit of small conversation files and of their index.

For each format a file of several frames is built (a save of three messages, then single- and multi-message
turns), with its index `<name>.idx`, from the seed (file bytes, Fernet IVs and conversation ids included). Then
every damaged state is tried:

- the data file truncated at every offset, and every bit of it flipped (`--quick`: one seeded bit per byte);
- the index truncated at every offset, and every bit of it flipped (`--quick`: one seeded bit per byte), with the
  data file intact (the index is made for each copy of the data file: its identity rewritten).

On each state, in a child process (batches of states; a segfault, an abort or a hang kills only the child, and
the state it was at is reported), three copies of the damaged files are worked on (on /dev/shm when there is
one), a fresh codec for each:

- readers: `load()`, `len()`, `load(last=n)` for a few n, iteration, `verify()`; then an `append_turn()`
  without any repair;
- `repair()` by a fresh codec, then `verify()`, `load()`, `append_turn()`, `load()`;
- an `append_turn()` by a codec that wrote the file's last turn itself (replaying the build's IV: the same
  bytes), before the damage, so that it has the file cached. A truncation changes the size, so the cache must be
  dropped; a flipped bit is written with the file's modification time put back (bit rot, or a write within the
  same clock tick: the cache cannot see it, and the append lands after the damage without reading it), and
  readers must still see the damage; a damaged index leaves the data file as cached, and the append extends or
  replaces the index.

Readers are tried on every state; the writers, four times as costly, on every truncation and on one seeded bit of
each byte (`--all-writers`: on every state; `--quick`: on a seeded 5% of the states).

Requirements, each a failure when broken:

- nothing but a `CodecError` is raised, and no warning but a `TornTailWarning` is emitted (a child that dies,
  hangs or raises anything else fails the state);
- truncation gives a prefix of whole turns: with a `TornTailWarning` when the cut left part of a turn (even
  only the TAB that opens a plain turn of several messages), without one when it did not (the cut is at a turn's
  end, or only cut off the final line break of a single-message plain turn or of the first encrypted frame, which
  then read as whole: docs/FORMAT.md 1.2 and 1.4);
- a flipped bit in a gzip or encrypted file is detected: a `CodecError`, or the messages unchanged because the
  bit does not matter (below). Any other outcome is a failure: different messages, or a tail read as torn (a
  warning, the turns after the flip left out). The failure says whether a cut could leave such bytes at all
  (`zlib` finds the gzip stream unfinished rather than wrong; the line is a prefix of a token): when it could,
  the frame still shows the damage (its gzip signature and size, or a token that is authentic without the byte
  after it). A truncation of the first token to a token's length is the one cut that raises: a file of one token
  without its line break is the original design's, and its failed decryption cannot be told from a wrong key
  (`first-token-cut-to-a-token-length`). A tampered encrypted frame is expected to be a `CorruptFileError`
  naming the frame; while the library still raises `DecryptionError` for it, those outcomes are counted apart
  (`tampered_as_DecryptionError`);
- plain text has no checksum: a flip that still parses and changes the messages is counted
  (`plain:undetectable`), not failed; so is a flip of the last line break read as a torn tail
  (`plain:read-as-torn`);
- `load`, `len`, `load(last=n)` and iteration agree on every state: when `load()` succeeds the others give the
  same messages (and the same warning) and `verify()` reports the same; when it raises, iteration raises too
  (after a prefix of the original), and `len()`/`load(last=n)` either raise or give the original's answer (the
  index lets them read only intact frames);
- damage to the index changes no result and raises nothing: every reader gives exactly what it gives with the
  index deleted;
- `repair()` makes `verify()` ok, and leaves a prefix or a salvage of the original (messages in order, none
  invented; whole frames for gzip and encrypted), keeping the damaged bytes in side files; or refuses with a
  `CodecError` and writes nothing. An append then works. An append without repair works on a sound or torn file
  (setting the torn bytes aside), and on a damaged one either raises a `CodecError` writing nothing or appends
  after damage that the readers still report.

The flips that may leave the messages unchanged ("harmless"), each checked against an independent oracle:

- gzip, the deflate stream: bits that no inflater reads, such as the padding after the final block in its last
  byte. The flip must leave the member's output unchanged for zlib too (`zlib.decompress`, wbits=31).
  Nothing else in a member may be harmless: its header (MTIME, XFL and OS included) is under the CRC16 of
  FLG.FHCRC, and the trailer is the CRC32 and length of the data;
- encrypted: the unused low bits of a token's last base64 character before its padding (`==` leaves 4 bits
  unused, `=` 2): cryptography's decoder ignores them, so the token, which is authenticated whole, decodes to
  the same bytes. The flipped line must decode (`base64.urlsafe_b64decode`) to the same bytes as the original;
- plain: any flip giving the same messages (a TAB turned into a CR is still JSON whitespace and a line break).

Run: `python -m torture.corruption [--quick] [--seed N] [--formats ...] [--jobs J] [--only STATE,...]`; a failure
names its state (`data:flip:OFFSET:BIT`, `data:cut:LENGTH`, `idx:...`), replayed with `--seed N --formats F
--only STATE`.
"""

from __future__ import annotations

import argparse
import base64
import faulthandler
import functools
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from . import common

NAME = "corruption"

# A tampered Fernet frame under the right key is a CorruptFileError naming the frame (issue 7, "Keys"); a
# DecryptionError for one is a failure. (True counts them apart instead: for bisecting against older builds.)
TAMPERED_MAY_BE_DECRYPTION_ERROR = False

SAVED: list[Any] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Zürich 🌦 weather?", "n": 1},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "args": '{"city":"Z"}'}]},
]
TURNS: list[list[Any]] = [
    [{"role": "tool", "content": "-3.5 °C"}],
    [{"role": "assistant", "content": "Snow.\tCold"}, {"role": "user", "content": "ok"}, {"role": "user", "n": 2}],
    [{"role": "assistant", "content": [1, 2.5, True, None]}],
]
NEW_TURN: list[Any] = [{"role": "user", "content": "after"}, {"role": "assistant", "content": "the damage"}]
FIXED_TIME = 1_700_000_000  # the Fernet timestamp of every frame the build writes
QUICK_WRITERS = 0.05  # with --quick, the share of states on which the writers are tried too (readers: all)
STATE_TIMEOUT = 60  # seconds before a state counts as hung
MAX_CRASHES = 20  # per format: after that many dead children, the rest of the format is not tried
WHITESPACE = b" \t\r\n"
SCRATCH = "/dev/shm"
# Outcomes too many to list; the states of all others are listed in the result (up to 24 of each).
COMMON_OUTCOMES = ("detected:", "tampered_as_", "torn-prefix", "whole-prefix", "index:ignored", "plain:undetectable")
_TOKEN_TORN = re.compile(rb"[A-Za-z0-9_-]*={0,2}")


# ============================================================================================ the files under test


@dataclass
class Unit:
    """A turn as readers see it: where its stored bytes are and which messages it holds. Frames for gzip and
    encrypted files; for plain ones each line of the save is a turn of its own, and each append one turn."""

    start: int
    end: int
    before: int
    count: int


@dataclass
class Base:
    """One format's undamaged files, and what was written to make them."""

    fmt: str
    data: bytes
    idx: bytes
    data_before_last: bytes  # the files before the last append
    idx_before_last: bytes
    replay: list[bytes]  # what os.urandom gave during the last append (its Fernet IV)
    messages: list[Any]
    units: list[Unit]
    frames: list[tuple[int, int]]  # (offset, length) of each stored frame

    def to_json(self) -> dict[str, Any]:
        b64 = _b64
        return {
            "fmt": self.fmt,
            "data": b64(self.data),
            "idx": b64(self.idx),
            "data_before_last": b64(self.data_before_last),
            "idx_before_last": b64(self.idx_before_last),
            "replay": [b64(r) for r in self.replay],
            "messages": self.messages,
            "units": [[u.start, u.end, u.before, u.count] for u in self.units],
            "frames": self.frames,
        }

    @classmethod
    def from_json(cls, j: dict[str, Any]) -> Base:
        unb64 = base64.b64decode
        return cls(
            j["fmt"],
            unb64(j["data"]),
            unb64(j["idx"]),
            unb64(j["data_before_last"]),
            unb64(j["idx_before_last"]),
            [unb64(r) for r in j["replay"]],
            j["messages"],
            [Unit(*u) for u in j["units"]],
            [(f[0], f[1]) for f in j["frames"]],
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@contextmanager
def seeded_entropy(rng: random.Random, log: list[bytes] | None = None) -> Iterator[None]:
    """os.urandom from the seed and a fixed clock, so that the files (Fernet IVs and timestamps, conversation ids)
    are the same for the same seed."""

    def urandom(n: int) -> bytes:
        out = rng.randbytes(n)
        if log is not None:
            log.append(out)
        return out

    with mock.patch("os.urandom", urandom), mock.patch("time.time", lambda: float(FIXED_TIME)):
        yield


@contextmanager
def replayed_entropy(outputs: list[bytes]) -> Iterator[None]:
    """os.urandom giving back what it gave during the build (then zeros), and the build's clock."""
    pending = list(outputs)

    def urandom(n: int) -> bytes:
        return pending.pop(0)[:n].ljust(n, b"\0") if pending else bytes(n)

    with mock.patch("os.urandom", urandom), mock.patch("time.time", lambda: float(FIXED_TIME)):
        yield


def index_for(idx: bytes, st: os.stat_result) -> bytes:
    """The index `idx` made for the data file `st`: its identity (inode, device) and the header's CRC rewritten
    (docs/FORMAT.md 2), so that a copy of the files on a new inode has an index that applies."""
    if len(idx) < 32:
        return idx
    head = idx[:8] + struct.pack("<QQ", st.st_ino, st.st_dev)
    return head + struct.pack("<I", zlib.crc32(head)) + idx[28:]


def build(fmt: str, folder: Path, rng: random.Random) -> Base:
    from conversation_codec import ConversationCodec

    folder.mkdir(parents=True)
    path = folder / "c.jsonl"
    idx_path = Path(str(path) + ".idx")
    codec = ConversationCodec(path, durable=False, **common.FORMATS[fmt])
    with seeded_entropy(rng):
        codec.save(SAVED)
    ends = [path.stat().st_size]
    for turn in TURNS[:-1]:
        with seeded_entropy(rng):
            codec.append_turn(turn)
        ends.append(path.stat().st_size)
    data_before_last, idx_before_last = path.read_bytes(), idx_path.read_bytes()
    replay: list[bytes] = []
    with seeded_entropy(rng, replay):
        codec.append_turn(TURNS[-1])
    ends.append(path.stat().st_size)
    data, idx = path.read_bytes(), idx_path.read_bytes()
    # The harness's own understanding of the index header must be the library's, or idx states mean nothing.
    assert index_for(idx, path.stat()) == idx, "index_for() does not rebuild the index header the library wrote"
    messages = [*SAVED, *(m for turn in TURNS for m in turn)]
    frames = [(start, end - start) for start, end in zip([0, *ends], ends)]
    counts = [len(SAVED), *(len(t) for t in TURNS)]
    units: list[Unit] = []
    before = 0
    for (start, length), count in zip(frames, counts):
        if fmt == "plain" and start == 0:  # each line of a plain save is a turn of its own
            at = 0
            for line in data[:length].splitlines(keepends=True):
                units.append(Unit(at, at + len(line), before, 1))
                at += len(line)
                before += 1
            assert at == length and before == count
            continue
        units.append(Unit(start, start + length, before, count))
        before += count
    assert before == len(messages) and codec.load() == messages
    return Base(fmt, data, idx, data_before_last, idx_before_last, replay, messages, units, frames)


# ============================================================================================ states


def plan(base: Base, quick: bool, all_writers: bool, rng: random.Random) -> list[list[Any]]:
    """Every state to try: [target, "cut", length, 0, writers] or [target, "flip", offset, bit, writers].

    Readers are tried on every state. The writers (append, repair, cached append), which cost four times as
    much, on every truncation and on one seeded bit of each byte (or on every state: --all-writers); with
    --quick, on a seeded share of the states."""
    states: list[list[Any]] = []
    for target, data in (("data", base.data), ("idx", base.idx)):
        states += [[target, "cut", n, 0, not quick or rng.random() < QUICK_WRITERS] for n in range(len(data))]
        for offset in range(len(data)):
            chosen = rng.randrange(8)
            if quick:
                states.append([target, "flip", offset, chosen, rng.random() < QUICK_WRITERS])
            else:
                states += [[target, "flip", offset, bit, all_writers or bit == chosen] for bit in range(8)]
    return states


def state_name(state: list[Any]) -> str:
    target, kind, offset, bit = state[:4]
    return f"{target}:{kind}:{offset}" + (f":{bit}" if kind == "flip" else "")


def parse_state(text: str) -> list[Any]:
    parts = text.split(":")
    if len(parts) not in (3, 4) or parts[0] not in ("data", "idx") or parts[1] not in ("cut", "flip"):
        raise ValueError(f"not a state: {text!r} (data|idx:cut:LENGTH or data|idx:flip:OFFSET:BIT)")
    return [parts[0], parts[1], int(parts[2]), int(parts[3]) if len(parts) == 4 else 0, True]


def damage(data: bytes, kind: str, offset: int, bit: int) -> bytes:
    if kind == "cut":
        return data[:offset]
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


# ============================================================================================ observing a codec


@dataclass
class Obs:
    """What one call did: its value or the exception it raised, and the warnings it emitted."""

    value: Any = None
    error: BaseException | None = None
    torn: bool = False
    stray: list[str] = field(default_factory=list)  # warnings other than TornTailWarning
    yielded: list[Any] = field(default_factory=list)  # iteration: the messages before any error


def observe(call: Callable[[], Any], into: list[Any] | None = None) -> Obs:
    from conversation_codec import TornTailWarning

    obs = Obs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if into is None:
                obs.value = call()
            else:
                for item in call():
                    into.append(item)
                obs.value = into
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # a PyO3 PanicException is a BaseException
            obs.error = exc
    obs.yielded = into if into is not None else []
    for w in caught:
        if issubclass(w.category, TornTailWarning):
            obs.torn = True
        else:
            obs.stray.append(f"{w.category.__name__}: {w.message}")
    return obs


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types (True is not 1, 1.0 is not 1)."""
    return bool(a == b) and repr(a) == repr(b)


def error_name(exc: BaseException) -> str:
    """The public class an error is (InvalidTokenError is a DecryptionError)."""
    from conversation_codec import errors

    for cls in type(exc).__mro__:
        if cls.__module__ == errors.__name__ or cls.__module__ == "conversation_codec":
            return cls.__name__
    return type(exc).__name__


def is_codec_error(exc: BaseException | None) -> bool:
    from conversation_codec import CodecError

    return isinstance(exc, CodecError)


def describe(obs: Obs) -> str:
    if obs.error is not None:
        return f"{type(obs.error).__name__}: {str(obs.error)[:200]}"
    text = repr(obs.value)
    return (text[:200] + "...") if len(text) > 200 else text


def read_all(codec: Any, lasts: list[int]) -> dict[str, Obs]:
    reads = {"load": observe(codec.load), "len": observe(lambda: len(codec))}
    for n in lasts:
        reads[f"last={n}"] = observe(functools.partial(codec.load, last=n))
    reads["iter"] = observe(codec.iter, into=[])
    reads["verify"] = observe(codec.verify)
    return reads


def report_tuple(report: Any) -> tuple[Any, ...]:
    return (report.ok, report.messages, report.frames, report.torn_tail_bytes, [e[0] for e in report.errors])


def subsequence(part: list[Any], whole: list[Any]) -> bool:
    it = iter(whole)
    return all(any(same(p, w) for w in it) for p in part)


def unit_prefix(messages: list[Any], base: Base) -> int | None:
    """How many whole turns of the original `messages` are, or None when they are not a prefix of whole turns."""
    if not same(messages, base.messages[: len(messages)]):
        return None
    for k, unit in enumerate([Unit(0, 0, 0, 0), *base.units]):
        if unit.before + unit.count == len(messages):
            return k
    return None


# ============================================================================================ the checks of one state


class Checker:
    """Runs the states of one format in a child process."""

    def __init__(self, base: Base, folder: Path) -> None:
        self.base = base
        self.options = common.FORMATS[base.fmt]
        self.folder = folder
        self.lasts = [1, 4, len(base.messages) + 2]
        self.encrypted = "fernet_key" in self.options
        self._reference: dict[str, Any] | None = None

    def codec(self, path: Path) -> Any:
        """A fresh codec of the format (no flush to disk: what is tested does not depend on it)."""
        from conversation_codec import ConversationCodec

        return ConversationCodec(path, durable=False, **self.options)

    # ---- files

    def place(self, role: str, data: bytes, idx: bytes | None, idx_damage: tuple[str, int, int] | None = None) -> Path:
        """Fresh files in the folder of `role`: the data file, and `idx` made for it (then damaged)."""
        folder = self.folder / role
        folder.mkdir(exist_ok=True)
        for entry in os.scandir(folder):
            os.unlink(entry.path)
        path = folder / "c.jsonl"
        path.write_bytes(data)
        if idx is not None:
            made = index_for(idx, path.stat())
            if idx_damage is not None:
                made = damage(made, *idx_damage)
            Path(str(path) + ".idx").write_bytes(made)
        return path

    @staticmethod
    def snapshot(path: Path) -> dict[str, bytes]:
        return {e.name: Path(e.path).read_bytes() for e in os.scandir(path.parent)}

    def reference(self) -> dict[str, Any]:
        """What every reader gives on the undamaged data file without its index."""
        if self._reference is None:
            path = self.place("ref", self.base.data, None)
            reads = read_all(self.codec(path), self.lasts)
            self._reference = {name: self.key(obs) for name, obs in reads.items()}
        return self._reference

    @staticmethod
    def key(obs: Obs) -> Any:
        if obs.error is not None:
            return ("error", error_name(obs.error))
        value = report_tuple(obs.value) if hasattr(obs.value, "ok") else obs.value
        return ("ok", repr(value), obs.torn)

    # ---- one state

    def run(self, state: list[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"outcome": None, "tags": [], "fail": []}
        try:
            if state[0] == "data":
                self.data_state(state, out)
            else:
                self.idx_state(state, out)
        except Exception:
            out["fail"].append("the harness raised: " + traceback.format_exc(limit=6))
        return out

    def data_state(self, state: list[Any], out: dict[str, Any]) -> None:
        _, kind, offset, bit, writers = state
        base = self.base
        damaged = damage(base.data, kind, offset, bit)
        fail: list[str] = out["fail"]

        # Readers, through a fresh codec, with the (intact) index beside the damaged data.
        path = self.place("p", damaged, base.idx)
        codec = self.codec(path)
        reads = read_all(codec, self.lasts)
        fail += self.agree(reads, base.messages)
        load = reads["load"]
        if kind == "cut":
            out["outcome"] = self.judge_cut(offset, load, fail)
        else:
            out["outcome"] = self.judge_flip(offset, bit, damaged, load, fail)
        if not writers:
            return
        # An append without repair, by the same fresh codec.
        self.append_unrepaired(path, damaged, load, out)
        # repair(), by a fresh codec, then an append.
        self.repair(damaged, base.idx, load, out)
        # An append by a codec that had the file cached from before the damage.
        self.cached_append(state, load, out)

    def idx_state(self, state: list[Any], out: dict[str, Any]) -> None:
        _, kind, offset, bit, writers = state
        base = self.base
        fail: list[str] = out["fail"]
        path = self.place("p", base.data, base.idx, (kind, offset, bit))
        reads = read_all(self.codec(path), self.lasts)
        reference = self.reference()
        for name, obs in reads.items():
            if obs.error is not None or obs.stray or obs.torn:
                fail.append(f"{name} with a damaged index: {describe(obs)} {obs.stray}")
            elif self.key(obs) != reference[name]:
                fail.append(f"{name} with a damaged index gives {describe(obs)}, without the index {reference[name]}")
        verify = reads["verify"]
        out["outcome"] = "index:" + (verify.value.index.split(":")[0] if verify.error is None else "error")
        if not writers:
            return
        self.append_unrepaired(path, base.data, reads["load"], out)
        self.repair(base.data, base.idx, reads["load"], out, (kind, offset, bit))
        self.cached_append(state, reads["load"], out)

    # ---- requirements

    def agree(self, reads: dict[str, Obs], original: list[Any]) -> list[str]:
        """Readers agree with `load()`; when it raises, the others raise or give the original's answer."""
        fail = []
        for name, obs in reads.items():
            if obs.error is not None and not is_codec_error(obs.error):
                fail.append(f"{name} raised what is not a CodecError: {describe(obs)}")
            if obs.stray:
                fail.append(f"{name} warned: {obs.stray}")
        load = reads["load"]
        it = reads["iter"]
        verify = reads["verify"]
        lasts = [int(name[5:]) for name in reads if name.startswith("last=")]
        if load.error is None:
            messages = load.value
            expect = {"len": len(messages), "iter": messages}
            expect.update({f"last={n}": messages[-n:] for n in lasts})
            for name, value in expect.items():
                obs = reads[name]
                if obs.error is not None or not same(obs.value, value):
                    fail.append(f"{name} gives {describe(obs)} where load() gives {len(messages)} messages")
                elif obs.torn != load.torn:
                    fail.append(f"{name} warns of a torn tail: {obs.torn}; load() does: {load.torn}")
            if verify.error is not None:
                fail.append(f"verify() raised {describe(verify)} where load() works")
            else:
                r = verify.value
                if (r.ok, r.messages, r.errors, r.torn_tail_bytes > 0) != (not load.torn, len(messages), [], load.torn):
                    fail.append(f"verify() reports {r} where load() gives {len(messages)} messages, torn={load.torn}")
            return fail
        if it.error is None:
            fail.append(f"iteration completes ({len(it.value)} messages) where load() raises {describe(load)}")
        elif not same(it.yielded, original[: len(it.yielded)]):
            fail.append(f"iteration yields {it.yielded!r:.200} before raising: not the original's first messages")
        expect = {"len": len(original)}
        expect.update({f"last={n}": original[-n:] for n in lasts})
        for name, value in expect.items():
            obs = reads[name]
            if obs.error is None and not same(obs.value, value):
                fail.append(f"{name} gives {describe(obs)} where load() raises: neither an error nor the original")
        if verify.error is None and (verify.value.ok or not verify.value.errors):
            fail.append(f"verify() reports {verify.value} where load() raises {describe(load)}")
        return fail

    def expected_cut(self, cut: int) -> tuple[int, bool]:
        """(whole turns, warned) that readers must give for the data file cut to `cut` bytes."""
        units = self.base.units
        k = sum(1 for u in units if u.end <= cut)
        start = units[k - 1].end if k else 0
        if cut == start:
            return k, False
        unit = units[k]
        first_token = self.encrypted and k == 0
        if cut == unit.end - 1 and (first_token or (self.base.fmt == "plain" and unit.count == 1)):
            return k + 1, False  # only its line break is missing: a whole line (docs/FORMAT.md 1.2, 1.4)
        return k, True

    def judge_cut(self, cut: int, load: Obs, fail: list[str]) -> str:
        units, warned = self.expected_cut(cut)
        if load.error is not None:
            if units == 0 and self.encrypted and error_name(load.error) in ("DecryptionError", "CorruptFileError"):
                from conversation_codec.crypto import is_one_token

                if is_one_token(self.base.data[:cut]):
                    # A file of one token without its line break is the original design's: a cut that leaves a
                    # token's length cannot be told from a wrong key (nothing else in the file proves the key).
                    return "first-token-cut-to-a-token-length"
            fail.append(f"load() of a truncated file raises {describe(load)}: a cut is never damage")
            return "error"
        got = unit_prefix(load.value, self.base)
        if got is None:
            fail.append(f"load() of a truncated file gives {describe(load)}: not a prefix of whole turns")
            return "wrong"
        if (got, load.torn) != (units, warned):
            fail.append(f"load() gives {got} whole turns, torn={load.torn}; expected {units}, torn={warned}")
        return "torn-prefix" if load.torn else "whole-prefix"

    def judge_flip(self, offset: int, bit: int, damaged: bytes, load: Obs, fail: list[str]) -> str:
        base = self.base
        if load.error is not None:
            name = error_name(load.error)
            if name == "DecryptionError" and self.encrypted:
                if not TAMPERED_MAY_BE_DECRYPTION_ERROR:
                    fail.append(f"a tampered frame raises {describe(load)}, not CorruptFileError")
                return "tampered_as_DecryptionError"
            return f"detected:{name}"
        messages = load.value
        if not load.torn and same(messages, base.messages):
            category = self.harmless(offset, bit, damaged)
            if category is None:
                fail.append(
                    f"a flip at byte {offset} bit {bit} is not detected (same messages), and no oracle says "
                    "the bit does not matter"
                )
                return "undetected"
            return "harmless:" + category
        if not load.torn:
            if base.fmt == "plain":
                return "plain:undetectable"
            fail.append(f"a flip gives different messages without an error: {describe(load)}")
            return "wrong"
        k = unit_prefix(messages, base)
        if k is None:
            fail.append(f"a flip read as a torn tail gives {describe(load)}: not a prefix of whole turns")
            return "wrong"
        if base.fmt == "plain":
            return "plain:read-as-torn"
        start = base.units[k - 1].end if k else 0
        tail = damaged[start:]
        if self.could_be_cut(tail):
            # Bytes an append of some longer frame, cut short, could leave; but not of this frame: its gzip header
            # (signature, size) or its token (authentic without the byte after it) says it is damaged.
            fail.append(
                f"a flip at byte {offset} bit {bit} is read as a torn tail from byte {start} (a cut of a "
                f"longer frame could leave these bytes, but the frame there shows damage): {tail[:60]!r}"
            )
            return "torn:a-cut-could-leave-it"
        fail.append(
            f"a flip at byte {offset} bit {bit} is read as a torn tail from byte {start}, which no cut "
            f"could leave: {tail[:60]!r}"
        )
        return "torn:no-cut-leaves-it"

    def could_be_cut(self, tail: bytes) -> bool:
        """Whether `tail` is what an append cut short could leave: a prefix of a token line, or of gzip members
        (zlib says the stream is unfinished, not wrong)."""
        if self.encrypted:
            return bool(_TOKEN_TORN.fullmatch(tail)) and (tail[:6] == b"gAAAAA"[: len(tail[:6])])
        rest = tail
        while rest:
            inflater = zlib.decompressobj(wbits=31)
            try:
                inflater.decompress(rest)
            except zlib.error:
                return False
            if not inflater.eof:
                return True
            rest = inflater.unused_data
        return False

    def harmless(self, offset: int, bit: int, damaged: bytes) -> str | None:
        """Why a flip that changes no message does not matter, checked by an oracle; None when nothing says so."""
        base = self.base
        old, new = base.data[offset], damaged[offset]
        if base.fmt == "plain":
            if old in WHITESPACE and new in WHITESPACE:
                return "plain-whitespace"
            return "plain-same-messages"
        start, length = next((s, n) for s, n in base.frames if s <= offset < s + n)
        if self.encrypted:
            line_end = start + length - 1  # the line break
            original, flipped = base.data[start:line_end], damaged[start:line_end]
            if offset < line_end and base64.urlsafe_b64decode(original) == base64.urlsafe_b64decode(flipped):
                return "base64-unused-bits"
            return None
        rel = offset - start
        if rel < 26 or rel >= length - 8:
            return None  # header (under the CRC16) or trailer (CRC32, ISIZE): every bit matters
        try:
            same_output = zlib.decompress(damaged[start : start + length], wbits=31) == zlib.decompress(
                base.data[start : start + length], wbits=31
            )
        except zlib.error:
            return None
        if not same_output:
            return None
        return "deflate-final-padding" if rel == length - 9 else "deflate-same-output"

    # ---- writers on the damaged files

    def append_unrepaired(self, path: Path, damaged: bytes, load: Obs, out: dict[str, Any]) -> None:
        """`append_turn()` on the damaged file, by a fresh codec, without repair."""
        fail: list[str] = out["fail"]
        before = self.snapshot(path)
        codec = self.codec(path)
        append = observe(lambda: codec.append_turn(NEW_TURN))
        if append.error is not None or append.stray:
            if not is_codec_error(append.error) or append.stray:
                fail.append(f"append_turn() without repair: {describe(append)} {append.stray}")
            elif load.error is None:
                fail.append(f"append_turn() raises {describe(append)} on a file that loads")
            elif self.snapshot(path) != before:
                fail.append("append_turn() raised, but changed the files")
            out["tags"].append("append:refused")
            return
        after = read_all(self.codec(path), self.lasts[:1])
        fail += [f"after an append without repair: {f}" for f in self.agree(after, [*self.base.messages, *NEW_TURN])]
        got = after["load"]
        if load.error is not None:
            # Only the index let the append skip the damage (it reads the frames past the index, not before):
            # the damage must still be reported, and the new turn be there.
            if got.error is None:
                fail.append(f"append_turn() after damage hides it: load() gives {describe(got)}")
            elif not same(after[f"last={self.lasts[0]}"].value, NEW_TURN[-self.lasts[0] :]) and (
                after[f"last={self.lasts[0]}"].error is None
            ):
                fail.append("append_turn() after damage: the new turn is not last")
            out["tags"].append("append:after-undetected-damage")
            return
        if got.error is not None or got.torn or not same(got.value, [*load.value, *NEW_TURN]):
            fail.append(f"append_turn() without repair: then load() gives {describe(got)} torn={got.torn}")
        if load.torn:
            cut = self.unit_end(load.value)
            side = path.parent / f"c.jsonl.torn-{cut}"
            if not side.exists() or side.read_bytes() != damaged[cut:]:
                fail.append(f"the torn tail from byte {cut} is not in {side.name}")
            out["tags"].append("append:set-torn-aside")
        else:
            out["tags"].append("append:ok")
        out["tags"].append("index-after-append:" + self.index_state(after))

    def unit_end(self, messages: list[Any]) -> int:
        k = unit_prefix(messages, self.base)
        assert k is not None
        return self.base.units[k - 1].end if k else 0

    @staticmethod
    def index_state(reads: dict[str, Obs]) -> str:
        verify = reads["verify"]
        return "error" if verify.error is not None else verify.value.index.split(":")[0]

    def repair(
        self,
        damaged: bytes,
        idx: bytes,
        load: Obs,
        out: dict[str, Any],
        idx_damage: tuple[str, int, int] | None = None,
    ) -> None:
        """`repair()` by a fresh codec, then `verify()`, `load()`, an append."""
        fail: list[str] = out["fail"]
        path = self.place("q", damaged, idx, idx_damage)
        before = self.snapshot(path)
        codec = self.codec(path)
        repair = observe(codec.repair)
        if repair.error is not None or repair.stray:
            if not is_codec_error(repair.error) or repair.stray:
                fail.append(f"repair(): {describe(repair)} {repair.stray}")
            elif load.error is None:
                fail.append(f"repair() raises {describe(repair)} on a file that loads")
            elif self.snapshot(path) != before:
                fail.append("repair() raised, but changed the files")
            out["tags"].append(f"repair:refused:{error_name(repair.error) if repair.error else 'warning'}")
            return
        written = [Path(name).name for name in repair.value]
        reads = read_all(self.codec(path), self.lasts[:1])
        got = reads["load"]
        verify = reads["verify"]
        if verify.error is not None or not verify.value.ok:
            fail.append(f"after repair(), verify() gives {describe(verify)}")
        if got.error is not None or got.torn:
            fail.append(f"after repair(), load() gives {describe(got)} torn={got.torn}")
            return
        fail += [f"after repair(): {f}" for f in self.agree(reads, got.value)]
        if load.error is None and not load.torn:
            # A sound data file stays as it is, but that a whole last line gets its line break (as every writer
            # gives it); only an index that readers ignore is written again.
            after = self.snapshot(path)
            expected = {n: b for n, b in before.items() if not n.endswith(".idx")}
            if self.base.fmt != "gzip" and expected["c.jsonl"].strip() and not expected["c.jsonl"].endswith(b"\n"):
                expected["c.jsonl"] += b"\n"
            data_changed = {n: b for n, b in after.items() if not n.endswith(".idx")} != expected
            if written or data_changed or not same(got.value, load.value):
                fail.append(f"repair() of a sound file wrote {written} or changed it")
            if verify.value.index.startswith(("ignored", "wrong")):
                fail.append(f"after repair() of a sound file, its index is {verify.value.index}")
            tag = "repair:nothing-to-do"
        elif load.error is None:
            cut = self.unit_end(load.value)
            if written != [f"c.jsonl.torn-{cut}"] or (path.parent / written[0]).read_bytes() != damaged[cut:]:
                fail.append(f"repair() of a torn tail from byte {cut} wrote {written}")
            if not same(got.value, load.value):
                fail.append(f"repair() of a torn tail leaves {describe(got)}, not the whole turns before it")
            tag = "repair:set-torn-aside"
        else:
            if "c.jsonl.damaged" not in written or (path.parent / "c.jsonl.damaged").read_bytes() != damaged:
                fail.append(f"repair() of damage wrote {written}, not the damaged original as c.jsonl.damaged")
            if not subsequence(got.value, self.base.messages):
                fail.append(f"repair() leaves {describe(got)}: not a salvage of the original's messages")
            elif self.base.fmt != "plain" and not self.whole_units(got.value):
                fail.append(f"repair() leaves {describe(got)}: part of a frame")
            out["tags"].append(f"salvaged:{len(got.value)}")
            tag = "repair:rewritten"
        out["tags"].append(tag)
        append = observe(lambda: codec.append_turn(NEW_TURN))
        after = observe(self.codec(path).load)
        if append.error is not None or after.error is not None or after.torn:
            fail.append(f"append_turn() after repair(): {describe(append)}; then load(): {describe(after)}")
        elif not same(after.value, [*got.value, *NEW_TURN]):
            fail.append(f"append_turn() after repair(): load() gives {describe(after)}")

    def whole_units(self, messages: list[Any]) -> bool:
        """Whether `messages` are whole turns of the original, in order."""
        at = 0
        for unit in self.base.units:
            chunk = self.base.messages[unit.before : unit.before + unit.count]
            if same(messages[at : at + unit.count], chunk):
                at += unit.count
        return at == len(messages)

    def cached_append(self, state: list[Any], load: Obs, out: dict[str, Any]) -> None:
        """An append by a codec that wrote the last turn itself, before the damage."""
        target, kind, offset, bit = state[:4]
        base = self.base
        fail: list[str] = out["fail"]
        path = self.place("r", base.data_before_last, base.idx_before_last)
        idx_path = Path(str(path) + ".idx")
        codec = self.codec(path)
        with replayed_entropy(base.replay):
            codec.append_turn(TURNS[-1])
        if path.read_bytes() != base.data or idx_path.read_bytes() != index_for(base.idx, path.stat()):
            fail.append("the harness could not rebuild the file by replaying its last append")
            return
        victim = path if target == "data" else idx_path
        st = victim.stat()
        if kind == "cut":
            os.truncate(victim, offset)
        else:
            with open(victim, "r+b") as f:
                f.seek(offset)
                flipped = f.read(1)[0] ^ (1 << bit)
                f.seek(offset)
                f.write(bytes([flipped]))
            os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # bit rot: the cache cannot tell
        append = observe(lambda: codec.append_turn(NEW_TURN))
        if append.error is not None or append.stray:
            if not is_codec_error(append.error) or append.stray:
                fail.append(f"cached append_turn(): {describe(append)} {append.stray}")
            elif load.error is None and not load.torn:
                fail.append(f"cached append_turn() raises {describe(append)} on a file that loads")
            out["tags"].append("cached-append:refused")
            return
        reads = read_all(self.codec(path), self.lasts[:1])
        whole = [*base.messages, *NEW_TURN]
        fail += [f"after a cached append: {f}" for f in self.agree(reads, whole)]
        got = reads["load"]
        if load.error is None and not load.torn:
            if got.error is not None or got.torn or not same(got.value, [*load.value, *NEW_TURN]):
                fail.append(f"after a cached append, load() gives {describe(got)} torn={got.torn}")
            out["tags"].append("cached-append:ok")
        elif load.error is None and kind == "cut":
            if got.error is not None or got.torn or not same(got.value, [*load.value, *NEW_TURN]):
                fail.append(f"after a cached append to a cut file, load() gives {describe(got)} torn={got.torn}")
            out["tags"].append("cached-append:set-torn-aside")
        else:
            # Damage the cache could not see, now before the new turn: readers must still report it.
            if got.error is None:
                fail.append(f"a cached append over damage hides it: load() gives {describe(got)}")
            out["tags"].append("cached-append:after-damage-still-detected")
        if target == "idx":
            out["tags"].append("index-after-cached-append:" + self.index_state(reads))


# ============================================================================================ the child process


def worker(batch_file: str) -> int:
    """Runs a batch of states (a JSON file), printing one JSON line per state as it completes."""
    faulthandler.enable()
    batch = json.loads(Path(batch_file).read_text())
    base = Base.from_json(json.loads(Path(batch["base"]).read_text()))
    checker = Checker(base, Path(tempfile.mkdtemp(dir=batch["scratch"])))  # the parent removes it
    for i, state in batch["states"]:
        faulthandler.dump_traceback_later(STATE_TIMEOUT, exit=True)
        out = checker.run(state)
        faulthandler.cancel_dump_traceback_later()
        print(json.dumps({"i": i, **out}), flush=True)
    return 0


def run_batch(
    base_file: Path, folder: Path, scratch: str, states: list[tuple[int, list[Any]]]
) -> Iterator[dict[str, Any]]:
    """The outcomes of `states`, from child processes: one that dies is reported at the state it was at, and the
    rest of the batch goes on in a new child."""
    pending = list(states)
    crashes = 0
    while pending:
        batch_file = folder / f"batch-{pending[0][0]}.json"
        batch_file.write_text(json.dumps({"base": str(base_file), "scratch": scratch, "states": pending}))
        proc = subprocess.Popen(
            [sys.executable, "-m", f"torture.{NAME}", "--worker", str(batch_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=common.ROOT,
            env=common.env_with_package(),
            text=True,
        )
        done = set()
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            record = json.loads(line)
            done.add(record["i"])
            yield record
        stderr = proc.stderr.read()
        code = proc.wait()
        batch_file.unlink()
        pending = [(i, s) for i, s in pending if i not in done]
        if not pending:
            return
        i, _ = pending.pop(0)
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        crashes += 1
        yield {
            "i": i,
            "outcome": "child-died",
            "tags": [],
            "fail": [f"the child process died ({how}) on this state; its stderr ends: {stderr[-1500:]}"],
        }
        if crashes >= MAX_CRASHES:
            for i, _ in pending:
                yield {"i": i, "outcome": "not-run", "tags": [], "fail": ["not run: too many children died"]}
            return


# ============================================================================================ the suite


def main(argv: list[str] | None = None) -> int:
    p = common.parser(NAME, __doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="child processes at once")
    p.add_argument("--all-writers", action="store_true", help="try the writers on every state (slower)")
    p.add_argument("--only", default="", help="comma-separated states to run, e.g. data:flip:40:3,idx:cut:17")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    if argv is None:
        argv = sys.argv[1:]
    if "--worker" in argv:
        return worker(argv[argv.index("--worker") + 1])
    args = common.parse(p, argv)
    try:
        only = [parse_state(s) for s in args.only.split(",") if s.strip()]
    except ValueError as exc:
        p.error(str(exc))
    result = common.Result(NAME, args)
    with common.workdir(args, NAME) as work:
        for fmt in args.formats:
            run_format(fmt, args, work, only, result)
    return result.finish()


def group_of(state: list[Any]) -> str:
    return {"data": "", "idx": "idx_"}[state[0]] + {"cut": "truncations", "flip": "flips"}[state[1]]


def failure_kind(what: str) -> str:
    """A failure without its numbers, paths and values: what is the same across the states it happens in."""
    what = re.sub(r"(/\S+|\[\{.*|b'.*|\{.*)", "...", what.split("; its stderr")[0])
    return re.sub(r"\d+", "N", what)[:160]


def run_format(fmt: str, args: argparse.Namespace, work: Path, only: list[list[Any]], result: common.Result) -> None:
    started = time.monotonic()
    # One generator per format, so that a format's states do not depend on which other formats run.
    rng = random.Random(f"{args.seed}:{fmt}")
    base = build(fmt, work / fmt / "build", rng)
    states = only or plan(base, args.quick, args.all_writers, rng)
    base_file = work / fmt / "base.json"
    base_file.write_text(json.dumps(base.to_json()))
    numbered = list(enumerate(states))
    # One batch per job (--quick: few interpreters to start), or two (the jobs stay busy to the end).
    size = max(50, -(-len(numbered) // ((1 if args.quick else 2) * max(1, args.jobs))))
    batches = [numbered[i : i + size] for i in range(0, len(numbered), size)]
    outcomes: dict[str, Counter[str]] = {}
    tags: dict[str, Counter[str]] = {}  # what the writers did, per group of states
    kinds: Counter[str] = Counter()  # failures by what went wrong (numbers and paths left out)
    examples: dict[str, list[str]] = {}  # the states of the rarer outcomes, to look at
    salvaged = 0
    # The states' files on a RAM disk where there is one: each state writes and removes a dozen small files.
    scratch = tempfile.mkdtemp(prefix="torture-corruption-", dir=SCRATCH if os.access(SCRATCH, os.W_OK) else work)
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            done = list(pool.map(lambda b: list(run_batch(base_file, work / fmt, scratch, b)), batches))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for record in (r for records in done for r in records):
        state = states[record["i"]]
        outcomes.setdefault(group_of(state), Counter())[record["outcome"]] += 1
        if not record["outcome"].startswith(COMMON_OUTCOMES):
            listed = examples.setdefault(record["outcome"], [])
            if len(listed) < 24:
                listed.append(state_name(state))
        for tag in record["tags"]:
            if tag.startswith("salvaged:"):
                salvaged += int(tag.split(":")[1])
                tag = "salvaged"
            tags.setdefault(group_of(state), Counter())[tag] += 1
        for what in record["fail"]:
            kind = failure_kind(what)
            kinds[kind] += 1
            story = f"{fmt} {state_name(state)}: {what}  [replay: --formats {fmt} --only {state_name(state)}]"
            if kinds[kind] == 1:  # the first of each kind is printed; all are in the JSON result
                result.fail(story)
            else:
                result.failures.append(story)
    count = Counter(group_of(s) for s in states)
    result.figures[fmt] = {
        "file_bytes": len(base.data),
        "index_bytes": len(base.idx),
        "frames": len(base.frames),
        "messages": len(base.messages),
        "states": {g: count[g] for g in ("truncations", "flips", "idx_truncations", "idx_flips")},
        "outcomes": {g: dict(sorted(c.items())) for g, c in sorted(outcomes.items())},
        "rare_outcomes": examples,
        "tampered_as_DecryptionError": outcomes.get("flips", Counter())["tampered_as_DecryptionError"],
        "writers": {g: dict(sorted(c.items())) for g, c in sorted(tags.items())},
        "repair_salvaged_messages": salvaged,
        "failures": sum(kinds.values()),
        "failure_kinds": dict(kinds.most_common()),
        "seconds": round(time.monotonic() - started, 1),
    }
    figures = result.figures[fmt]
    print(f"[{NAME}] {fmt}: {len(states)} states, {figures['failures']} failures, {figures['seconds']} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
