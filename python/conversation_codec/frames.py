"""Frames: the units a conversation is stored in (docs/FORMAT.md, 1.2), independent of where they are stored.

A frame is a run of whole JSONL lines written together: a block of a save, or one appended turn. Stored, it is
the JSONL itself (plain), a gzip member (compressed), or a Fernet token line (encrypted; holding a gzip member
when also compressed). This module seals JSONL into stored frames, opens them back, and finds the whole frames in a
stretch of stored bytes, telling a torn end (a write cut short) from damage. It knows nothing of files or locks.

Two rules make a turn land whole or not at all, told from the stored bytes alone:
- plain: a turn of several messages starts with a TAB, and every line of it but the last ends with a TAB before
  its line break (JSON whitespace: every JSON reader ignores it). A line break after a TAB does not end a turn, and
  a last line without its line break that starts with a TAB is a turn cut short, so a turn cut anywhere is seen to
  be unfinished;
- gzip and encrypted: a turn is one member or one token, which is whole or detectably cut short. A frame of a
  turn of several messages says so (the top bit of the message count in its header, `TURN_FLAG`); the messages of
  any other frame (a block of a save, a member of another tool) are turns of one message each, as the lines of a
  plain file without TABs are.

An encrypted frame starts (inside the authenticated plaintext) with a header that binds it to its conversation
and its place in it: a random id per conversation, the number of messages before the frame and its own count. A
reader checks them as it goes, so frames cannot be dropped, reordered, duplicated or spliced in from elsewhere.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, Union

from . import _core, crypto
from .errors import CorruptFileError, DecryptionError, FormatMismatchError, UnencryptedFileError

__all__ = [
    "FERNET",
    "GZIP",
    "PLAIN",
    "Binding",
    "Framing",
    "Opened",
    "Record",
    "Scan",
    "kind_of",
    "last_turn",
    "last_turn_start",
    "mark_turn",
    "member_is_turn",
    "scan",
]

PLAIN = "plain"
GZIP = "gzip"
FERNET = "fernet"

# The JSONL in one frame of a save: small enough that the last messages of a long conversation are read (and
# decrypted) in about a millisecond, large enough that the per-frame costs (a token, an index record) vanish.
FRAME_BYTES = 128 << 10
# Compressed, frames are larger: deflate restarts with each member, and at 1 MiB the file is within 0.5% of
# compressing the whole JSONL at once (about 3% at 128 KiB); inflating one takes about a millisecond.
GZIP_FRAME_BYTES = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
# Frames compressed together, in parallel in Rust (GIL released): a few per core keep every core busy.
_BATCH = 4 * (os.cpu_count() or 1)
_WHITESPACE = b" \t\r\n"
# Every Fernet token starts with the version byte 0x80, which base64url writes as "gA"; no JSON text starts with
# "g" or 0x1F, so the first byte that is not whitespace tells the kind.
_TOKEN_START = ord("g")
_GZIP_START = 0x1F

# The header of an encrypted frame's plaintext: magic, conversation id, messages before, messages in the frame.
_BOUND = struct.Struct("<4s16sQI")
_BOUND_MAGIC = b"\x00CC\x01"
# The top bit of a frame header's message count (gzip member and encrypted header alike) marks a turn.
TURN_FLAG = _core.TURN_FLAG
ID_BYTES = 16

Stored = Union[bytes, memoryview, _core.Encoded]


class Record(NamedTuple):
    """Where one stored frame sits and which messages it holds: what the index keeps per frame."""

    offset: int
    length: int
    messages: int
    before: int
    crc: int

    @property
    def end(self) -> int:
        return self.offset + self.length

    @property
    def after(self) -> int:
        """The number of messages up to the end of this frame."""
        return self.before + self.messages


class Scan(NamedTuple):
    """The whole frames found in a stretch of stored bytes, and what follows them.

    `frames` are (offset, length, count); count is -1 for an encrypted frame (known once decrypted). `end` is where
    the whole frames end. Past it the stretch holds either nothing, a torn write (`torn`: a frame cut short at the
    end of the data), or `damage` (offset, reason): bytes that no write, whole or cut short, leaves.
    """

    frames: list[tuple[int, int, int]]
    end: int
    torn: bool
    damage: tuple[int, str] | None


class Opened(NamedTuple):
    """The JSONL of one stored frame, with its binding when it is an encrypted frame that has one."""

    jsonl: bytes
    conversation: bytes | None
    before: int | None
    messages: int | None
    turn: bool = False  # the frame is one turn (else each of its messages is one)


def kind_of(first: int | None) -> str | None:
    """The kind of stored data from its first byte that is not JSON whitespace (None: there is none)."""
    if first is None:
        return None
    if first == _GZIP_START:
        return GZIP
    return FERNET if first == _TOKEN_START else PLAIN


def first_byte(data: bytes) -> tuple[int, int] | None:
    """The offset and value of the first byte of `data` that is not JSON whitespace, or None."""
    stripped = len(data) - len(data.lstrip(_WHITESPACE))
    return None if stripped == len(data) else (stripped, data[stripped])


def mark_turn(jsonl: Stored) -> bytes:
    """Plain JSONL of a turn of several messages, with its TABs: one first, one before every line break but the
    last."""
    data = bytes(jsonl)
    return b"\t" + data[:-1].replace(b"\n", b"\t\n") + b"\n"


def last_turn_start(data: bytes) -> int:
    """Where the last turn of plain data starts: just past its last line break not preceded by a TAB (or 0)."""
    i = len(data)
    while (i := data.rfind(b"\n", 0, i)) >= 0:
        if i == 0 or data[i - 1] != 9:
            return i + 1
    return 0


def last_turn(turns: list[int], messages: int) -> int:
    """How many messages the last turns hold, taking turns (their sizes, in order) from the end until they hold at
    least `messages`: the length of the shortest tail that starts at a turn's start."""
    held = 0
    for size in reversed(turns):
        if held >= messages:
            break
        held += size
    return held


