"""ConversationCodec: a conversation (a list of JSON messages) kept in one local file.

The whole data flow is here, one step per line, one direction:
    save:         redact -> encode blocks (Rust) -> seal each block (encrypt) -> write atomically -> index
    append_turn:  redact -> encode (Rust) -> seal -> lock, mend a torn end, append -> index record
    load, iter:   read -> split into frames -> open each (decrypt) -> decode (Rust)
The Rust core turns Python objects into JSONL bytes and back, and scans frames; it knows nothing of files or keys.
The index (index.py) is a cache that makes len() and load(last=n) independent of the conversation's length.
"""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import _core, crypto, files, frames, index
from .errors import CodecError

__all__ = ["ConversationCodec", "Message", "Redactor"]

Message = Any
Redactor = Callable[[Message], Message]

_HEAD = 64  # bytes read to tell a file's kind
_BACK = 64 << 10  # bytes read at a time when looking back for the last line break


class ConversationCodec:
    """Saves, appends to and loads one conversation at `path`.

    `redact`, if given, is called once per message by `save()` and `append_turn()`; the file holds only what it
    returns. `fernet_key` (a key from `Fernet.generate_key()`, or a `Fernet`/`MultiFernet`) encrypts the file; it
    needs the optional `cryptography` package. `compressed=True` writes gzip (RFC 1952, readable by `gzip -dc`) at
    `compression_level` (0-12: libdeflate's levels; 6, the default, is zlib's usual). `durable=False` skips the
    fsyncs: still atomic, but a power cut may lose the last write. Reading needs no options but the key: the format
    is recognised from the bytes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        redact: Redactor | None = None,
        fernet_key: crypto.FernetKey | None = None,
        *,
        compressed: bool = False,
        compression_level: int = 6,
        durable: bool = True,
    ) -> None:
        if isinstance(compression_level, bool) or not isinstance(compression_level, int):
            raise TypeError(f"compression_level must be an int, not {type(compression_level).__name__}")
        if not 0 <= compression_level <= 12:
            raise ValueError(f"compression_level must be from 0 to 12, not {compression_level}")
        self.path = Path(path)
        self.redact = redact
        self.durable = durable
        cipher = None if fernet_key is None else crypto.make_cipher(fernet_key)
        self._framing = frames.Framing(cipher, compressed, compression_level)
        self._index_for: Path | None = None
        self._index_str = ""

    def __repr__(self) -> str:
        framing = self._framing
        return (
            f"{type(self).__name__}({str(self.path)!r}, encrypted={framing.cipher is not None}, "
            f"compressed={framing.compressed})"
        )

    # ---- writing ------------------------------------------------------------------------------------------

    def save(self, messages: Iterable[Message]) -> None:
        """Replace the stored conversation with `messages` (any iterable, streamed to disk in bounded memory).

        Nothing changes if any message fails to encode.
        """
        if self.redact is not None:
            messages = map(self.redact, messages)
        records: list[index.Record] = []

        def stored() -> Iterator[frames.Stored]:
            offset = before = 0
            blocks = _core.encode_chunks(messages, chunk_size=self._framing.frame_bytes)
            for frame, count in self._framing.seal_all(blocks):
                records.append((offset, len(frame), count, before, _core.crc32(frame)))
                offset += len(frame)
                before += count
                yield frame
            if offset == 0 and self._framing.kind != frames.PLAIN:
                # Even an empty conversation is a frame: the file keeps its kind (no append of another kind can
                # join it), and an encrypted one says nothing in the clear.
                frame = self._framing.seal(b"", 0)
                records.append((0, len(frame), 0, 0, _core.crc32(frame)))
                yield frame

        files.write_atomic(self.path, stored(), durable=self.durable)
        if len(records) > 1:
            st = os.stat(self.path)
            index.write(self.path, (st.st_dev, st.st_ino), records)
        else:
            index.remove(self.path)  # one frame is read whole anyway

    def append_turn(self, turn: Message | list[Message]) -> None:
        """Add one message, or a list of messages written together (all or none), without rewriting the file.

        A list is always a list of messages: to append one message that is itself a JSON array, pass `[array]`.
        """
        messages = turn if isinstance(turn, list) else [turn]
        if not messages:
            return
        if self.redact is not None:
            messages = [self.redact(m) for m in messages]
        frame = self._framing.seal(_core.encode_lines(messages), len(messages))
        crc = _core.crc32(frame)
        with files.locked(self.path, create=True) as opened:
            assert opened is not None
            fd, st = opened
            size, identity = st.st_size, (st.st_dev, st.st_ino)
            kind = frames.kind_of(os.pread(fd, _HEAD, 0)) if size else None
            self._framing.check(kind, str(self.path), writing=True)
            index_fd = index.open_for_append(self._index_path()) if size else None
            try:
                last = None if index_fd is None else self._last_indexed(fd, index_fd, identity, size)
                mended = self._mend_end(fd, size, kind, last)
                if mended != size:  # the end changed: the last record may no longer match it
                    size = mended
                    last = None if index_fd is None else self._last_indexed(fd, index_fd, identity, size)
                before = 0 if size == 0 else self._count_from(fd, size, last, index_fd)
                files.write_all(fd, frame)
                if self.durable:
                    os.fsync(fd)
                record = (size, len(frame), len(messages), before or 0, crc)
                if size == 0:
                    index.write(self.path, identity, [record])
                elif before is not None and index_fd is not None:
                    index.append(index_fd, [record])
                else:
                    self._rebuild_index(fd, identity)
            finally:
                if index_fd is not None:
                    os.close(index_fd)

    def _index_path(self) -> str:
        # Kept as a string: pathlib's joins cost more than an append's system calls. `path` is a plain
        # attribute (as in the original design), so the cache follows it if it is reassigned.
        if self._index_for is not self.path:
            self._index_for = self.path
            self._index_str = str(index.path_for(self.path))
        return self._index_str

    def _mend_end(self, fd: int, size: int, kind: str | None, last: index.Record | None) -> int:
        """Make the file end with a whole frame before appending; return its size after.

        A last line without its line break is either written by hand (it is kept, and the break added) or an
        append cut short by a crash: that append's bytes, from the end of the last indexed frame where the index
        is sound (else from the last line break), are moved to a side file `<name>.torn-<offset>`, so nothing is
        lost, and cut from the conversation.
        """
        if size == 0:
            return size
        if kind == frames.GZIP:
            cut = self._end_of_whole_members(fd, size, last)
            if cut == size:
                return size
            return self._move_aside(fd, cut, size)
        if os.pread(fd, 1, size - 1) == b"\n":
            return size
        cut = _after_last_newline(fd, size)
        tail = os.pread(fd, size - cut, cut)
        if self._frame_is_whole(tail):
            files.write_all(fd, b"\n")
            return size + 1
        # A torn append: its frame starts after the last frame the (checked) index knows, which may be before
        # the last line break, when the turn had several messages and only some lines reached the disk. A turn
        # lands whole or not at all, so all of it goes aside.
        if last is not None and index.end(last) < cut:
            cut = index.end(last)
        return self._move_aside(fd, cut, size)

    def _move_aside(self, fd: int, cut: int, size: int) -> int:
        """Moves the bytes from `cut` to the end into the side file `<name>.torn-<cut>`, then cuts them off."""
        side = self.path.with_name(f"{self.path.name}.torn-{cut}")
        files.write_atomic(side, [os.pread(fd, size - cut, cut)], durable=self.durable, lock=False)
        os.ftruncate(fd, cut)
        return cut

    def _end_of_whole_members(self, fd: int, size: int, last: index.Record | None) -> int:
        """Where the whole gzip members of the file end: `size`, unless the last was cut short. Members past
        the last indexed (and checked) one are scanned: none, usually; all of them without an index."""
        start = 0 if last is None else index.end(last)
        if start == size:
            return size
        data = os.pread(fd, size - start, start)
        _, stop = _core.scan_gzip(data, base=start)
        return size if stop is None else stop[0]

    def _frame_is_whole(self, stored: bytes) -> bool:
        try:
            _core.decode_lines(self._framing.open(stored, str(self.path)))
        except CodecError:
            return False
        return True

    # ---- reading ------------------------------------------------------------------------------------------

    def load(self, last: int | None = None) -> list[Message]:
        """The stored conversation, or its last `last` messages; [] when the file is missing or empty."""
        if last is not None:
            if isinstance(last, bool) or not isinstance(last, int) or last < 0:
                raise ValueError(f"last must be a non-negative int or None, not {last!r}")
            return self._tail(last) if last else []
        chunks = files.read_chunks(self.path)
        try:
            first = next(chunks, None)
        except FileNotFoundError:
            return []
        if first is None:
            return []
        if frames.kind_of(first) == frames.PLAIN:
            # The fast path: the whole file through one decoder, a block at a time.
            decoder = _core.LineDecoder(source=str(self.path))
            messages = decoder.feed(first)
            for chunk in chunks:
                messages += decoder.feed(chunk)
            messages += decoder.finish()
            return messages
        chunks.close()
        with self._reading() as file:  # read in one go (half the time of joining blocks), then inflate or decrypt
            if file is None:
                return []
            fd, size, _, kind = file
            return self._decode_stretch(kind, os.pread(fd, size, 0), 0)

    def __len__(self) -> int:
        """The number of messages: read from the index, without reading the conversation."""
        with self._reading() as file:
            if file is None:
                return 0
            fd, size, identity, _ = file
            count = self._indexed_count(fd, identity, size)
            if count is None:
                count = sum(r[2] for r in self._rebuild_index(fd, identity, size))
            return count

    def __iter__(self) -> Iterator[Message]:
        return self.iter()

    def iter(self) -> Iterator[Message]:
        """The messages one at a time, reading the file a block at a time: memory is bounded by one frame."""
        source = str(self.path)
        chunks = files.read_chunks(self.path)
        try:
            first = next(chunks, None)
        except FileNotFoundError:
            return
        if first is None:
            return
        kind = frames.kind_of(first)
        self._framing.check(kind, source, writing=False)
        if kind == frames.PLAIN:
            decoder = _core.LineDecoder(source=source)
            yield from decoder.feed(first)
            for chunk in chunks:
                yield from decoder.feed(chunk)
            yield from decoder.finish()
            return
        if kind == frames.GZIP:
            yield from _iter_gzip(itertools.chain([first], chunks), source)
            return
        parts: list[bytes] = []  # of a token line not yet ended (the original's single token spans all blocks)
        offset = 0
        for block in itertools.chain([first], chunks):
            data = bytes(block)
            start = 0
            while (newline := data.find(b"\n", start)) >= 0:
                parts.append(data[start:newline])
                token = b"".join(parts)
                parts = []
                yield from self._open_frame(token, offset)
                offset += len(token) + 1
                start = newline + 1
            parts.append(data[start:])
        yield from self._open_frame(b"".join(parts), offset)

    def _open_frame(self, stored: bytes, offset: int) -> list[Message]:
        """The messages of one stored frame at `offset` in the file."""
        if not stored.strip():
            return []
        source = f"{self.path} (frame at byte {offset})"
        return _core.decode_lines(self._framing.open(stored, source), source=source)

    def _tail(self, last: int) -> list[Message]:
        with self._reading() as file:
            if file is None:
                return []
            fd, size, identity, kind = file
            records = index.read_tail(self.path, identity, size, last)
            if records is not None:
                start = records[0][0]
                data = os.pread(fd, size - start, start)
                if _frames_match(data, start, records):
                    messages = self._decode_stretch(kind, data, start)
                    return messages[-last:]
            records = self._rebuild_index(fd, identity, size)
            start = _start_of_last(records, last)
            return self._decode_stretch(kind, os.pread(fd, size - start, start), start)[-last:]

    @contextmanager
    def _reading(self) -> Iterator[tuple[int, int, index.Identity, str] | None]:
        """The data file open for reading as (descriptor, size, identity, kind), or None when it is missing or
        empty. The size is taken between appends (whole frames only); a kind this codec cannot read is refused."""
        try:
            f = open(self.path, "rb")  # noqa: SIM115 (closed below; a missing file is not an error)
        except FileNotFoundError:
            yield None
            return
        with f:
            size, identity = files.stable_size(f.fileno())
            kind = frames.kind_of(os.pread(f.fileno(), _HEAD, 0)) if size else None
            if kind is None:
                yield None
                return
            self._framing.check(kind, str(self.path), writing=False)
            yield f.fileno(), size, identity, kind

    def _decode_stretch(self, kind: str, data: bytes, start: int) -> list[Message]:
        """The messages of the whole frames in `data`, which starts at offset `start`."""
        source = f"{self.path} (from byte {start})" if start else str(self.path)
        if kind == frames.PLAIN:
            return _core.decode_lines(data, source=source)
        if kind == frames.GZIP:
            return _core.decode_lines(frames.gunzip(data, source), source=source)
        messages: list[Message] = []
        for offset, length, _ in frames.split(kind, data, start):
            messages += self._open_frame(data[offset - start : offset - start + length], offset)
        return messages

    # ---- the index ----------------------------------------------------------------------------------------

    def _indexed_count(self, fd: int, identity: index.Identity, size: int) -> int | None:
        """The number of messages in the first `size` bytes of the data file, from its index; None if the index
        cannot be trusted. Costs the same whatever the file's length."""
        index_fd = index.open_for_append(self._index_path())
        if index_fd is None:
            return None
        try:
            return self._count_from(fd, size, self._last_indexed(fd, index_fd, identity, size), None)
        finally:
            os.close(index_fd)

    def _last_indexed(self, fd: int, index_fd: int, identity: index.Identity, size: int) -> index.Record | None:
        """The index's last record, if it is intact, this file's, and its frame has the CRC it says."""
        last = index.last_record(index_fd, identity, size)
        if last is None or _core.crc32(os.pread(fd, last[1], last[0])) != last[4]:
            return None
        return last

    def _count_from(self, fd: int, size: int, last: index.Record | None, index_fd: int | None) -> int | None:
        """The messages up to `size`: those up to the checked `last` record, and those of any frames past it
        (written by a process that died before adding their records, or by another program), whose records
        are added when `index_fd` (the index open under the data file's lock, as an append holds it) is given.
        """
        if last is None:
            return None
        count = index.after(last)
        if index.end(last) < size:
            kind = frames.kind_of(os.pread(fd, _HEAD, 0)) or frames.PLAIN
            start = index.end(last)
            extra = self._records_of(kind, os.pread(fd, size - start, start), start, count)
            count = index.after(extra[-1]) if extra else count
            if index_fd is not None:
                index.append(index_fd, extra)
        return count

    def _rebuild_index(self, fd: int, identity: index.Identity, size: int | None = None) -> list[index.Record]:
        """Records for the whole data file, from its bytes; written as the new index when there is more than one
        frame."""
        if size is None:
            size = os.fstat(fd).st_size
        kind = frames.kind_of(os.pread(fd, _HEAD, 0)) or frames.PLAIN
        records = self._records_of(kind, os.pread(fd, size, 0), 0, 0)
        if len(records) > 1:
            index.write(self.path, identity, records)
        return records

    def _records_of(self, kind: str, data: bytes, base: int, before: int) -> list[index.Record]:
        """Index records for the stored frames in `data`, which starts at offset `base` of the data file, after
        `before` messages."""
        records: list[index.Record] = []
        for offset, length, count in frames.split(kind, data, base):
            stored = data[offset - base : offset - base + length]
            if count < 0:  # an encrypted frame: its messages are counted once decrypted
                plain = self._framing.open(stored, f"{self.path} (frame at byte {offset})")
                count = sum(c for _, _, c, _ in _core.scan_plain(plain))
            records.append((offset, length, count, before, _core.crc32(stored)))
            before += count
        return records


