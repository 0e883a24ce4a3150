"""The system calls of the storage layer: whole reads and writes, flushes, atomic replacement and the writer lock.

Nothing here knows what a conversation is. The rules it provides:

- `read_at` and `write_all` loop until done: one `pread` returns at most 2 GiB - 4 KiB on Linux, and `write` may
  write less than asked.
- `flush` is a real flush to stable storage (`F_FULLFSYNC` on macOS, where `fsync` only reaches the drive's cache).
- `replace` writes a new file beside the target under a fixed temporary name, flushes it, renames it over the
  target and flushes the folder. The caller holds the target's writer lock, so one temporary name per target is
  enough, and a temporary file left by a save that was killed is simply replaced by the next save.
- `copy_new` makes a new file from the start of another, whole or not at all, refusing to replace one; where the
  filesystem can (btrfs, XFS), the copy shares the source's blocks.
- `WriterLock` is an exclusive `flock` on the data file. It is taken by every writer (save, append, repair) and by
  nobody else: readers never wait. A lock held by this process cannot be taken again by it (that would wait
  forever: a `redact` that appends to the file being saved), and a child process forked while a lock is held
  closes its copy at once, so the lock never outlives its owner (a child keeping an inherited `flock` open would
  block every later writer).

POSIX only (Linux, macOS).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
from collections.abc import Iterable, Iterator
from contextlib import suppress
from typing import Union

from . import _core

__all__ = [
    "NEW_DIR_MODE",
    "NEW_FILE_MODE",
    "Chunk",
    "WriterLock",
    "copy_new",
    "flush",
    "make_private_dirs",
    "read_at",
    "replace",
    "side_file",
    "write_all",
    "write_in_place",
    "writer_active",
]

# Conversations hold personal data: new files and folders are private to their owner.
NEW_FILE_MODE = 0o600
NEW_DIR_MODE = 0o700
Chunk = Union[bytes, bytearray, memoryview, _core.Encoded]
_MAX_READ = 1 << 30  # below Linux's 0x7ffff000-byte cap on one read
_IOV_MAX = 512
_NEW_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW


_NOT_REGULAR = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a pipe",
    stat.S_IFSOCK: "a socket",
}


def check_regular(st: os.stat_result, path: str) -> None:
    """Raises unless `st` is a regular file's. A conversation is never read from or written over anything else:
    a save would put a file in the place of `/dev/null`, and a pipe reads as empty (or, with no writer, waits)."""
    if stat.S_ISREG(st.st_mode):
        return
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    what = _NOT_REGULAR.get(stat.S_IFMT(st.st_mode), "a file of another kind")
    raise OSError(errno.EINVAL, f"not a regular file ({what}): a conversation is kept in a regular file", path)


def open_file(path: str, flags: int, mode: int = NEW_FILE_MODE) -> int:
    """os.open (close-on-exec), where a socket in `path`'s place is refused as `check_regular` refuses it rather
    than as "no such device or address"."""
    try:
        return os.open(path, flags | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket (or a device without a driver): nothing to open there
            check_regular(os.stat(path), path)
        raise


def open_regular(path: str, flags: int) -> tuple[int, os.stat_result]:
    """`path` opened with `flags`, and its status, if it is a regular file (else OSError, as `check_regular`
    says). O_NONBLOCK: opening a pipe never waits for its other end (a regular file ignores the flag)."""
    fd = open_file(path, flags | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        check_regular(st, path)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_at(fd: int, size: int, offset: int) -> bytes:
    """Exactly `size` bytes at `offset` (fewer only at the end of the file)."""
    if size <= _MAX_READ:
        data = os.pread(fd, size, offset)
        if len(data) == size or not data:
            return data
        parts = [data]
        got = len(data)
    else:
        parts, got = [], 0
    while got < size:
        part = os.pread(fd, min(size - got, _MAX_READ), offset + got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def write_all(fd: int, *chunks: Chunk) -> None:
    """Writes every chunk, in order, with as few system calls as the OS allows (writev)."""
    views = [memoryview(c).cast("B") for c in chunks if len(c)]
    while views:
        written = os.writev(fd, views[:_IOV_MAX]) if len(views) > 1 else os.write(fd, views[0])
        while views and written >= len(views[0]):
            written -= len(views.pop(0))
        if written:
            views[0] = views[0][written:]


def flush(fd: int) -> None:
    """Flushes a file's data (or a folder's entries) to stable storage."""
    full = getattr(fcntl, "F_FULLFSYNC", None)
    if full is not None:  # macOS: fsync stops at the drive's volatile cache
        try:
            fcntl.fcntl(fd, full)
            return
        except OSError:
            pass  # not supported by this file system: fsync is the best there is
    os.fsync(fd)


def flush_folder(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        flush(fd)
    finally:
        os.close(fd)


def make_private_dirs(directory: str) -> None:
    """Creates `directory` and its missing parents, each 0700 (Path.mkdir(parents=True) gives the mode to the
    last one only)."""
    missing = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, NEW_DIR_MODE)
        except FileExistsError:
            if not os.path.isdir(folder):  # not made by another process: a file, or a link to nothing, is there
                raise NotADirectoryError(errno.ENOTDIR, "not a folder (a file, or a link to nothing)", folder) from None
            continue
        # A new folder's name is durable only once its parent is flushed (rare: once per folder, so always done).
        with suppress(PermissionError):  # a parent we may enter but not read: nothing more can be done
            flush_folder(os.path.dirname(folder) or ".")


def temporary_name(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.tmp")


def replace(path: str, chunks: Iterable[Chunk], *, durable: bool, mode: int | None = None, lock: bool = False) -> int:
    """Replaces the file at `path` with the concatenated `chunks`, atomically; with `durable`, surviving a power
    cut once this returns. The caller holds the writer lock of `path`.

    If `chunks` raises (a message that cannot be encoded) or a write fails, `path` is left as it was and the
    temporary file is removed. The new file gets `mode` (default: the replaced file's permission bits, or 0600).
    With `lock`, the new file is locked (exclusive flock) before it takes the name, and its descriptor returned
    open: no writer can get at it before the caller is done. Otherwise -1.
    """
    folder = os.path.dirname(path) or "."
    if mode is None:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = NEW_FILE_MODE
    tmp = temporary_name(path)
    with suppress(FileNotFoundError):
        os.unlink(tmp)  # left by a save that was killed: we hold the lock, so no save is using it
    fd = os.open(tmp, _NEW_FLAGS, NEW_FILE_MODE)
    locked = -1
    try:
        try:
            _write_chunks(fd, iter(chunks), durable)
            if mode != NEW_FILE_MODE:
                os.fchmod(fd, mode)
            if durable:
                flush(fd)
        finally:
            os.close(fd)
        if lock:
            # Locked through a descriptor of its own, opened now: a child forked while the file was written
            # holds copies of `fd` (and of the writer thread's), which must not keep this lock alive.
            locked = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            WriterLock._claim(locked, os.fstat(locked))
            fcntl.flock(locked, fcntl.LOCK_EX)
        os.rename(tmp, path)
        if durable:
            flush_folder(folder)
    except BaseException:
        if locked >= 0:
            WriterLock._release(locked)
            os.close(locked)
        with suppress(OSError):
            if os.path.lexists(tmp):
                os.unlink(tmp)
        raise
    return locked


def _write_chunks(fd: int, chunks: Iterator[Chunk], durable: bool) -> None:
    first = next(chunks, None)
    if first is None:
        return
    second = next(chunks, None)
    if second is None:  # one chunk, the usual small save: no thread to start
        write_all(fd, first)
        return
    # A Rust thread writes while we encode the next block; it never needs the GIL (src/writer.rs).
    with _core.BlockWriter(fd, durable=durable) as writer:
        writer.put(first)
        writer.put(second)
        for chunk in chunks:
            writer.put(chunk)


def side_file(path: str, suffix: str, data: bytes, *, durable: bool) -> str:
    """Writes `data` to a new file `<path><suffix>` (or `<path><suffix>.<n>` if that name is taken: nothing is
    ever overwritten) and returns its name."""
    folder = os.path.dirname(path) or "."
    n = 0
    while True:
        name = path + suffix + (f".{n}" if n else "")
        try:
            fd = os.open(name, _NEW_FLAGS, NEW_FILE_MODE)
        except FileExistsError:
            n += 1
            continue
        break
    try:
        write_all(fd, data)
        if durable:
            flush(fd)
    finally:
        os.close(fd)
    if durable:
        flush_folder(folder)
    return name


def copy_new(src_fd: int, size: int, path: str, *, durable: bool) -> None:
    """Copies the first `size` bytes of `src_fd` into a new file at `path` (0600; FileExistsError if the name is
    taken), whole or not at all: into a temporary file, flushed with `durable`, then linked to its name (which never
    replaces a file) and the folder flushed."""
    folder = os.path.dirname(path) or "."
    make_private_dirs(folder)
    tmp = f"{temporary_name(path)}.{os.getpid()}.{os.urandom(4).hex()}"  # no lock on `path` to share a name under
    fd = os.open(tmp, _NEW_FLAGS, NEW_FILE_MODE)
    try:
        try:
            _copy_range(src_fd, fd, size)
            if durable:
                flush(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)
    finally:
        with suppress(OSError):
            os.unlink(tmp)
    if durable:
        flush_folder(folder)


def write_in_place(path: str, lock: WriterLock, data: bytes, offset: int) -> None:
    """Writes `data` over the bytes at `offset` of the locked file (its lock's descriptor appends: O_APPEND makes
    Linux's pwrite append too), through a descriptor of its own, checked to be the locked file."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (lock.st.st_dev, lock.st.st_ino):
            raise OSError(errno.ESTALE, "the file was replaced while it was locked", path)
        if os.pwrite(fd, data, offset) != len(data):
            raise OSError(errno.EIO, f"a short write at byte {offset}", path)
    finally:
        os.close(fd)


def _copy_range(src_fd: int, dst_fd: int, size: int) -> None:
    """Copies bytes 0 to `size` of `src_fd` to the same offsets of `dst_fd`: in the kernel (copy_file_range, which
    shares blocks where the filesystem can), else through a buffer."""
    offset = 0
    kernel = getattr(os, "copy_file_range", None)
    while offset < size:
        if kernel is not None:
            try:
                n = kernel(src_fd, dst_fd, size - offset, offset, offset)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                    raise
                kernel = None
                continue
        else:
            data = memoryview(os.pread(src_fd, min(size - offset, 1 << 20), offset))
            n = written = len(data)
            while written:
                written -= os.pwrite(dst_fd, data[n - written :], offset + n - written)
        if n == 0:
            raise OSError(errno.EIO, f"the source ended at byte {offset} of {size} while it was copied")
        offset += n


# ---- the writer lock -------------------------------------------------------------------------------------------

# Descriptors this process holds writer locks through, and the files (device, inode) they lock, with the thread.
_held: dict[int, tuple[tuple[int, int], int]] = {}
_held_guard = threading.Lock()


def _forget_locks_in_child() -> None:
    # The child has only the thread that forked: no operation of another thread goes on in it. Its copies of the
    # locked descriptors would keep the parent's locks alive for as long as the child lives.
    for fd in list(_held):
        with suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


class WriterLock:
    """The exclusive lock of a data file, held for one write: `fd` is the file open read/write (appending), `st`
    its status when the lock was taken.

    If the file was replaced (a save renamed another over it) or removed while we waited, the lock is taken on
    what the path names now. With `create`, a missing file is created (0600, private parent folders).
    """

    fd: int
    st: os.stat_result
    created: bool  # the file did not exist: this lock created it (empty)

    def __init__(self, path: str, *, create: bool) -> None:
        self.path = path
        self._create = create
        self.fd = -1

    def __enter__(self) -> WriterLock | None:
        flags = os.O_RDWR | os.O_APPEND  # read/write: opening a pipe does not wait for its other end
        self.created = False
        while True:
            try:
                fd = open_file(self.path, flags | (os.O_CREAT | os.O_EXCL if self.created else 0))
            except FileNotFoundError:
                if not self._create:
                    return None
                if os.path.islink(self.path):  # a link to a file yet to be made: make the file it names
                    self.path = os.path.realpath(self.path)
                make_private_dirs(os.path.dirname(self.path))
                self.created = True  # the next try creates it, unless another writer does first
                continue
            except FileExistsError:
                self.created = False
                continue
            try:
                st = os.fstat(fd)
                check_regular(st, self.path)  # before the lock: flock would wait on a device another holds
                self._claim(fd, st)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    st = os.fstat(fd)
                    now = os.stat(self.path)
                except BaseException:
                    self._release(fd)
                    raise
                if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                    self.fd, self.st = fd, st
                    return self
                self._release(fd)
            except FileNotFoundError:
                pass  # replaced or removed while we waited: try the path again
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
            self.created = False

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            self._release(self.fd)
            os.close(self.fd)  # releases the lock
            self.fd = -1

    def adopt(self, fd: int) -> None:
        """Holds the lock through `fd` (the new file that took the path, locked by `replace`) instead."""
        self.__exit__()
        self.fd, self.st = fd, os.fstat(fd)

    @staticmethod
    def _claim(fd: int, st: os.stat_result) -> None:
        identity = (st.st_dev, st.st_ino)
        me = threading.get_ident()
        with _held_guard:
            for owned, thread in _held.values():
                if owned == identity and thread == me:
                    raise RuntimeError(
                        "this thread already writes to this conversation file (a redact callback or a save's "
                        "iterator that writes to the file being written would wait for itself forever)"
                    )
            _held[fd] = (identity, me)

    @staticmethod
    def _release(fd: int) -> None:
        with _held_guard:
            _held.pop(fd, None)


def writer_active(fd: int) -> bool:
    """Whether some writer holds the lock of the open file right now (without waiting for it)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False