def member_is_turn(member: bytes) -> bool:
    """Whether a gzip member of ours is marked as one turn (section 1.3: the top bit of its message count)."""
    return ours(member) and int.from_bytes(member[20:24], "little") & TURN_FLAG != 0


def scan(kind: str, data: bytes, base: int, *, turns: bool = False) -> Scan:
    """The whole frames in `data`, stored bytes of `kind` that start at offset `base`, at a frame's start.

    Plain data has no frame marks: it is cut into frames of about FRAME_BYTES of whole turns, or, with `turns`,
    into single turns (so that damage costs only its own turn)."""
    if kind == PLAIN:
        plain, end, error = _core.scan_plain(data, base=base, target=1 if turns else FRAME_BYTES)
        if error is None and end == base + len(data) and data[-1:] not in (b"", b"\n"):
            start = last_turn_start(data)
            if data[start : start + 1] == b"\t" and data[start:].strip():  # a turn of several, cut short
                plain, end, error = _core.scan_plain(data[:start], base=base, target=1 if turns else FRAME_BYTES)
                end = base + start if error is None else end
        frames = [(offset, length, count) for offset, length, count, _ in plain]
        if error is not None:
            return Scan(frames, end, False, error)
        return Scan(frames, end, end < base + len(data), None)
    if kind == GZIP:
        members, stop = _core.scan_gzip(data, base=base)
        end = members[-1][0] + members[-1][1] if members else base
        if stop is None:
            return Scan(members, end, False, None)
        offset, truncated, reason = stop
        if truncated and not _member_cut_short(data[offset - base :]):
            truncated, reason = False, "a gzip member cut short whose header is not one this library writes"
        return Scan(members, end, truncated, None if truncated else (offset, reason))
    return _scan_tokens(data, base)


# The bytes every gzip member header of ours has (section 1.3), by position; FLG is 06 (04 in the first version's
# members, which have no CRC16) and XFL one of 00, 02, 04.
_MEMBER_HEADER = {0: 0x1F, 1: 0x8B, 2: 0x08, 4: 0, 5: 0, 6: 0, 7: 0, 9: 0xFF, 10: 12, 11: 0, 12: 0x43, 13: 0x43, 14: 8}
_MEMBER_HEADER[15] = 0


def ours(member: bytes) -> bool:
    """Whether a gzip member (or a frame starting with one) has a header this library writes, with its CRC16:
    such a member's data ends at a line break (the scan refuses one that does not)."""
    return len(member) >= 26 and member[3] == 0x06 and _member_cut_short(member[:26])


def _member_cut_short(tail: bytes) -> bool:
    """Whether `tail`, from a member's start to the end of the data, can be a member this library wrote, cut short
    by a write that did not complete: only that is a torn tail. A member of another tool, or one whose header a
    flipped bit changed, running past the end is damage."""
    if any(tail[i] != value for i, value in _MEMBER_HEADER.items() if i < len(tail)):
        return False
    if len(tail) > 3 and tail[3] not in (0x04, 0x06):
        return False
    if len(tail) > 8 and tail[8] not in (0x00, 0x02, 0x04):
        return False
    if len(tail) >= 26 and tail[3] == 0x06:
        return _core.crc32(tail[:24]) & 0xFFFF == int.from_bytes(tail[24:26], "little")
    return True


