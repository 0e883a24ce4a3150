"""Reading and crash-safe writing of whole files.

`write_atomic` is the one place a conversation file is replaced: the bytes go to a temporary file in the same
folder, which is flushed to disk and renamed over the target, and the folder is flushed so the rename itself
survives a power cut. A reader, or a process killed at any instant, sees the old file or the new one, never a
mix or an empty file. Concurrent writers each use their own temporary file; the last rename wins whole.

The bytes come as chunks. When there is more than one, a writer thread writes (and, for a durable save,
flushes to disk) each chunk while the caller produces the next: `os.write` and `os.fdatasync` release the GIL,
so the encoding and the disk work overlap and memory stays bounded by a few chunks.
"""

from __future__ import annotations

import os
import queue
import secrets
import stat
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Union

__all__ = ["Chunk", "read_chunks", "write_atomic"]

# Conversations hold personal data: new files and folders are private to their owner.
NEW_FILE_MODE = 0o600
NEW_DIR_MODE = 0o700
Chunk = Union[bytes, memoryview]
# A durable save flushes what it has written every this many bytes, in the writer thread, so that the last
# fsync, which the caller waits for, has little left to do.
_FLUSH_EVERY = 32 << 20
_QUEUED_CHUNKS = 2
_READ_CHUNK = 4 << 20
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def read_chunks(path: Path, chunk_size: int = _READ_CHUNK) -> Iterator[memoryview]:
    """The file's bytes, a block at a time, read into one reused buffer.

    Each block is valid until the next is asked for. Reading into the same memory spares a large load the page
    faults and the copy of one big `bytes`. Raises FileNotFoundError (on the first `next`) when the file does
    not exist.
    """
    with open(path, "rb", buffering=0) as f:
        buffer = bytearray(chunk_size)
        view = memoryview(buffer)
        while n := f.readinto(buffer):
            yield view[:n]


def write_atomic(path: Path, chunks: Iterable[Chunk], *, durable: bool = True) -> None:
    """Replace `path` with the concatenated `chunks`, atomically; with `durable`, surviving a machine crash.

    If `chunks` raises (a message that cannot be encoded), the file is left as it was. An existing file keeps
    its permission bits; a new one gets 0600. Missing parent folders are created (0700).
    """
    directory = path.parent
    _make_private_dirs(directory)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = NEW_FILE_MODE
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, _OPEN_FLAGS, NEW_FILE_MODE)
    try:
        try:
            _write_chunks(fd, iter(chunks), durable)
            if mode != NEW_FILE_MODE and hasattr(os, "fchmod"):
                os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(directory)


def _make_private_dirs(directory: Path) -> None:
    # Path.mkdir(parents=True, mode=...) gives the mode to the last folder only; every folder we create is 0700.
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=NEW_DIR_MODE)
        except FileExistsError:
            pass


def _write_chunks(fd: int, chunks: Iterator[Chunk], durable: bool) -> None:
    first = next(chunks, None)
    if first is None:
        return
    second = next(chunks, None)
    if second is None:  # one chunk, the usual small save: no thread to start
        _write_all(fd, first)
        return
    writer = _Writer(fd, durable)
    try:
        writer.put(first)
        writer.put(second)
        for chunk in chunks:
            writer.put(chunk)
    finally:
        writer.close()


class _Writer:
    """A thread that writes queued chunks to `fd` in order. Its first error is raised by `put` or `close`."""

    def __init__(self, fd: int, durable: bool) -> None:
        self._fd = fd
        self._durable = durable
        self._queue: queue.Queue[Chunk | None] = queue.Queue(maxsize=_QUEUED_CHUNKS)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="conversation-codec-writer", daemon=True)
        self._thread.start()

    def put(self, chunk: Chunk) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        unflushed = 0
        while (chunk := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep draining, so that `put` never blocks on a dead writer
            try:
                _write_all(self._fd, chunk)
                unflushed += len(chunk)
                if self._durable and unflushed >= _FLUSH_EVERY:
                    _fdatasync(self._fd)
                    unflushed = 0
            except BaseException as exc:
                self._error = exc


def _write_all(fd: int, data: Chunk) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fdatasync(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # Windows cannot open a folder to flush it; its renames are journaled by NTFS.
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
