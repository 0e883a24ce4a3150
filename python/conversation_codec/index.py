"""The index file (docs/FORMAT.md, section 2): where each frame of a data file starts and how many messages it
holds, so that the count and the last messages of a long conversation are found without reading all of it.

It is a cache and only a cache. Anyone may read it; what it says is used only when it was written for this very
data file (device and inode), its records are intact (each has its CRC) and follow on from each other, and every
frame read through it has the CRC its record gives. Only a writer holding the data file's lock writes it
(`Index.write` and `Index.extend` take the lock), so a reader racing a writer can never leave a stale index behind.
A failure to write it (a full disk, a read-only folder) never fails the write it follows: the index is dropped.
"""

from __future__ import annotations

import os
from contextlib import suppress

from . import _core, files
from .frames import Record

__all__ = ["Index"]

HEADER = _core.INDEX_HEADER_LEN
RECORD = _core.INDEX_RECORD_LEN
SUFFIX = ".idx"
Identity = tuple[int, int]  # (st_dev, st_ino) of the data file


class Index:
    """The index beside one data file."""

    def __init__(self, data_path: str) -> None:
        self.path = data_path + SUFFIX

    # ---- reading (anyone) ----------------------------------------------------------------------------------

    def last(self, identity: Identity, data_size: int) -> tuple[Record, int] | None:
        """The last record and the index's size, if the index is this data file's and the record intact and
        within the data. Two reads whatever the index's length: what keeps an append's cost flat."""
        try:
            fd, st = files.open_regular(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            size = st.st_size
            if not self._valid_size(size) or _core.parse_index_header(os.pread(fd, HEADER, 0)) != identity:
                return None
            (record,) = _core.unpack_records(os.pread(fd, RECORD, size - RECORD))
        except (OSError, ValueError):  # unreadable (a folder in its place?) or damaged
            return None
        finally:
            os.close(fd)
        last = Record(*record)
        if last.end > data_size or (size == HEADER + RECORD and (last.offset, last.before) != (0, 0)):
            return None
        return last, size

    def tail(self, identity: Identity, data_size: int, messages: int) -> list[Record] | None:
        """The last records, enough of them to hold the last `messages` messages (and at least one); None when
        there is no sound index for this data file."""
        try:
            fd, st = files.open_regular(self.path, os.O_RDONLY)
            with open(fd, "rb") as f:
                size = st.st_size
                if not self._valid_size(size) or _core.parse_index_header(f.read(HEADER)) != identity:
                    return None
                records = self._read_back(f, size, messages)
        except OSError:
            return None
        if records is None or records[-1].end > data_size:
            return None
        first_needed = records[-1].after - messages
        while len(records) > 1 and records[0].after <= first_needed:
            records.pop(0)
        return records

    @staticmethod
    def _valid_size(size: int) -> bool:
        return size >= HEADER + RECORD and (size - HEADER) % RECORD == 0

    @staticmethod
    def _read_back(f: object, size: int, messages: int) -> list[Record] | None:
        """Records from the end of the open index, back until they hold `messages` messages."""
        assert hasattr(f, "seek") and hasattr(f, "read")
        records: list[Record] = []
        high = low = (size - HEADER) // RECORD
        step = 8
        while high > 0:
            low = max(0, high - step)
            f.seek(HEADER + low * RECORD)
            try:
                block = [Record(*r) for r in _core.unpack_records(f.read((high - low) * RECORD))]
            except ValueError:
                return None
            if records and (block[-1].end != records[0].offset or block[-1].after != records[0].before):
                return None
            records = block + records
            if records[-1].after - records[0].before >= messages:
                break
            high = low
            step *= 8
        if low == 0 and (records[0].offset, records[0].before) != (0, 0):
            return None
        return records

    # ---- writing (the writer holding the data file's lock) ---------------------------------------------------

    def write(self, lock: files.WriterLock, identity: Identity, records: list[Record]) -> int:
        """A new index for the data file, replacing any other (atomic; not flushed to disk: it is a cache).
        Returns its size, or 0 if it could not be written (then no index is left)."""
        assert lock.fd >= 0, "only the writer holding the lock writes the index"
        if len(records) < 2:  # one frame is read whole anyway
            self.drop(lock)
            return 0
        try:
            payload = _core.index_header(*identity) + _core.pack_records(records)
            files.replace(self.path, [payload], durable=False, mode=files.NEW_FILE_MODE)
        except (OSError, ValueError):  # ValueError: a frame too long for the format
            self.drop(lock)
            return 0
        return len(payload)

    def extend(self, lock: files.WriterLock, size: int, records: list[Record]) -> int:
        """Adds records at the end of the index, which the caller found sound and `size` bytes long. Returns the
        new size, or 0 if it could not be written (then no index is left)."""
        return self._write_end(lock, size, size, records)

    def replace_last(self, lock: files.WriterLock, size: int, record: Record | None) -> int:
        """Replaces the last record of the index, which the caller found sound and `size` bytes long, with
        `record` (None: removes it). Returns the new size, or 0 if no index is left."""
        if size - RECORD <= HEADER and record is None:
            self.drop(lock)
            return 0
        return self._write_end(lock, size, size - RECORD, [] if record is None else [record])

    def _write_end(self, lock: files.WriterLock, size: int, keep: int, records: list[Record]) -> int:
        """Keeps the first `keep` bytes of the index (found sound and `size` bytes long) and writes `records`
        after them. Returns the new size, or 0 if it could not be written (then no index is left)."""
        assert lock.fd >= 0, "only the writer holding the lock writes the index"
        try:
            payload = _core.pack_records(records) if records else b""
            fd, st = files.open_regular(self.path, os.O_WRONLY)
            try:
                if st.st_size != size:  # changed since it was read: rewrite it rather than guess
                    raise OSError("index changed")
                if keep < size:
                    os.ftruncate(fd, keep)
                os.pwrite(fd, payload, keep)
            finally:
                os.close(fd)
        except (OSError, ValueError):
            self.drop(lock)
            return 0
        return keep + len(payload)

    def drop(self, lock: files.WriterLock) -> None:
        # If even the removal fails (a read-only folder), the index left behind no longer matches the data file
        # (its records end before the data does, or its identity is another file's): readers check and scan.
        # The temporary file of an index write that a kill cut short goes too: a save of one frame writes no
        # index, so nothing else would ever replace it.
        for path in (self.path, files.temporary_name(self.path)):
            with suppress(OSError):
                os.unlink(path)