def _scan_tokens(data: bytes, base: int) -> Scan:
    frames: list[tuple[int, int, int]] = []
    start = 0
    while start < len(data):
        newline = data.find(b"\n", start)
        end = len(data) if newline < 0 else newline + 1
        line = data[start : newline if newline >= 0 else end].rstrip(b"\r")
        if line.strip(_WHITESPACE):
            if not crypto.is_one_token(line.strip(_WHITESPACE)):
                if newline < 0 and crypto.could_start_token(data[start:]):  # cut short
                    return Scan(frames, base + start, True, None)
                return Scan(frames, base + start, False, (base + start, "a line that is not one Fernet token"))
            if newline < 0 and (frames or base + start > 0):
                # Only the original design's one-token file lacks the final line break; a frame of ours without
                # it is an append cut short.
                return Scan(frames, base + start, True, None)
            frames.append((base + start, end - start, -1))
        start = end
    return Scan(frames, base + len(data), False, None)


class Block(NamedTuple):
    """Encoded JSONL to store as one frame, and whether it is one turn (which matters for a turn of several
    messages: section 1.2)."""

    jsonl: _core.Encoded
    turn: bool


def blocks(messages: Iterable[Any], frame_bytes: int, start: int = 0) -> Iterator[Block]:
    """`messages` as a save stores them: blocks of about `frame_bytes` of JSONL, each message a turn of its own.
    `start`: the position of the first message in the conversation, for the key path in errors."""
    return (Block(jsonl, False) for jsonl in _core.encode_chunks(messages, chunk_size=frame_bytes, start=start))


def turn_blocks(turns: Iterable[list[Any]], frame_bytes: int) -> Iterator[Block]:
    """`turns` (each a list of messages) as blocks that keep them: runs of one-message turns packed as `blocks`
    packs messages, and every turn of several a block of its own. Streamed: one turn is read ahead at most."""
    pending = iter(turns)
    several: list[Any] = []  # a turn of several messages, met while packing one-message turns
    position = 0

    def singles() -> Iterator[Any]:
        nonlocal several
        for turn in pending:
            if len(turn) == 1:
                yield turn[0]
            elif turn:
                several = turn
                return

    while True:
        for block in blocks(singles(), frame_bytes, position):
            position += block.jsonl.count
            yield block
        if not several:
            return
        yield Block(_core.encode_lines(several, start=position), True)
        position += len(several)
        several = []


