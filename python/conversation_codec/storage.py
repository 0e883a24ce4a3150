"""The storage layer: one conversation's frames in one data file, read without locks and written under one.

The rules, all of them here:

- **The data file alone is the conversation.** Its whole frames are the acknowledged messages; bytes after them
  that do not make a whole frame are a *torn tail*, a write that did not complete (frames.scan tells it from
  damage). The index (index.py) is a cache that only speeds up finding frames.
- **Readers never wait and never write.** They take the file's size and read whole frames up to it; a torn tail
  is left out, with a `TornTailWarning` unless a writer holds the lock right now (then it is a write in progress).
  Damage anywhere else is a `CorruptFileError` naming the byte offset.
- **Writers hold the writer lock** (files.WriterLock) for their whole operation. Before writing, a writer makes
  the file end with a whole frame: a torn tail is moved to a side file `<name>.torn-<offset>` (nothing is ever
  deleted) and cut off. An encrypted conversation's key is proven (its last frame decrypted) before anything is
  written. A failed append is cut back off before the error is raised. Only a lock holder writes the index, and a
  failure to write it never fails the write.
- A writer remembers what it left (identity, size, modification time, message count): when the next write finds
  the file exactly so, nothing needs to be read again. That is what makes an append cost the same whatever the
  conversation's length.
"""

from __future__ import annotations

import errno
import gzip
import os
import struct
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import _core, files
from .errors import CodecError, CorruptFileError, DecryptionError, TornTailWarning
from .frames import (
    FERNET,
    GZIP,
    PLAIN,
    Binding,
    Block,
    Framing,
    Record,
    Scan,
    first_byte,
    kind_of,
    last_turn,
    last_turn_start,
    member_is_turn,
    ours,
    scan,
    turn_blocks,
)
from .index import Identity, Index

__all__ = ["FileStore", "Report"]

_READ_BLOCK = 4 << 20
_HEAD = 4096  # bytes read first to tell a file's kind
_BACK = 64 << 10  # bytes read at a time when looking back for the last whole turn
_TAB_NEWLINE = b"\t\n"
_ALTERED = "an encrypted frame fails authentication under the key that opens the rest of the file: it was altered"
_KEY_WINDOW = 4 << 20  # bytes read at each end of a file to find a frame to try a key on
# A pop that replaces the last frame first keeps what it replaces in `<name>.pop` (an undo log): where the file is
# cut, the CRC-32 of the bytes just before the cut (which file it is: an inode is not kept by a copy or a restore),
# the lengths of the bytes from the cut on (the old ones) and of the frame that replaces them, the CRC-32 of what
# follows, then the old bytes and the frame.
PENDING = ".pop"
_UNDO = struct.Struct("<QIQQI")
_BEFORE = 4096  # bytes before the cut that identify the file


@dataclass
class Report:
    """What `verify()` found. `ok` is true when every frame reads back and nothing is torn or damaged."""

    ok: bool
    messages: int
    frames: int
    torn_tail_bytes: int
    errors: list[tuple[int, str]] = field(default_factory=list)
    index: str = "none"  # "none", "sound" or what is wrong with it
    turns: int = 0  # what `pop_turn()` would take off one at a time (docs/FORMAT.md 1.2)


class View(NamedTuple):
    """The data file open for reading, as it was when opened: its size, identity and kind."""

    fd: int
    size: int
    identity: Identity
    kind: str
    start: int  # the first byte that is not whitespace


class Head(NamedTuple):
    """Where a file's frames start, and its kind (frames.PLAIN, GZIP or FERNET)."""

    start: int
    kind: str


class Sound(NamedTuple):
    """The index's last record, vouched for by its frame's CRC; the index's size; that frame's stored bytes."""

    record: Record
    index_size: int
    frame: bytes


class Known(NamedTuple):
    """What a writer left the file as, so that its next write need not read it again."""

    identity: Identity
    size: int
    mtime: int
    messages: int
    conversation: bytes
    index_size: int
    records: list[Record] | None  # every frame's record, while the file has no index yet


