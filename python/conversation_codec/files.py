"""Reading and crash-safe writing of whole files.

`write_atomic` is the one place a conversation file is replaced: the bytes go to a temporary file in the same
folder, which is flushed to disk and renamed over the target, and the folder is flushed so the rename itself
survives a power cut. A reader, or a process killed at any instant, sees the old file or the new one, never a
mix or an empty file. Concurrent writers each use their own temporary file; the last rename wins whole.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

__all__ = ["read_bytes", "write_atomic"]

# Conversations hold personal data: new files and folders are private to their owner.
NEW_FILE_MODE = 0o600
NEW_DIR_MODE = 0o700
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def read_bytes(path: Path) -> bytes | None:
    """The whole file, or None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` atomically; with `durable`, also survive a crash of the machine.

    An existing file keeps its permission bits; a new one gets 0600. Missing parent folders are created (0700).
    """
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True, mode=NEW_DIR_MODE)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = NEW_FILE_MODE
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, _OPEN_FLAGS, NEW_FILE_MODE)
    try:
        try:
            _write_all(fd, data)
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # Windows cannot open a folder to flush it; its renames are journaled by NTFS.
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
