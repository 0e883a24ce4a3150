"""The index file (docs/FORMAT.md, section 2): where each frame of a data file starts and how many messages it
holds, so that the count and the last messages of a long conversation are found without reading all of it.

It is a cache and only a cache. `read_tail` returns records only from an index written for this very data file
(same identity) whose records are intact and follow on from each other; the caller then checks the CRC of every
frame it reads against its record. Anything that does not hold, and the index is rebuilt from the data.
Records are (offset, stored length, messages, messages before, CRC-32 of the stored frame).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from . import _core, files

__all__ = ["Identity", "Record", "last_record", "open_for_append", "path_for", "read_tail", "remove", "write"]

Record = tuple[int, int, int, int, int]
Identity = tuple[int, int]  # (st_dev, st_ino) of the data file
HEADER = 32
RECORD = 32
SUFFIX = ".idx"


def path_for(data_path: Path) -> Path:
    return data_path.with_name(data_path.name + SUFFIX)


def end(record: Record) -> int:
    return record[0] + record[1]


def after(record: Record) -> int:
    """The number of messages up to the end of the record's frame."""
    return record[3] + record[2]


def read_tail(data_path: Path, identity: Identity, data_size: int, messages: int) -> list[Record] | None:
    """The last records of the index, enough of them to hold the last `messages` messages (and at least one).

    None when there is no index for this data file (missing, written for another file, damaged, or pointing past
    its end).
    """
    try:
        with open(path_for(data_path), "rb") as f:
            records = _read_records(f, identity, messages)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if records is None or end(records[-1]) > data_size:
        return None
    # Only the frames needed: drop the older ones that the last `messages` messages do not reach.
    first_needed = after(records[-1]) - messages
    while len(records) > 1 and after(records[0]) <= first_needed:
        records.pop(0)
    return records


def _read_records(f: BinaryIO, identity: Identity, messages: int) -> list[Record] | None:
    """Records from the end of the open index, back until they hold `messages` messages."""
    size = os.fstat(f.fileno()).st_size
    if size < HEADER + RECORD or (size - HEADER) % RECORD:
        return None
    if _core.parse_index_header(f.read(HEADER)) != identity:
        return None
    records: list[Record] = []
    high = low = (size - HEADER) // RECORD
    step = 8
    while high > 0:
        low = max(0, high - step)
        f.seek(HEADER + low * RECORD)
        try:
            block = _core.unpack_records(f.read((high - low) * RECORD))
        except ValueError:
            return None
        if records and (end(block[-1]) != records[0][0] or after(block[-1]) != records[0][3]):
            return None
        records = block + records
        if after(records[-1]) - records[0][3] >= messages:
            break
        high = low
        step *= 8
    if low == 0 and (records[0][0], records[0][3]) != (0, 0):
        return None
    return records


def open_for_append(index_path: str) -> int | None:
    """The index opened to read its end and append to it (the fast path of `append_turn`), or None."""
    try:
        return os.open(index_path, os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    except (FileNotFoundError, NotADirectoryError):
        return None


def last_record(fd: int, identity: Identity, data_size: int) -> Record | None:
    """The last record of the open index, if the index is this data file's and the record intact and within it.

    Two reads, whatever the index's length: what keeps an append's cost flat.
    """
    size = os.fstat(fd).st_size
    if size < HEADER + RECORD or (size - HEADER) % RECORD:
        return None
    if _core.parse_index_header(os.pread(fd, HEADER, 0)) != identity:
        return None
    try:
        (record,) = _core.unpack_records(os.pread(fd, RECORD, size - RECORD))
    except ValueError:
        return None
    if end(record) > data_size or (size == HEADER + RECORD and (record[0], record[3]) != (0, 0)):
        return None
    return record


def write(data_path: Path, identity: Identity, records: list[Record]) -> None:
    """A new index for the data file, replacing any other (atomic, not flushed to disk: it is a cache)."""
    try:
        payload = _core.index_header(*identity) + _core.pack_records(records)
    except ValueError:  # a frame too long for a record (4 GiB or more): no index for this file
        remove(data_path)
        return
    files.write_atomic(path_for(data_path), [payload], durable=False, lock=False)


def append(fd: int, records: list[Record]) -> None:
    """Records at the end of the open index (which the caller has just checked)."""
    files.write_all(fd, _core.pack_records(records))


def remove(data_path: Path) -> None:
    path_for(data_path).unlink(missing_ok=True)
