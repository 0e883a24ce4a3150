"""The write operations the crash-state and I/O-error suites put under stress, each from a folder prepared for it.

A scenario is a folder in a known state (a conversation of several frames with its index, one with a torn tail, a
file of the original design, no file at all...) and one call on it (`save`, `append_turn`, `encrypt`, `pop` or
`pop_turn`), with what a reader must find afterwards: the `old` conversation (the call did not happen) or the `new`
one (it did, whole). After a pop cut short, that is once a writer has come (`repair()`): a gzip or encrypted pop
leaves its intent for the next writer (docs/FORMAT.md 3).
Everything random comes from the `random.Random` passed in.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conversation_codec import ConversationCodec

from .common import FORMATS, KEY

NAME = "conv.jsonl"
FERNET_FORMATS = ("fernet", "gzip+fernet")


@dataclass(frozen=True)
class Scenario:
    op: str  # "save", "append", "encrypt", "pop" or "pop_turn"
    what: str
    formats: tuple[str, ...] = tuple(FORMATS)
    big: bool = False  # saves several frames through the writer thread: slower, full runs only by default


SCENARIOS: dict[str, Scenario] = {
    "save-new": Scenario("save", "save() where no file is"),
    "save-new-folder": Scenario("save", "save() into a folder that does not exist yet"),
    "save-over": Scenario("save", "save() over a conversation of several frames with its index"),
    "save-over-torn": Scenario("save", "save() over a conversation whose last append was cut short"),
    "save-big": Scenario("save", "save() of several frames (the writer thread) over a conversation", big=True),
    "append": Scenario("append", "append_turn() of two messages to a conversation with its index"),
    "append-new": Scenario("append", "append_turn() where no file is"),
    "append-torn": Scenario("append", "append_turn() to a conversation whose last append was cut short"),
    "append-legacy": Scenario(
        "append", "append_turn() to a file of the original design (no final line break)", ("plain", "fernet")
    ),
    "encrypt": Scenario("encrypt", "encrypt() of a plain or gzip conversation", FERNET_FORMATS),
    "pop": Scenario("pop", "pop() of the last message of a turn of two (the other is written back)"),
    "pop-turn": Scenario("pop_turn", "pop_turn() of a turn of two (a cut)"),
}

_WORDS = ["hello", "world", "é", "ü", "漢字", "🙂", "tab\there", "line\nbreak", 'quote"', "back\\slash", "\u2028", "0"]


def message(rng: random.Random, size: int = 60) -> dict[str, Any]:
    words = []
    while sum(len(w) + 1 for w in words) < size:
        words.append(rng.choice(_WORDS) if rng.random() < 0.3 else "".join(rng.choices("abcdefghij klmnop", k=8)))
    return {"role": rng.choice(["user", "assistant", "tool"]), "content": " ".join(words), "n": rng.randrange(10**6)}


def messages(rng: random.Random, count: int, size: int = 60) -> list[dict[str, Any]]:
    return [message(rng, rng.randrange(size // 2, size * 2)) for _ in range(count)]


def codec(fmt: str, path: Path, *, durable: bool = False) -> ConversationCodec:
    return ConversationCodec(path, **FORMATS[fmt], durable=durable)


def unencrypted(fmt: str) -> str:
    """The format an `encrypt()` scenario starts from."""
    return "gzip" if fmt == "gzip+fernet" else "plain"


def reader(fmt: str, path: Path, op: str) -> ConversationCodec:
    """A fresh codec that can read what the scenario's file holds now: for `encrypt`, the file is either still
    unencrypted (needing a codec without a key) or encrypted."""
    if op == "encrypt" and not is_encrypted(path):
        return codec(unencrypted(fmt), path)
    return codec(fmt, path)


def is_encrypted(path: Path) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    stripped = data.lstrip(b" \t\r\n")
    return stripped[:1] == b"g"


@dataclass
class Prepared:
    """A scenario's folder, ready for its call."""

    scenario: str
    fmt: str
    root: Path
    rel: str  # the conversation's path inside root
    old: list[Any]
    new: list[Any]
    payload: Any  # the messages to save, or the turn to append
    torn: bytes | None  # the torn tail the folder holds before the call (which must never be lost)

    @property
    def path(self) -> Path:
        return self.root / self.rel

    @property
    def op(self) -> str:
        return SCENARIOS[self.scenario].op

    def run(self, target: ConversationCodec | None = None, *, durable: bool = True) -> None:
        """The scenario's call, through `target` or a fresh codec."""
        c = target if target is not None else codec(self.fmt, self.path, durable=durable)  # bool() would len()
        if self.op == "save":
            c.save(self.payload)
        elif self.op == "append":
            c.append_turn(self.payload)
        elif self.op == "pop":
            c.pop()
        elif self.op == "pop_turn":
            c.pop_turn()
        else:
            c.encrypt()

    def outcome(self, got: list[Any], encrypted: bool | None = None) -> str:
        """ "old", "new", or how it is neither: "empty", "partial" (a prefix of old or new), "other"."""
        if self.op == "encrypt":
            if got == self.old:
                return "new" if encrypted else "old"
            return "other"
        if got == self.new:
            return "new"
        if got == self.old:
            return "old"
        if not got:
            return "empty"
        if got == self.new[: len(got)] or got == self.old[: len(got)]:
            return "partial"
        return "other"

    def torn_kept(self) -> bool:
        """Whether the torn tail the folder held is still somewhere: at the end of the file or in a side file."""
        if self.torn is None:
            return True
        try:
            if self.path.read_bytes().endswith(self.torn):
                return True
        except OSError:
            pass
        return any(p.read_bytes() == self.torn for p in self.path.parent.glob(self.path.name + ".torn-*"))

    def manifest(self) -> dict[str, Any]:
        """What a parent process needs to judge the folder after the call (the conversations by digest: they can
        be megabytes, and a traced child's every write is in the trace)."""
        return {
            "scenario": self.scenario,
            "fmt": self.fmt,
            "rel": self.rel,
            "old": digest(self.old),
            "new": digest(self.new),
            "torn": None if self.torn is None else self.torn.hex(),
        }

    @classmethod
    def from_manifest(cls, root: Path, m: dict[str, Any], old: list[Any], new: list[Any]) -> Prepared:
        torn = None if m["torn"] is None else bytes.fromhex(m["torn"])
        return cls(m["scenario"], m["fmt"], root, m["rel"], old, new, None, torn)