def _iter_gzip(chunks: Iterable[memoryview], source: str) -> Iterator[Message]:
    """Messages of a gzip stream read a block at a time: inflated as it streams (zlib, member after member),
    so memory is bounded by a block and what it inflates to, whatever the file's length."""
    decoder = _core.LineDecoder(source=source)
    inflater = zlib.decompressobj(wbits=31)
    inside = False  # in the middle of a member
    try:
        for chunk in chunks:
            data = bytes(chunk)
            while data:
                inside = True
                yield from decoder.feed(inflater.decompress(data))
                if not inflater.eof:
                    break
                data = inflater.unused_data  # the next member starts here
                inflater = zlib.decompressobj(wbits=31)
                inside = False
    except zlib.error as exc:
        raise CodecError(f"{source}: damaged gzip data: {exc}") from None
    if inside:
        raise CodecError(f"{source}: the last gzip member is cut short")
    yield from decoder.finish()


def _frames_match(data: bytes, start: int, records: list[index.Record]) -> bool:
    """Whether the stored frames in `data` (from offset `start`) have the CRCs their records say."""
    view = memoryview(data)
    return all(_core.crc32(view[o - start : o - start + n]) == crc for o, n, _, _, crc in records)


def _start_of_last(records: list[index.Record], last: int) -> int:
    """The offset of the frame holding the `last`-th message from the end (0 without records)."""
    if not records:
        return 0
    first_needed = index.after(records[-1]) - last
    for record in records:
        if index.after(record) > first_needed:
            return record[0]
    return records[-1][0]


def _after_last_newline(fd: int, size: int) -> int:
    """The offset just past the last line break in the file's first `size` bytes (0 if none)."""
    end = size
    while end > 0:
        start = max(0, end - _BACK)
        i = os.pread(fd, end - start, start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        end = start
    return 0
