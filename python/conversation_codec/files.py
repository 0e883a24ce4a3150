"""Reading and crash-safe writing of whole files.

`write_atomic` is the one place a conversation file is replaced: the bytes go to a temporary file in the same
folder, which is flushed to disk and renamed over the target, and the folder is flushed so the rename itself
survives a power cut. A reader, or a process killed at any instant, sees the old file or the new one, never a
mix or an empty file. Concurrent writers each use their own temporary file; the last rename wins whole.

The bytes come as chunks. When there is more than one, a Rust thread (`_core.BlockWriter`) writes them, and for
a durable save flushes them to disk every 32 MiB, while the caller encodes the next: it holds no Python object and
never waits for the GIL, so encoding and disk work overlap and memory stays bounded by the blocks in flight.

Writers serialise on an exclusive `flock` of the data file (a save holds it on the file it replaces; an append
re-checks, once it holds it, that the path still names the file it locked). Readers take their size under a
shared lock, so they never see an append half written. POSIX only (Linux, macOS): flock, pread, folder fsync.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import stat
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Union

from . import _core

__all__ = ["Chunk", "locked", "make_private_dirs", "read_chunks", "stable_size", "write_all", "write_atomic"]

# Conversations hold personal data: new files and folders are private to their owner.
NEW_FILE_MODE = 0o600
NEW_DIR_MODE = 0o700
Chunk = Union[bytes, memoryview, _core.Encoded]
_READ_CHUNK = 4 << 20
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def read_chunks(path: Path, chunk_size: int = _READ_CHUNK) -> Generator[memoryview, None, None]:
    """The file's bytes, a block at a time, read into one reused buffer.

    Each block is valid until the next is asked for. Reading into the same memory spares a large load the page
    faults and the copy of one big `bytes`. Raises FileNotFoundError (on the first `next`) when the file does
    not exist.
    """
    with open(path, "rb", buffering=0) as f:
        left, _ = stable_size(f.fileno())
        buffer = bytearray(min(chunk_size, left))
        view = memoryview(buffer)
        while left and (n := f.readinto(view[: min(len(buffer), left)])):
            left -= n
            yield view[:n]


def write_atomic(path: Path, chunks: Iterable[Chunk], *, durable: bool = True, lock: bool = True) -> None:
    """Replace `path` with the concatenated `chunks`, atomically; with `durable`, surviving a machine crash.

    If `chunks` raises (a message that cannot be encoded), the file is left as it was. An existing file keeps
    its permission bits; a new one gets 0600. Missing parent folders are created (0700).
    """
    directory = path.parent
    make_private_dirs(directory)
    if lock:
        with locked(path, create=False):  # appenders wait, then find the new file
            _replace(path, chunks, durable)
    else:
        _replace(path, chunks, durable)


def _replace(path: Path, chunks: Iterable[Chunk], durable: bool) -> None:
    directory = path.parent
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


def make_private_dirs(directory: Path) -> None:
    # Path.mkdir(parents=True, mode=...) gives the mode to the last folder only; every folder we create is 0700.
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for folder in reversed(missing):
        with suppress(FileExistsError):
            folder.mkdir(mode=NEW_DIR_MODE)


@contextmanager
def locked(path: Path, *, create: bool) -> Iterator[tuple[int, os.stat_result] | None]:
    """A descriptor of the data file (read/write, appending) under an exclusive lock, with its stat; None if it
    does not exist and `create` is false. If the file was replaced while we waited for the lock, the new one is
    locked instead.
    """
    flags = os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    if create:
        flags |= os.O_CREAT
    name = os.fspath(path)
    while True:
        try:
            fd = os.open(name, flags, NEW_FILE_MODE)
        except FileNotFoundError:
            if not create:
                yield None
                return
            make_private_dirs(path.parent)  # only the first append to a new folder gets here
            fd = os.open(name, flags, NEW_FILE_MODE)
        try:
            _lock(fd, shared=False)
            st = os.fstat(fd)
            if st.st_ino == os.stat(name).st_ino:
                break
        except FileNotFoundError:
            pass  # replaced or removed while we waited: try the path again
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield fd, st
    finally:
        os.close(fd)  # releases the lock


def stable_size(fd: int) -> tuple[int, tuple[int, int]]:
    """The size and identity (device, inode) of an open file, taken between two appends, never in the middle of one:
    reading no further than this size, a reader sees whole frames even while others append."""
    _lock(fd, shared=True)
    try:
        st = os.fstat(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
    return st.st_size, (st.st_dev, st.st_ino)


def _lock(fd: int, *, shared: bool) -> None:
    fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)


def _write_chunks(fd: int, chunks: Iterator[Chunk], durable: bool) -> None:
    first = next(chunks, None)
    if first is None:
        return
    second = next(chunks, None)
    if second is None:  # one chunk, the usual small save: no thread to start
        write_all(fd, first)
        return
    writer = _core.BlockWriter(fd, durable=durable)
    try:
        writer.put(first)
        writer.put(second)
        for chunk in chunks:
            writer.put(chunk)
    finally:
        writer.close()  # waits for the queued blocks; raises the first write error


def write_all(fd: int, *chunks: Chunk) -> None:
    """Writes every chunk, in order, with as few system calls as the OS allows (writev)."""
    views = [memoryview(c).cast("B") for c in chunks if len(c)]
    while views:
        written = os.writev(fd, views[:_IOV_MAX]) if len(views) > 1 and _HAS_WRITEV else os.write(fd, views[0])
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if written:
            views[0] = views[0][written:]


_IOV_MAX = 512
_HAS_WRITEV = hasattr(os, "writev")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