class FileStore:
    """One conversation stored in the data file at `path` (and its index beside it)."""

    def __init__(self, path: str, framing: Framing, *, durable: bool) -> None:
        self.path = path
        self.framing = framing
        self.durable = durable
        self.index = Index(path)
        self._known: Known | None = None

    def _real(self) -> str:
        """The file a writer locks and replaces: the one `path` names, when `path` is a symbolic link."""
        return os.path.realpath(self.path) if os.path.islink(self.path) else self.path

    # ================================================================================================ reading

    @contextmanager
    def reading(self) -> Iterator[View | None]:
        """The data file open for reading, or None when it is missing or holds no frame."""
        try:
            fd, st = files.open_regular(self.path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            yield None
            return
        try:
            head = self._head(fd, st.st_size)
            if head is None:
                yield None
                return
            kind = head.kind
            self.framing.check(kind, self.path, writing=False)
            try:
                yield View(fd, st.st_size, (st.st_dev, st.st_ino), kind, head.start)
            except DecryptionError as exc:
                raise self._judged(exc, fd, st.st_size, head.start) from None
        finally:
            os.close(fd)

    def _judged(self, exc: DecryptionError, fd: int, size: int, start: int) -> CodecError:
        """What a frame the key does not open means: if the key opens another frame of the file, the frame was
        altered (CorruptFileError naming it); if it opens none, the key is wrong (DecryptionError). The first and
        the last frame are tried: a file altered in every frame reads as a wrong key."""
        if exc.offset is None:
            return exc
        opens = None
        for offset, stored in _first_and_last_frames(fd, size, start):
            if offset == exc.offset:
                continue
            try:
                self.framing.open(stored, self.path, offset, body=False)
            except DecryptionError:
                opens = False
                continue
            except CodecError:
                pass  # decrypted: the key is proven, whatever is wrong with that frame's header
            return CorruptFileError(self.path, exc.offset, _ALTERED)
        if opens is None:
            return exc  # the file's only frame: a wrong key or an altered frame, nothing tells them apart
        wrong = type(exc)(f"{self.path}: cannot decrypt: wrong key (it opens none of the file's frames)")
        wrong.offset = exc.offset
        return wrong

    @staticmethod
    def _head(fd: int, size: int) -> Head | None:
        """Where the file's frames start, and its kind (None: an empty or blank file). Frames of tokens and gzip
        members start at the first byte that is not whitespace; plain JSONL at byte 0, since whitespace before a
        line (a turn's TAB) is part of it."""
        offset, block = 0, _HEAD
        while offset < size:
            data = os.pread(fd, min(block, size - offset), offset)
            if not data:
                return None
            found = first_byte(data)
            if found is not None:
                kind = kind_of(found[1])
                assert kind is not None
                return Head(0 if kind == PLAIN else offset + found[0], kind)
            offset += len(data)
            block = _READ_BLOCK
        return None

    def load(self, view: View) -> list[Any]:
        """Every acknowledged message. Plain JSONL streams through one decoder in blocks (the fast path)."""
        if view.kind == PLAIN:
            end = self._plain_end(view)
            decoder = _core.LineDecoder(source=self.path)
            messages: list[Any] = []
            for chunk in _blocks(view.fd, 0, end):
                messages += decoder.feed(chunk)
            messages += decoder.finish()
            return messages
        data = files.read_at(view.fd, view.size - view.start, view.start)
        found = self._scan(view, data, view.start)
        return self._decode(view.kind, data, view.start, found.frames, Binding(self.path))

    def tail(self, view: View, last: int, *, whole_turns: bool = False) -> list[Any]:
        """The last `last` messages (with `whole_turns`, from the start of the turn that holds the first of them):
        through the index when it is sound (reading only the frames that hold them), else from the whole file.
        The index's frames hold whole turns, so the turn that holds the first message is among them."""
        records = self.index.tail(view.identity, view.size, last)
        if records is not None:
            start = records[0].offset
            data = files.read_at(view.fd, view.size - start, start)
            if _crcs_match(data, start, records):
                binding = Binding(self.path, before=records[0].before)
                if whole_turns and view.kind == PLAIN:  # a plain frame may hold many turns: cut it into turns
                    frames = self._scan(view, data, start, turns=True).frames
                else:
                    past = records[-1].end
                    found = self._scan(view, data[past - start :], past)
                    frames = [(r.offset, r.length, r.messages) for r in records] + found.frames
                return self._last(view.kind, data, start, frames, binding, last, whole_turns)
        if not whole_turns:
            return self.load(view)[-last:]
        data = files.read_at(view.fd, view.size - view.start, view.start)
        frames = self._scan(view, data, view.start, turns=True).frames
        return self._last(view.kind, data, view.start, frames, Binding(self.path), last, whole_turns)

    def _last(
        self,
        kind: str,
        data: bytes,
        base: int,
        frames: list[tuple[int, int, int]],
        binding: Binding,
        last: int,
        whole_turns: bool,
    ) -> list[Any]:
        turns: list[int] | None = [] if whole_turns else None
        messages = self._decode(kind, data, base, frames, binding, turns)
        return messages[-(last if turns is None else last_turn(turns, last)) :]

    def _sound_last(self, fd: int, identity: Identity, size: int) -> Sound | None:
        """The index's last record, when the index is this file's and the record's frame has the CRC it says: the
        one test every use of the index starts from."""
        found = self.index.last(identity, size)
        if found is None:
            return None
        last, index_size = found
        frame = files.read_at(fd, last.length, last.offset)
        return Sound(last, index_size, frame) if _core.crc32(frame) == last.crc else None

    def count(self, view: View) -> int:
        """The number of messages, as `len(load())` would give it: the index's count, vouched for by its last
        frame's CRC (and, encrypted, by decrypting that frame), plus the frames past the index's end, scanned and
        validated; or all frames, scanned, without a sound index."""
        before, start = 0, view.start
        sound = self._sound_last(view.fd, view.identity, view.size)
        if sound is not None:
            last = sound.record
            before, start = last.after, last.end
            if view.kind == FERNET:  # the index must not answer for a key that cannot read the file
                self._count_frame(sound.frame, last.offset, Binding(self.path, before=last.before))
        data = files.read_at(view.fd, view.size - start, start)
        found = self._scan(view, data, start)
        if view.kind != FERNET:
            return before + sum(count for _, _, count in found.frames)
        binding = Binding(self.path, before=before)
        for offset, length, _ in found.frames:
            self._count_frame(data[offset - start : offset - start + length], offset, binding)
        return binding.before or 0

    def iterate(self, view: View, *, turns: bool = False) -> Iterator[Any]:
        """The messages one at a time (with `turns`, the turns one at a time, each the list of its messages); memory
        is bounded by a read block and the largest frame."""
        if view.kind == PLAIN and not turns:
            end = self._plain_end(view)
            decoder = _core.LineDecoder(source=self.path)
            for chunk in _blocks(view.fd, 0, end):
                yield from decoder.feed(chunk)
            yield from decoder.finish()
            return
        binding = Binding(self.path)
        pending, base = b"", view.start
        offset = view.start
        while True:
            # A frame larger than a block (the original's one-token file, a foreign gzip member) is read in
            # growing blocks, so that it is scanned a bounded number of times.
            want = min(max(_READ_BLOCK, len(pending)), view.size - offset)
            block = os.pread(view.fd, want, offset) if want > 0 else b""
            offset += len(block)
            at_end = offset >= view.size or not block
            pending = pending + block if pending else block
            # Before the end, only whole lines: a token or a plain line cut by the block could look like a whole one.
            ready = pending if at_end or view.kind == GZIP else pending[: pending.rfind(b"\n") + 1]
            found = self.framing.scan(view.kind, ready, base)
            if found.damage is not None or at_end:
                found = self._checked(view, found, base + len(pending))
            for frame in found.frames:  # a frame at a time: a block of gzip may inflate to far more than a block
                if not turns:
                    yield from self._decode(view.kind, pending, base, [frame], binding)
                    continue
                frames = [frame]
                if view.kind == PLAIN:  # a plain frame holds whole turns: its own scan finds them
                    at, length, _ = frame
                    frames = scan(PLAIN, pending[at - base : at - base + length], at, turns=True).frames
                sizes: list[int] = []
                yield from by_turn(self._decode(view.kind, pending, base, frames, binding, sizes), sizes)
            pending, base = pending[found.end - base :], found.end
            if at_end:
                return

    def _decode(
        self,
        kind: str,
        data: bytes,
        base: int,
        frames: list[tuple[int, int, int]],
        binding: Binding,
        turns: list[int] | None = None,
    ) -> list[Any]:
        """The messages of `frames`, whole frames found in `data` (which starts at offset `base`). The sizes of the
        turns they make are added to `turns`, if given: a plain frame is then one turn (scanned with `turns`), a
        frame of another kind one turn if it says so (frames.TURN_FLAG), else as many as it holds messages."""
        if not frames:
            return []
        start, end = frames[0][0] - base, frames[-1][0] + frames[-1][1] - base
        stretch = data[start:end] if (start, end) != (0, len(data)) else data
        source = self.path if frames[0][0] == 0 else f"{self.path} (from byte {frames[0][0]})"
        if kind == FERNET:
            messages: list[Any] = []
            for offset, length, _ in frames:
                messages += self._open_counted(data[offset - base : offset - base + length], offset, binding, turns)
            return messages
        if kind == PLAIN:
            messages = _core.decode_lines(stretch, source=source)
        else:
            messages = _core.decode_lines(_core.gunzip(stretch, base=frames[0][0], source=self.path), source=source)
        if turns is not None:
            for offset, _, count in frames:
                if kind == PLAIN or member_is_turn(data[offset - base : offset - base + 26]):
                    turns += [count] if count else []  # blank lines are no turn
                else:
                    turns += [1] * count
        return messages

    def _count_frame(self, stored: bytes, offset: int, binding: Binding) -> int:
        """The number of messages of one encrypted frame, checked to be in its place: its authenticated header
        says it, so nothing is inflated or parsed (but in a frame of the original design, which has none)."""
        opened = self.framing.open(stored, self.path, offset, body=False)
        if opened.messages is None:
            return len(self._open_counted(stored, offset, binding))
        binding.check(opened, opened.messages, offset)
        return opened.messages

    def _open_counted(self, stored: bytes, offset: int, binding: Binding, turns: list[int] | None = None) -> list[Any]:
        """The messages of one encrypted frame, checked to be in its place (its turns added to `turns`)."""
        opened = self.framing.open(stored, self.path, offset)
        messages = _core.decode_lines(opened.jsonl, source=f"{self.path} (frame at byte {offset})")
        binding.check(opened, len(messages), offset)
        if turns is not None:
            turns += [len(messages)] if opened.turn and messages else [1] * len(messages)
        return messages

    def _scan(self, view: View, data: bytes, base: int, *, turns: bool = False) -> Scan:
        return self._checked(view, self.framing.scan(view.kind, data, base, turns=turns), base + len(data))

    def _checked(self, view: View, found: Scan, end: int) -> Scan:
        """`found`, once damage is raised and a torn tail (up to `end`) reported."""
        if found.damage is not None:
            offset, reason = found.damage
            raise CorruptFileError(self.path, offset, reason)
        if found.torn:
            self._report_torn(view, found.end, end)
        return found

    def _report_torn(self, view: View, at: int, end: int) -> None:
        # A write in progress is not torn: a writer holds the lock now, or one did since the file was read (it
        # then finished the write, or cut it back off, and the size moved). Either way it was never acknowledged.
        if files.writer_active(view.fd) or os.fstat(view.fd).st_size != view.size:
            return
        warnings.warn(
            TornTailWarning(
                f"{self.path}: the last {end - at} bytes (from byte {at}) are a write that did not complete; "
                "they are left out (the next write, or repair(), sets them aside)"
            ),
            stacklevel=5,
        )

    def _plain_end(self, view: View) -> int:
        """Where the whole turns of a plain file end (reporting a torn tail after them)."""
        boundary, whole = _plain_tail(view.fd, view.size)
        if whole == view.size > boundary:
            # A last line without its line break that is whole: written by hand, or by a writer still at work.
            return boundary if files.writer_active(view.fd) else whole
        if boundary < view.size:
            self._report_torn(view, boundary, view.size)
        return boundary

    # ================================================================================================ writing

    def append(self, jsonl: _core.Encoded) -> None:
        with files.WriterLock(self.path, create=True) as lock:
            assert lock is not None
            known = self._prepare_judged(lock)
            if known.size == 0:
                # A file comes into being whole, as a save makes it (a temporary file, flushed, renamed into place,
                # the folder flushed): a first frame cut short would read as the original design's one token under
                # a wrong key, and the new name must reach the disk too.
                real = self._real()
                self._replace_locked(lock, real, [Block(jsonl, True)])
                return
            count = jsonl.count
            frame = self.framing.seal(jsonl, count, before=known.messages, conversation=known.conversation, turn=True)
            try:
                files.write_all(lock.fd, frame)
                if self.durable:
                    files.flush(lock.fd)
            except BaseException:
                # Whatever part reached the file is cut back off: no reader ever sees a torn tail of ours.
                with suppress(OSError):
                    os.ftruncate(lock.fd, known.size)
                self._known = None
                raise
            record = Record(known.size, len(frame), count, known.messages, _core.crc32(frame))
            self._remember(lock, known, [record])

    def _remember(self, lock: files.WriterLock, known: Known, added: list[Record]) -> None:
        """Brings the index up to date with the records `added` after `known`, and remembers the file."""
        index_size, records = known.index_size, known.records
        if index_size:
            index_size = self.index.extend(lock, index_size, added)
            records = None
        elif records is not None:
            records = records + added
            index_size = self.index.write(lock, known.identity, records)
            if index_size:
                records = None
        st = os.fstat(lock.fd)
        self._known = Known(
            known.identity,
            st.st_size,
            st.st_mtime_ns,
            known.messages + sum(r.messages for r in added),
            known.conversation,
            index_size,
            records,
        )

    def _prepare_judged(self, lock: files.WriterLock) -> Known:
        try:
            return self._prepare(lock)
        except DecryptionError as exc:
            head = self._head(lock.fd, lock.st.st_size)
            raise self._judged(exc, lock.fd, lock.st.st_size, head.start if head else 0) from None

    def _prepare(self, lock: files.WriterLock) -> Known:
        """What the locked file holds, once it ends with a whole frame and its key is proven: the lock holder's
        view of the file before it writes."""
        st = lock.st
        identity = (st.st_dev, st.st_ino)
        known = self._known
        if known is not None and (known.identity, known.size, known.mtime) == (identity, st.st_size, st.st_mtime_ns):
            return known
        self._known = None
        if self._undo_pop(lock):
            st = lock.st = os.fstat(lock.fd)
        size = st.st_size
        head = self._head(lock.fd, size)
        if head is None:
            return Known(identity, size, st.st_mtime_ns, 0, os.urandom(16), 0, [])
        kind = head.kind
        self.framing.check(kind, self.path, writing=True)
        before, start, index_size, records = 0, head.start, 0, []
        sound = self._sound_last(lock.fd, identity, size)
        if sound is not None:
            before, start, index_size = sound.record.after, sound.record.end, sound.index_size
        data = files.read_at(lock.fd, size - start, start)
        found = self.framing.scan(kind, data, start)
        if found.damage is not None:
            offset, reason = found.damage
            raise CorruptFileError(self.path, offset, f"{reason}; nothing was written (repair() can mend it)")
        conversation: bytes | None = None
        binding = Binding(self.path, before=before)
        if kind == FERNET and sound is not None and not found.frames:
            # The index vouches for the count; the key is proven on the last frame, which also gives the id.
            proof = Binding(self.path, before=sound.record.before)
            self._count_frame(sound.frame, sound.record.offset, proof)
            conversation = proof.conversation
        for offset, length, count in found.frames:
            stored = data[offset - start : offset - start + length]
            if kind == FERNET:
                count = self._count_frame(stored, offset, binding)
            records.append(Record(offset, length, count, before, _core.crc32(stored)))
            before += count
        if kind == FERNET and found.frames:
            conversation = binding.conversation
        if found.torn:
            size, _ = self._set_aside(lock, found.end, size)
        else:
            size += self._end_last_line(lock, kind, records, data, start)
        mtime = os.fstat(lock.fd).st_mtime_ns
        known = Known(identity, size, mtime, before, conversation or os.urandom(16), index_size, None)
        if index_size:
            if records:
                index_size = self.index.extend(lock, index_size, records)
            return known._replace(index_size=index_size)
        return known._replace(records=records)

    def _end_last_line(self, lock: files.WriterLock, kind: str, records: list[Record], data: bytes, base: int) -> int:
        """A whole last line without its line break (written by hand, by another gzip tool, or the original
        design's one token) gets one, as part of its frame: `records[-1]` (the file's last frame, in `data` from
        offset `base`) is updated. No record of an index may end before that line break, or the next append would
        join that line. Returns the number of bytes written."""
        if not records:
            return 0
        last = records[-1]
        stored = data[last.offset - base : last.end - base]
        if kind == GZIP:
            # Members of ours end at a line break (the scan refuses one that does not); another tool's may not.
            if ours(stored) or _core.gunzip(stored, base=last.offset, source=self.path).endswith(b"\n"):
                return 0
            ending = gzip.compress(b"\n", mtime=0)  # a member of another tool's kind: it may end a cut line
        elif stored.endswith(b"\n"):
            return 0
        else:
            ending = b"\n"
        files.write_all(lock.fd, ending)
        stored += ending
        records[-1] = last._replace(length=len(stored), crc=_core.crc32(stored))
        return len(ending)

    def _set_aside(self, lock: files.WriterLock, cut: int, size: int) -> tuple[int, str]:
        """Moves the bytes from `cut` to the end into a side file `<name>.torn-<cut>`, then cuts them off."""
        torn = files.read_at(lock.fd, size - cut, cut)
        name = files.side_file(self.path, f".torn-{cut}", torn, durable=self.durable)
        os.ftruncate(lock.fd, cut)
        if self.durable:
            files.flush(lock.fd)
        return cut, name

    # ---- pop and fork: the last turn taken off, the conversation copied ------------------------------------------

    def pop(self, *, turn: bool) -> list[Any]:
        """Takes the last turn (`turn`) or the last message off the conversation and returns it ([] if it is empty).
        The file is never rewritten: it is cut where what is taken starts.

        In a plain file, the last message of a turn of several is first made a turn of its own (the TAB before its
        line break becomes a space, one byte written in place), then cut off: every state a reader or a crash
        can see holds the old messages or the new ones. In a gzip or encrypted file, when messages of the last
        frame stay (the rest of a turn of several, or the earlier messages of a save's block), the frame that
        holds them is written at the cut, what it replaces kept in `<name>.pop` until then (`_cut_and_write`)."""
        real = self._real()
        with files.WriterLock(real, create=False) as lock:
            if lock is None:
                return []
            known = self._prepare_judged(lock)
            if known.messages == 0:
                return []
            found = self._last_record(known)
            if found is None or found[0].messages == 0:
                # The index, just found sound, cannot be read again; or the file ends in frames that hold no message
                # (blank lines, an empty gzip member of another tool). Without the index, the records come from the
                # file, and such frames are cut off first: the conversation is the same without them.
                self.index.drop(lock)
                self._known = None
                known = self._prepare_judged(lock)
                if known.records is None:
                    raise OSError(errno.EIO, "the index cannot be read, nor removed", self.index.path)
                if known.messages == 0:  # the index said otherwise
                    return []
                known = self._cut_empty_end(lock, known)
                found = self._last_record(known)
            assert found is not None
            last, index_size = found
            stored = files.read_at(lock.fd, last.length, last.offset)
            kind = self.framing.kind
            frames = self.framing.scan(kind, stored, last.offset, turns=True).frames  # plain: its turns
            turns: list[int] = []
            messages = self._decode(kind, stored, last.offset, frames, Binding(self.path, before=last.before), turns)
            taken = turns[-1] if turn else 1
            if kind == PLAIN:
                cut = next(offset for offset, _, count in reversed(frames) if count)  # where the last turn starts
                if taken < turns[-1]:  # one line of a turn of several: the last line starts after its last TAB LF
                    cut = last.offset + stored.rindex(_TAB_NEWLINE, cut - last.offset) + 2
                    files.write_in_place(real, lock, b" ", cut - 2)
                self._cut_and_write(lock, cut, b"")
            else:  # a frame is one turn, or a block of single-message turns: what stays keeps what it was
                kept = messages[: len(messages) - taken]
                frame = b""
                if kept:
                    sealed = self.framing.seal(
                        _core.encode_lines(kept),
                        len(kept),
                        before=last.before,
                        conversation=known.conversation,
                        turn=len(turns) == 1,
                    )
                    frame = bytes(sealed)
                self._cut_and_write(lock, last.offset, frame)
            if index_size:
                end = os.fstat(lock.fd).st_size
                rest = files.read_at(lock.fd, end - last.offset, last.offset)
                record = Record(last.offset, len(rest), last.messages - taken, last.before, _core.crc32(rest))
                self.index.replace_last(lock, index_size, record if rest else None)
            self._known = None
            return messages[len(messages) - taken :]

    def _cut_empty_end(self, lock: files.WriterLock, known: Known) -> Known:
        """Cuts off the frames at the end of the locked file that hold no message; `known` has its records, which
        hold some message (without an index, `known.messages` is their sum)."""
        records = known.records
        assert records is not None and known.messages > 0
        while records[-1].messages == 0:
            records = records[:-1]
        if records[-1].end == known.size:
            return known
        os.ftruncate(lock.fd, records[-1].end)
        if self.durable:
            files.flush(lock.fd)
        st = os.fstat(lock.fd)
        return known._replace(size=st.st_size, mtime=st.st_mtime_ns, records=records)

    def _last_record(self, known: Known) -> tuple[Record, int] | None:
        """The file's last frame's record and the index's size (0: no index, the records are `known`'s), or None
        when the index cannot be read."""
        if known.records is not None:
            return known.records[-1], 0
        return self.index.last(known.identity, known.size)

    def _cut_and_write(self, lock: files.WriterLock, cut: int, frame: bytes) -> None:
        """Cuts the locked file at `cut` and writes `frame` there. When `frame` is not empty, the bytes it replaces
        are first kept in `<name>.pop`, removed once the frame is on disk: a pop cut short (a crash, a failed
        write) is undone by the next writer (`_undo_pop`), as if it had not begun: a crash never leaves it half
        done. A reader in between sees the file without those bytes. Such a pop is flushed
        whatever `durable` says: the bytes it puts at risk were acknowledged long ago."""
        pending = self.path + PENDING
        old = files.read_at(lock.fd, os.fstat(lock.fd).st_size - cut, cut)
        if frame:
            before = _crc_before(lock.fd, cut)
            body = old + frame
            undo = _UNDO.pack(cut, before, len(old), len(frame), _core.crc32(body)) + body
            files.replace(pending, [undo], durable=True, mode=files.NEW_FILE_MODE)
        durable = self.durable or bool(frame)
        try:
            os.ftruncate(lock.fd, cut)
            files.write_all(lock.fd, frame)
            if durable:
                files.flush(lock.fd)
        except BaseException:
            self._known = None
            with suppress(OSError):  # the old bytes go back (they fit where they were); else the next writer's
                self._put_back(lock, cut, old, pending if frame else None)
            raise
        if frame:
            os.unlink(pending)
            files.flush_folder(os.path.dirname(pending) or ".")  # come back after a power cut, it would undo the pop

    def _put_back(self, lock: files.WriterLock, cut: int, old: bytes, pending: str | None) -> None:
        os.ftruncate(lock.fd, cut)
        files.write_all(lock.fd, old)
        files.flush(lock.fd)
        if pending is not None:
            os.unlink(pending)
            files.flush_folder(os.path.dirname(pending) or ".")

    def _undo_pop(self, lock: files.WriterLock) -> bool:
        """Undoes a pop that was cut short (`<name>.pop` holds what it replaced): whether the file changed."""
        pending = self.path + PENDING
        try:
            with open(files.open_regular(pending, os.O_RDONLY)[0], "rb") as f:
                undo = f.read()
        except FileNotFoundError:
            return False
        whole = len(undo) >= _UNDO.size and _core.crc32(undo[_UNDO.size :]) == _UNDO.unpack_from(undo)[4]
        cut, before, old_length, _, _ = _UNDO.unpack_from(undo) if whole else (0, 0, 0, 0, 0)
        old = undo[_UNDO.size : _UNDO.size + old_length]
        frame = undo[_UNDO.size + old_length :]
        now = lock.st.st_size
        mine = whole and cut <= now
        mine = mine and _crc_before(lock.fd, cut) == before
        tail = files.read_at(lock.fd, now - cut, cut) if mine else b""
        if not mine or tail == old or not (old.startswith(tail) or frame.startswith(tail)):
            # Not whole (never so: it is flushed before it is renamed into place), another file's (a save replaced
            # it), untouched, or written to since the pop was cut short: nothing to undo.
            os.unlink(pending)
            return False
        self._put_back(lock, cut, old, pending)
        return True

    def fork(self, path: str) -> None:
        """Copies the conversation into a new file at `path` (FileExistsError if there is one): its bytes as they
        are (blocks shared where the filesystem can), taken under the lock so that no write is half in it, and
        its index for the copy."""
        real = self._real()
        with files.WriterLock(real, create=False) as lock:
            if lock is None:
                if os.path.lexists(path):
                    raise FileExistsError(errno.EEXIST, "the fork's file exists", path)
                return
            known = self._prepare_judged(lock)
            records = known.records
            if records is None:
                records = self.index.tail(known.identity, known.size, 1 << 62)
            files.copy_new(lock.fd, known.size, path, durable=self.durable)
        if records:
            with files.WriterLock(path, create=False) as copy:
                if copy is not None:
                    Index(path).write(copy, (copy.st.st_dev, copy.st.st_ino), records)

    def replace(self, blocks: Iterable[Block]) -> None:
        """Replaces the conversation with `blocks` of encoded JSONL (streamed: bounded memory)."""
        real = self._real()
        with files.WriterLock(real, create=True) as lock:
            assert lock is not None
            self._replace_locked(lock, real, blocks)

    def _replace_locked(self, lock: files.WriterLock, real: str, blocks: Iterable[Block]) -> None:
        """Replaces the locked file with `blocks`, sealed."""
        if not lock.created:
            self._keep_torn_tail(lock)
            with suppress(FileNotFoundError):
                os.unlink(self.path + PENDING)  # a pop cut short: the save replaces what it would put back
        conversation = os.urandom(16)
        records: list[Record] = []
        framing = self.framing

        def stored() -> Iterator[Any]:
            offset = before = 0
            for frame, count in framing.seal_all(blocks, conversation):
                records.append(Record(offset, len(frame), count, before, _core.crc32(frame)))
                offset += len(frame)
                before += count
                yield frame
            if offset == 0 and framing.kind != PLAIN:
                # Even an empty conversation is a frame: the file keeps its kind (no append of another kind can
                # join it), and an encrypted one says nothing in the clear.
                frame = framing.seal(b"", 0, before=0, conversation=conversation)
                records.append(Record(0, len(frame), 0, 0, _core.crc32(frame)))
                yield frame

        try:
            fd = files.replace(real, stored(), durable=self.durable, lock=True)
        except BaseException:
            if lock.created:  # leave no empty file where there was none
                with suppress(OSError):
                    if os.stat(real).st_ino == lock.st.st_ino:
                        os.unlink(real)
            self._known = None
            raise
        lock.adopt(fd)
        st = lock.st
        known = Known(
            (st.st_dev, st.st_ino),
            st.st_size,
            st.st_mtime_ns,
            sum(r.messages for r in records),
            conversation,
            0,
            records,
        )
        index_size = self.index.write(lock, known.identity, records)
        self._known = known._replace(index_size=index_size, records=None if index_size else records)

    def _keep_torn_tail(self, lock: files.WriterLock) -> None:
        """Before a save replaces the file, a torn tail of it goes to a side file: bytes nobody acknowledged, but
        that are not ours to delete either (a file truncated by accident looks just like that)."""
        size = lock.st.st_size
        head = self._head(lock.fd, size)
        if head is None:
            return
        kind = head.kind
        try:
            if kind == PLAIN:
                cut, whole = _plain_tail(lock.fd, size)
                cut = size if whole == size else cut
            else:
                sound = self._sound_last(lock.fd, (lock.st.st_dev, lock.st.st_ino), size)
                start = head.start if sound is None else sound.record.end
                found = self.framing.scan(kind, files.read_at(lock.fd, size - start, start), start)
                cut = found.end if found.torn else size
        except CodecError:
            return  # damage is not a torn tail; the save replaces it all the same
        if cut < size:
            files.side_file(self.path, f".torn-{cut}", files.read_at(lock.fd, size - cut, cut), durable=self.durable)

    def rewrite(self, *, unencrypted: bool) -> None:
        """Rewrites the conversation in this store's framing, atomically, under the lock: for `encrypt()`
        (`unencrypted=True`) a plain or gzip one, which an encrypted file replaces; for `rotate()` one of this
        store's kind, every frame sealed again under the cipher's first key. Its turns stay turns. A crash leaves
        the old file or the new one; a torn tail goes to a side file first. Does nothing to a missing file (nor,
        for `encrypt()`, to an encrypted one). Streamed: memory is bounded by a read block and the largest frame."""
        real = self._real()
        with files.WriterLock(real, create=False) as lock:
            if lock is None:
                return
            head = self._head(lock.fd, lock.st.st_size)
            kind = None if head is None else head.kind
            if kind is None or (unencrypted and kind == FERNET):
                return
            reader = self
            if unencrypted:
                reader = FileStore(self.path, Framing(None, compressed=kind == GZIP), durable=self.durable)
            reader._prepare_judged(lock)  # refuses a kind it must not read, proves the key, sets a torn tail aside
            with reader.reading() as view:
                turns = () if view is None else reader.iterate(view, turns=True)
                self._replace_locked(lock, real, turn_blocks(turns, self.framing.frame_bytes))

    # ================================================================================================ repair

    def verify(self) -> Report:
        """Reads every frame (decrypting, inflating and parsing it) and checks counts, CRCs and the index."""
        with self.reading() as view:
            if view is None:
                return Report(True, 0, 0, 0, index="none" if not os.path.exists(self.index.path) else "stale")
            data = files.read_at(view.fd, view.size - view.start, view.start)
            salvage = self._salvage(view.kind, data, view.start)
            salvage.raise_for_key()
            index = self._check_index(view, data, salvage)
            if os.path.exists(self.path + PENDING):
                cut_short = f"a pop was cut short; {self.path}{PENDING} holds what it took (a writer puts it back)"
                salvage.errors.append((view.size, cut_short))
            return Report(
                ok=not salvage.errors and salvage.torn is None and not index.startswith("wrong"),
                messages=len(salvage.messages),
                frames=len(salvage.records),
                torn_tail_bytes=0 if salvage.torn is None else view.size - salvage.torn,
                errors=salvage.errors,
                index=index,
                turns=len(salvage.turn_sizes),
            )

    def _check_index(self, view: View, data: bytes, salvage: Salvage) -> str:
        """ "sound", "behind" (it misses the last frames: they are scanned), "none", or what is wrong with it."""
        found = self.index.tail(view.identity, view.size, 1 << 62)
        if found is None:
            return "none" if not os.path.exists(self.index.path) else "ignored: not this file's, stale or damaged"
        counts = {r.offset: r.messages for r in salvage.records}
        base = view.start
        for record in found:
            stored = data[record.offset - base : record.end - base]
            if _core.crc32(stored) != record.crc:
                return f"ignored: the record of the frame at byte {record.offset} has another CRC"
            if view.kind == FERNET:
                count = counts.get(record.offset, -1)
            else:
                count = sum(c for _, _, c in scan(view.kind, stored, record.offset).frames)
            if count != record.messages:
                return f"wrong: the frame at byte {record.offset} holds {count} messages, not {record.messages}"
        return "sound" if found[-1].end == (salvage.records[-1].end if salvage.records else 0) else "behind"

    def repair(self) -> tuple[list[str], Report]:
        """Makes the file sound. Returns the side files it wrote (torn tails, the damaged original) and the report
        of the file as it was."""
        report = self.verify()
        written: list[str] = []
        if report.ok and not report.index.startswith("ignored"):
            return written, report
        real = self._real()
        with files.WriterLock(real, create=False) as lock:
            if lock is None:
                return written, report
            self._known = None
            if self._undo_pop(lock):
                lock.st = os.fstat(lock.fd)
            size = lock.st.st_size
            head = self._head(lock.fd, size)
            if head is None:
                return written, report
            kind = head.kind
            data = files.read_at(lock.fd, size - head.start, head.start)
            salvage = self._salvage(kind, data, head.start)
            if not salvage.errors:  # a torn tail (set aside) or an index to write again: the frames stay as they are
                if salvage.torn is not None:
                    written.append(self._set_aside(lock, salvage.torn, size)[1])
                self._end_last_line(lock, kind, salvage.records, data, head.start)
                self.index.write(lock, (lock.st.st_dev, lock.st.st_ino), salvage.records)
                return written, report
            salvage.raise_for_key()
            backup = _keep_copy(real, data if head.start == 0 else files.read_at(lock.fd, size, 0), self.durable)
            written.append(backup)
            self._replace_locked(lock, real, turn_blocks(salvage.turns(), self.framing.frame_bytes))
        return written, report

    def _salvage(self, kind: str, data: bytes, base: int) -> Salvage:
        """Every message of every intact frame, stepping over damage, with what was wrong and where."""
        result = Salvage()
        binding = Binding(self.path)
        unopened: list[int] = []  # the errors of frames the key did not open
        at = base
        while at < base + len(data):
            found = self.framing.scan(kind, data[at - base :], at, turns=True)
            for offset, length, count in found.frames:
                stored = data[offset - base : offset - base + length]
                turns: list[int] = []
                try:
                    messages = self._decode(kind, stored, offset, [(offset, length, count)], binding, turns)
                except CodecError as exc:
                    result.first_error = result.first_error or exc
                    if isinstance(exc, DecryptionError):
                        unopened.append(len(result.errors))
                    result.errors.append((getattr(exc, "offset", offset), str(exc)))
                    binding = Binding(self.path, conversation=binding.conversation, before=None)
                    continue
                result.messages += messages
                result.turn_sizes += turns
                result.records.append(Record(offset, length, len(messages), 0, _core.crc32(stored)))
            if found.torn:
                result.torn = found.end
                break
            if found.damage is None:
                break
            result.errors.append(found.damage)
            binding = Binding(self.path, conversation=binding.conversation, before=None)
            at = _resync(kind, data, base, found.damage[0])
        if result.records:  # the key opens frames of this file: those it does not open were altered
            for i in unopened:
                offset = result.errors[i][0]
                result.errors[i] = (offset, str(CorruptFileError(self.path, offset, _ALTERED)))
        running = 0
        for i, record in enumerate(result.records):
            result.records[i] = record._replace(before=running)
            running += record.messages
        return result


@dataclass
class Salvage:
    messages: list[Any] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    torn: int | None = None  # where a torn tail starts
    first_error: CodecError | None = None
    turn_sizes: list[int] = field(default_factory=list)  # the number of messages of each turn, in order

    def turns(self) -> Iterator[list[Any]]:
        return by_turn(self.messages, self.turn_sizes)

    def raise_for_key(self) -> None:
        """A key that opens no frame at all is the wrong key, not damage: it is raised rather than reported (and
        never "repaired" into an empty conversation)."""
        if not self.records and isinstance(self.first_error, DecryptionError):
            raise self.first_error


def by_turn(messages: list[Any], sizes: list[int]) -> Iterator[list[Any]]:
    """`messages` cut into turns of `sizes` messages each."""
    at = 0
    for size in sizes:
        yield messages[at : at + size]
        at += size


def _resync(kind: str, data: bytes, base: int, damaged: int) -> int:
    """Where the next frame may start after damage at offset `damaged`."""
    at = damaged - base + 1
    if kind == GZIP:
        found = data.find(b"\x1f\x8b\x08", at)
    elif kind == FERNET:
        found = data.find(b"\n", at - 1)
        found = -1 if found < 0 else found + 1
    else:
        found = at - 1
        while True:
            found = data.find(b"\n", found)
            if found < 0 or data[found - 1 : found] != b"\t":
                break
            found += 1
        found = -1 if found < 0 else found + 1
    return base + len(data) if found < 0 else base + found


def _keep_copy(path: str, data: bytes, durable: bool) -> str:
    """Keeps the damaged file's bytes beside it, as `<name>.damaged` (or `.damaged.<n>`)."""
    return files.side_file(path, ".damaged", data, durable=durable)


def _last_boundary(fd: int, size: int) -> int:
    """The offset just past the last line break of the file that ends a turn (frames.last_turn_start), or 0."""
    end = size
    while end > 0:
        start = max(0, end - _BACK)
        lead = 1 if start else 0  # the byte before the block, to see what precedes its first byte
        block = os.pread(fd, end - start + lead, start - lead)
        found = last_turn_start(block)
        if found > lead:  # a line break in the block proper (one at the lead byte is judged with the next block)
            return start - lead + found
        end = start
    return 0


def _plain_tail(fd: int, size: int) -> tuple[int, int]:
    """(where the last whole turn of a plain file ends, where its whole data ends): the two differ when the file
    ends with a whole line without its line break (the second is then `size`)."""
    tail = os.pread(fd, min(size, 2), size - min(size, 2))
    if tail.endswith(b"\n") and not tail.endswith(_TAB_NEWLINE):
        return size, size  # the usual case: the last turn is whole
    boundary = _last_boundary(fd, size)
    found = scan(PLAIN, files.read_at(fd, size - boundary, boundary), boundary)
    return boundary, size if found.damage is None and found.end == size else boundary


def _first_and_last_frames(fd: int, size: int, start: int) -> list[tuple[int, bytes]]:
    """The first and the last whole line of a file of tokens (the frames a key is tried on), with their offsets;
    a line longer than a generous frame is left out."""
    window = min(size - start, _KEY_WINDOW)
    head = os.pread(fd, window, start)
    found = []
    newline = head.find(b"\n")
    if newline >= 0:
        found.append((start, head[: newline + 1]))
    tail_start = size - window
    tail = head if tail_start == start else os.pread(fd, window, tail_start)
    tail = tail[: tail.rfind(b"\n") + 1]  # up to the end of the last whole line
    before = tail.rfind(b"\n", 0, len(tail) - 1)
    if tail and (before >= 0 or tail_start == start) and tail_start + before + 1 != start:
        found.append((tail_start + before + 1, tail[before + 1 :]))
    return found


def _blocks(fd: int, start: int, end: int) -> Iterator[memoryview]:
    """The bytes from `start` to `end`, a block at a time, read into one reused buffer (valid until the next)."""
    buffer = bytearray(min(_READ_BLOCK, end - start))
    view = memoryview(buffer)
    offset = start
    while offset < end:
        n = os.preadv(fd, [view[: min(len(buffer), end - offset)]], offset)
        if n == 0:
            break
        offset += n
        yield view[:n]


def _crc_before(fd: int, cut: int) -> int:
    """The CRC-32 of the (up to) `_BEFORE` bytes before offset `cut`: which file a pop's undo log is for."""
    start = max(0, cut - _BEFORE)
    return _core.crc32(files.read_at(fd, cut - start, start))


def _crcs_match(data: bytes, start: int, records: list[Record]) -> bool:
    """Whether the stored frames in `data` (from offset `start`) have the CRCs their records say."""
    view = memoryview(data)
    return all(_core.crc32(view[r.offset - start : r.end - start]) == r.crc for r in records)