def digest(conversation: list[Any]) -> str:
    return hashlib.sha256(json.dumps(conversation, sort_keys=True).encode()).hexdigest()


def quiet_load(c: ConversationCodec) -> list[Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return c.load()


def _conversation(fmt: str, path: Path, rng: random.Random) -> list[Any]:
    """A conversation of three frames (a save and two appends), so that it has an index."""
    c = codec(fmt, path)
    first = messages(rng, rng.randrange(2, 6))
    c.save(first)
    single = message(rng)
    c.append_turn(single)
    pair = messages(rng, 2)
    c.append_turn(pair)
    return [*first, single, *pair]


def _tear(fmt: str, path: Path, rng: random.Random) -> bytes:
    """Appends a turn and cuts it short, as a process killed mid-append leaves it (its index is as before the
    append: the record comes after the data). Returns the torn bytes."""
    index = Path(str(path) + ".idx")
    saved = index.read_bytes() if index.exists() else None
    start = path.stat().st_size
    codec(fmt, path).append_turn(messages(rng, 2))
    frame = path.read_bytes()[start:]
    for _ in range(100):
        cut = rng.randrange(1, len(frame) - 1)
        with open(path, "r+b") as f:
            f.truncate(start + cut)
        if saved is not None:
            index.write_bytes(saved)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = codec(fmt, path).verify()
        if report.torn_tail_bytes == cut and not report.errors:
            return frame[:cut]
        with open(path, "ab") as f:  # not torn (a whole line): put the frame back and cut elsewhere
            f.truncate(start)
            f.write(frame)
    raise AssertionError("no cut of the frame makes a torn tail")


def _legacy(fmt: str, path: Path, rng: random.Random) -> list[Any]:
    """A file as the original design wrote it: JSONL without its final line break, or one Fernet token."""
    msgs = messages(rng, rng.randrange(2, 5))
    jsonl = "\n".join(json.dumps(m) for m in msgs).encode()
    if fmt == "fernet":
        from cryptography.fernet import Fernet

        path.write_bytes(Fernet(KEY).encrypt(jsonl + b"\n"))
    else:
        path.write_bytes(jsonl)
    os.chmod(path, 0o600)
    return msgs


def prepare(scenario: str, fmt: str, root: Path, rng: random.Random, *, big_bytes: int = 0) -> Prepared:
    """Builds the scenario's folder `root` (created, empty) and returns what its call is to do."""
    root.mkdir(parents=True, exist_ok=True)
    rel = "sub/" + NAME if scenario == "save-new-folder" else NAME
    path = root / rel
    old: list[Any] = []
    torn = None
    if scenario in ("save-over", "save-over-torn", "save-big", "append", "append-torn", "pop", "pop-turn"):
        old = _conversation(fmt, path, rng)
    if scenario in ("save-over-torn", "append-torn"):
        torn = _tear(fmt, path, rng)
    if scenario == "append-legacy":
        old = _legacy(fmt, path, rng)
    if scenario == "encrypt":
        old = _conversation(unencrypted(fmt), path, rng)
    op = SCENARIOS[scenario].op
    if op == "save":
        if scenario == "save-big":
            count = max(2, big_bytes // 1000)
            payload: Any = messages(rng, count, size=1000)
        else:
            payload = messages(rng, rng.randrange(2, 6))
        new = list(payload)
    elif op == "append":
        payload = messages(rng, 1 if scenario in ("append-new", "append-torn") else 2)
        new = old + payload
    elif op.startswith("pop"):
        payload = None
        new = old[:-1] if op == "pop" else old[:-2]  # the conversation ends with a turn of two
    else:
        payload = None
        new = list(old)
    return Prepared(scenario, fmt, root, rel, old, new, payload, torn)


def big_bytes(fmt: str) -> int:
    """JSONL enough for three frames of a save in this format (frames are 128 KiB of JSONL, 1 MiB compressed): the
    save then goes through the writer thread."""
    frame = 1 << 20 if "gzip" in fmt else 128 << 10
    return 2 * frame + frame // 8


def clone(src: Path, dst: Path) -> None:
    """Copies a prepared folder. Its index names the data file by (device, inode), which the copy does not keep:
    the copy's index is made to name the copy, so that it is used as the original's was."""
    shutil.copytree(src, dst)
    for index in dst.rglob("*.idx"):
        data_src = src / index.relative_to(dst).with_suffix("")
        data_dst = index.with_suffix("")
        content = index.read_bytes()
        if len(content) < 28 or not data_src.exists() or not data_dst.exists():
            continue
        st = data_src.stat()
        if struct.unpack_from("<QQ", content, 8) != (st.st_ino, st.st_dev):
            continue
        new = data_dst.stat()
        header = content[:8] + struct.pack("<QQ", new.st_ino, new.st_dev)
        index.write_bytes(header + struct.pack("<I", zlib.crc32(header)) + content[28:])