class Framing:
    """How one codec stores JSONL: as it is, as gzip members, as Fernet tokens, or both; and what it accepts."""

    def scan(self, kind: str, data: bytes, base: int, *, turns: bool = False) -> Scan:
        """`scan()`, with the one judgement that needs the key: a last line without its line break that is a whole
        token (the key opens it) and one more byte is not a token cut short, but a token whose line break was
        altered."""
        found = scan(kind, data, base, turns=turns)
        if found.torn and kind == FERNET and self.cipher is not None:
            token = data[found.end - base : -1]
            if crypto.is_one_token(token) and crypto.opens(self.cipher, token):
                return found._replace(torn=False, damage=(found.end, "a Fernet token whose line break was altered"))
        return found

    def __init__(self, cipher: crypto.Cipher | None, compressed: bool = False, level: int = 6) -> None:
        self.cipher = cipher
        self.compressed = compressed
        self.level = level
        self.kind = FERNET if cipher is not None else GZIP if compressed else PLAIN
        self.frame_bytes = GZIP_FRAME_BYTES if compressed else FRAME_BYTES

    def seal(self, jsonl: Stored, count: int, *, before: int, conversation: bytes, turn: bool = False) -> Stored:
        """One frame of `count` messages stored: `before` messages precede it in the conversation `conversation`
        (the encrypted kind's id). A `turn` of several plain messages gets its TABs."""
        turn = turn and count > 1
        if self.compressed:
            jsonl = _core.gzip_member(bytes(jsonl), level=self.level, count=count, turn=turn)
        elif turn and self.cipher is None:
            jsonl = mark_turn(jsonl)
        if self.cipher is None:
            return jsonl
        return self._encrypt(jsonl, count, before, conversation, turn)

    def _encrypt(self, body: Stored, count: int, before: int, conversation: bytes, turn: bool = False) -> bytes:
        assert self.cipher is not None
        if count >= TURN_FLAG:
            raise ValueError(f"a frame of {count} messages (its header holds at most {TURN_FLAG - 1})")
        field = count | TURN_FLAG if turn else count
        plaintext = _BOUND.pack(_BOUND_MAGIC, conversation, before, field) + bytes(body)
        return self.cipher.encrypt(plaintext) + b"\n"

    def seal_all(self, blocks: Iterable[Block], conversation: bytes) -> Iterator[tuple[Stored, int]]:
        """Each block as a stored frame with its message count; compressed a batch at a time on all cores."""
        before = 0
        if not self.compressed:
            for jsonl, turn in blocks:
                count = jsonl.count
                yield self.seal(jsonl, count, before=before, conversation=conversation, turn=turn), count
                before += count
            return
        pending = iter(blocks)
        while batch := list(itertools.islice(pending, _BATCH)):
            counts = [b.jsonl.count for b in batch]
            turns = [b.turn and b.jsonl.count > 1 for b in batch]
            members = _core.gzip_members([bytes(b.jsonl) for b in batch], counts, level=self.level, turns=turns)
            for member, count, turn in zip(members, counts, turns):
                if self.cipher is None:
                    yield member, count
                else:
                    yield self._encrypt(member, count, before, conversation, turn), count
                before += count

    def open(self, stored: bytes, source: str, offset: int, *, body: bool = True) -> Opened:
        """The JSONL of the stored frame at `offset`: a token is decrypted, and a gzip member (inside one or not)
        inflated. Without `body`, an encrypted frame is only decrypted (authenticated) for its header: its JSONL
        is left as stored (maybe compressed)."""
        if self.cipher is None:
            if stored[:2] == _GZIP_MAGIC:
                return Opened(_core.gunzip(stored, base=offset, source=source), None, None, None)
            return Opened(stored, None, None, None)
        plaintext = crypto.decrypt(self.cipher, stored.strip(_WHITESPACE), source, offset)
        conversation = before = count = None
        turn = False
        if plaintext[:4] == _BOUND_MAGIC:
            if len(plaintext) < _BOUND.size:
                raise CorruptFileError(source, offset, "an encrypted frame's header is cut short")
            _, conversation, before, count = _BOUND.unpack_from(plaintext)
            turn, count = count >= TURN_FLAG, count & ~TURN_FLAG
            plaintext = plaintext[_BOUND.size :]
        if body and plaintext[:2] == _GZIP_MAGIC:
            plaintext = _core.gunzip(plaintext, base=0, source=f"{source} (frame at byte {offset})")
        return Opened(plaintext, conversation, before, count, turn)

    def check(self, kind: str | None, source: str, *, writing: bool) -> None:
        """Refuse stored data of a kind this codec must not read or extend."""
        if kind is None or kind == self.kind:
            return
        if self.cipher is not None:
            raise UnencryptedFileError(
                f"{source}: the file is {kind}, not encrypted, and this codec has a key: a codec with a key reads and "
                "extends only encrypted conversations, so that whoever can write the file cannot slip "
                "unauthenticated messages into it. To encrypt this conversation, call .encrypt() on this codec"
            )
        if kind == FERNET:
            action = "write to" if writing else "read"
            error = FormatMismatchError if writing else DecryptionError
            raise error(f"{source}: the file is {kind} (encrypted); pass fernet_key= to {action} it")
        if writing:
            raise FormatMismatchError(
                f"{source}: the file is {kind}, but this codec writes {self.kind}: "
                "open it with the options it was written with"
            )


class Binding:
    """Checks, frame after frame, that encrypted frames are in their place: same conversation, consecutive message
    numbers. Frames of the original design carry no header; one is accepted only as the very first frame."""

    def __init__(self, source: str, *, conversation: bytes | None = None, before: int | None = 0) -> None:
        self.source = source
        self.conversation = conversation
        self.before = before  # None: take the next frame's word for it (resuming after damage, in repair)
        self.first = before == 0 and conversation is None

    def check(self, opened: Opened, count: int, offset: int) -> None:
        """`count` is the number of messages the frame's JSONL holds."""
        if opened.before is None:
            if not self.first:
                raise CorruptFileError(
                    self.source, offset, "an encrypted frame without its header after the first frame"
                )
        else:
            if self.conversation is None:
                self.conversation = opened.conversation
            elif opened.conversation != self.conversation:
                raise CorruptFileError(self.source, offset, "an encrypted frame of another conversation")
            if self.before is None:
                self.before = opened.before
            elif opened.before != self.before:
                raise CorruptFileError(
                    self.source,
                    offset,
                    f"an encrypted frame out of place: it follows message {opened.before}, but {self.before} "
                    "messages precede it (frames dropped, duplicated or reordered)",
                )
            if opened.messages != count:
                raise CorruptFileError(
                    self.source, offset, f"an encrypted frame says it holds {opened.messages} messages, not {count}"
                )
        self.first = False
        self.before = (self.before or 0) + count
