"""SessionStore: many conversations under one folder, one file each, addressed by any string id.

Every id is encoded reversibly into a file name that is safe on any common file system (docs/SESSIONS.md):
bytes of `[a-z0-9_-]` stand for themselves, every other byte of the id's UTF-8 is `%xx` (lowercase hex), so names
hold no separator, dot, NUL or upper-case letter, and two ids never share a name, not even on a case-insensitive or
normalising file system. The names are spread over 256 shard folders by a hash of the name. The store itself is
stateless: the folder is the only truth, so any number of stores, threads and processes may share one root; each
conversation is a `ConversationCodec` with the codec's own locking.

Nothing planted inside the store is followed: a symbolic link (or anything but a folder or a regular file) where
the store keeps a shard folder or a conversation file is refused with an `OSError` naming it, when a codec is
handed out and again before each of its operations.
"""

from __future__ import annotations

import asyncio
import codecs
import errno
import os
import re
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path

from . import crypto, files
from .codec import ConversationCodec, Redactor
from .storage import FileStore

__all__ = ["MAX_ENCODED_ID", "SessionCodec", "SessionStore", "decode_id", "encode_id", "shard_of"]

SUFFIX = ".jsonl"
# The encoded id may take at most 200 bytes: with `.jsonl` and the codec's longest side file
# (`<name>.torn-<19 digits>.<n>`, `.<name>.idx.tmp`) the names stay within the 255 bytes file systems allow.
MAX_ENCODED_ID = 200

_SAFE = b"abcdefghijklmnopqrstuvwxyz0123456789_-"
_ESCAPED = [chr(b) if b in _SAFE else f"%{b:02x}" for b in range(256)]
_AS_IS = re.compile(r"[a-z0-9_][a-z0-9_-]*")  # ids stored under their own name
# `%xx` of a byte outside _SAFE (tests/test_sessions.py checks it against _SAFE, byte by byte).
_ESCAPE_OF_UNSAFE = r"%(?:[0148-9a-f][0-9a-f]|2[0-9a-ce-f]|3[a-f]|5[0-9a-e]|60|7[b-f])"
# Exactly the stems encode_id writes, but for the escaped device names below: names are checked with it rather
# than by encoding each id again, which took half the time of listing a store. Runs of plain characters are taken
# by one class: an alternation per character is four times slower.
_CANONICAL = re.compile(rf"(?:[a-z0-9_]|%2d|{_ESCAPE_OF_UNSAFE})[a-z0-9_-]*(?:{_ESCAPE_OF_UNSAFE}[a-z0-9_-]*)*")
_SHARD = re.compile(r"[0-9a-f]{2}")
# Device names Windows reserves whatever the extension (`nul.jsonl` is NUL): their first letter is escaped, so a
# store copied to such a file system keeps every conversation.
_RESERVED = frozenset(["con", "prn", "aux", "nul", *(f"{d}{i}" for d in ("com", "lpt") for i in range(10))])
_RESERVED_ESCAPED = frozenset(f"%{ord(name[0]):02x}{name[1:]}" for name in _RESERVED)
# The stems that may be ours among the names of a shard folder joined by `/` (which no name holds): one pass.
_NAMES = re.compile(rf"(?<![^/])([a-z0-9_%-]{{1,{MAX_ENCODED_ID}}}){re.escape(SUFFIX)}(?![^/])")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW


def encode_id(session_id: str) -> str:
    """The file name stem of `session_id` (the name is the stem + `.jsonl`).

    Raises TypeError for a non-str and ValueError for an empty id or one whose stem would exceed
    `MAX_ENCODED_ID` bytes: 200 characters of `[a-z0-9_-]`; every other character costs 3 bytes per byte of its
    UTF-8 (an upper-case letter 3, `é` 6, `中` 9). Lone surrogates are kept (as the bytes `surrogatepass` gives).
    """
    if not isinstance(session_id, str):
        raise TypeError(f"a session id must be a str, not {type(session_id).__name__}")
    if type(session_id) is not str:
        session_id = str.__str__(session_id)  # the characters only: no method of a subclass is called
    if not session_id:
        raise ValueError("a session id must not be empty")
    if len(session_id) > MAX_ENCODED_ID:  # every character takes at least one byte: no need to encode it all
        raise ValueError(f"session id too long: {len(session_id)} characters (it may encode to {MAX_ENCODED_ID} bytes)")
    if _AS_IS.fullmatch(session_id):
        stem = session_id
    else:
        stem = "".join([_ESCAPED[b] for b in session_id.encode("utf-8", "surrogatepass")])
    if stem[0] == "-" or stem in _RESERVED:
        # A leading `-` would read as a command-line option (`rm *`); a device name would not be a file on Windows.
        stem = f"%{ord(stem[0]):02x}{stem[1:]}"
    if len(stem) > MAX_ENCODED_ID:
        raise ValueError(
            f"session id too long: it encodes to {len(stem)} bytes (at most {MAX_ENCODED_ID}; each character "
            "outside [a-z0-9_-] takes 3 bytes per byte of its UTF-8)"
        )
    return stem


def decode_id(stem: str) -> str | None:
    """The id whose stem is `stem`, or None if `encode_id` never gives that stem (a name the store did not write)."""
    if _AS_IS.fullmatch(stem):
        return None if stem in _RESERVED else stem
    # Only the one spelling the encoder writes: `%61` for `a`, or an unescaped `-` in front, is someone else's file.
    if len(stem) > MAX_ENCODED_ID or not (_CANONICAL.fullmatch(stem) or stem in _RESERVED_ESCAPED):
        return None
    return _unescape(stem)


def _unescape(stem: str) -> str | None:
    """The id of a canonical stem that holds escapes; None if its bytes are not UTF-8."""
    # The stem's only backslash escapes are the `%xx` turned into `\xNN` (it holds no backslash of its own), so
    # the C decoder behind pickle's protocol 0 unescapes it: four times as fast as a loop over the parts.
    try:
        return codecs.escape_decode(stem.replace("%", "\\x"))[0].decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return None


def shard_of(stem: str) -> str:
    """The shard folder of an encoded id: the low byte of the CRC-32 (gzip's, as zlib.crc32) of its ASCII bytes, as
    two lowercase hex digits.

    A shard only spreads files: it needs no cryptographic hash (none would stop ids chosen to share a shard, as no
    secret is involved). CRC-32 spreads ids as evenly as BLAKE2b does, is in every language's zlib, and costs a fifth
    as much: listing a store hashes every name in it."""
    return f"{zlib.crc32(stem.encode('ascii')) & 0xFF:02x}"


def _refuse(path: str, mode: int, expected: str) -> OSError:
    """The error for something other than the store's own folder or file in its place: the precise builtin."""
    if stat.S_ISLNK(mode):
        return OSError(errno.ELOOP, f"symbolic link where the session store keeps a {expected}; not followed", path)
    code = errno.ENOTDIR if expected == "shard folder" else errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL
    return OSError(code, f"not a {expected} the session store made: refused", path)


def _check_place(shard_dir: str, path: str) -> bool:
    """Whether the conversation file exists; raises if its shard folder or the file itself is a symbolic link or
    anything but a folder and a regular file (a FIFO would hang a reader)."""
    try:
        st = os.lstat(shard_dir)
    except FileNotFoundError:
        return False  # nothing there yet: the first write makes the folder
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(shard_dir, st.st_mode, "shard folder")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, st.st_mode, "conversation file")
    return True


class SessionCodec(ConversationCodec):
    """The `ConversationCodec` of one session of a `SessionStore`. Before each operation it checks that neither
    its shard folder nor its file has become a symbolic link (the plain codec follows links by design)."""

    def __init__(
        self,
        session_id: str,
        path: str,
        redact: Redactor | None,
        fernet_key: crypto.FernetKey | None,
        *,
        compressed: bool,
        compression_level: int,
        durable: bool,
    ) -> None:
        super().__init__(
            path, redact, fernet_key, compressed=compressed, compression_level=compression_level, durable=durable
        )
        self.session_id = session_id
        self._place = (self.path, os.path.dirname(path), path)

    @property
    def _store(self) -> FileStore:
        # Every operation (reads, writes, repair, and any added later) reaches the file through `_store`.
        given, shard_dir, path = self._place
        if self.path is not given:  # `path` is a plain attribute, as the codec's
            path = os.fspath(self.path)
            shard_dir = os.path.dirname(path)
        _check_place(shard_dir, path)
        return super()._store


class SessionStore:
    """Conversations kept under the folder `root`, one per session id, each a `ConversationCodec` with the options
    given here (`redact`, `fernet_key`, `compressed`, `compression_level`, `durable`: as the codec's).

    Any non-empty str is a valid id, stored under a name that encodes it reversibly and safely (`..`, `/`, NUL,
    `CON`, ids differing only by case: all distinct files inside `root`); only ids whose encoding exceeds
    `MAX_ENCODED_ID` bytes are refused (ValueError), and non-str ids (TypeError). Folders are made on the first
    write, 0700, files 0600. Constructing a store touches nothing on disk.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        redact: Redactor | None = None,
        fernet_key: crypto.FernetKey | None = None,
        *,
        compressed: bool = False,
        compression_level: int = 6,
        durable: bool = True,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self.redact = redact
        self._fernet_key = fernet_key
        self.compressed = compressed
        self.compression_level = compression_level
        self.durable = durable
        # The options are checked now, once, rather than at the first conversation(): a codec touches no file.
        self._codec(str(self.root / "00" / ("probe" + SUFFIX)), "probe")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.root)!r}, encrypted={self._fernet_key is not None}, "
            f"compressed={self.compressed})"
        )

    def _codec(self, path: str, session_id: str) -> SessionCodec:
        return SessionCodec(
            session_id,
            path,
            self.redact,
            self._fernet_key,
            compressed=self.compressed,
            compression_level=self.compression_level,
            durable=self.durable,
        )

    def _place(self, session_id: str) -> tuple[str, str, str]:
        """(shard folder, file name, file path) of a session; TypeError/ValueError for an id that cannot be one."""
        stem = encode_id(session_id)
        shard_dir = os.path.join(self.root, shard_of(stem))
        name = stem + SUFFIX
        return shard_dir, name, os.path.join(shard_dir, name)

    # ---- the sessions ----------------------------------------------------------------------------------------

    def conversation(self, session_id: str) -> SessionCodec:
        """The codec of session `session_id`, new or not (nothing is written until its first save or append).

        Raises ValueError/TypeError for an id that cannot be stored, and OSError naming the path when a symbolic
        link, or anything the store did not make, sits where its folder or file belongs.
        """
        shard_dir, _, path = self._place(session_id)
        _check_place(shard_dir, path)
        return self._codec(path, session_id)

    def fork(self, session_id: str, new_id: str) -> SessionCodec:
        """Copies session `session_id` into a new session `new_id` and returns its codec: `ConversationCodec.fork`
        (FileExistsError if `new_id` has a file; nothing is copied from a session without one)."""
        source = self.conversation(session_id)
        shard_dir, _, path = self._place(new_id)
        _check_place(shard_dir, path)
        source._store.fork(path)
        return self._codec(path, new_id)

    def sessions(self) -> Iterator[str]:
        """The ids of the stored sessions, as given, in no particular order; streamed shard by shard.

        Lists only files the store wrote: in a shard folder (not a link), a regular file whose name is the
        encoding of an id that belongs in that shard. The codec's side files (`.idx`, `.torn-*`, `.damaged`,
        `.pop`, `.tmp`) and anything foreign are skipped. A missing root holds no session.
        """
        try:
            root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            with os.scandir(root_fd) as entries:
                shards = [e.name for e in entries if _SHARD.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
            for shard in shards:
                try:
                    shard_fd = os.open(shard, _DIR_FLAGS, dir_fd=root_fd)
                except OSError:
                    continue  # removed, or swapped for a link, since it was listed
                try:
                    yield from _listed(shard_fd, int(shard, 16))
                finally:
                    os.close(shard_fd)
        finally:
            os.close(root_fd)

    def __iter__(self) -> Iterator[str]:
        return self.sessions()

    async def asessions(self) -> list[str]:
        """The ids of `sessions()`, listed in a worker thread (100,000 take a fraction of a second)."""
        return await asyncio.to_thread(lambda: list(self.sessions()))

    async def afork(self, session_id: str, new_id: str) -> SessionCodec:
        """`fork()` in a worker thread."""
        return await asyncio.to_thread(self.fork, session_id, new_id)

    async def adelete(self, session_id: str, *, missing_ok: bool = False) -> None:
        """`delete()` in a worker thread (it may wait for a save of the session to finish)."""
        await asyncio.to_thread(self.delete, session_id, missing_ok=missing_ok)

    # No __len__: it would have to list every shard (and `if store:` would call it).

    def __contains__(self, session_id: object) -> bool:
        """Whether the session has a file (an id that cannot be stored is in no store)."""
        if not isinstance(session_id, str):
            return False
        try:
            shard_dir, _, path = self._place(session_id)
            return _check_place(shard_dir, path)
        except (ValueError, OSError):
            return False

    def delete(self, session_id: str, *, missing_ok: bool = False) -> None:
        """Removes the session: its conversation file and every file named after it (the index, torn tails set
        aside, a damaged original kept by repair(), a temporary file of a killed save).

        It holds the conversation's writer lock while it removes them, the data file last: a save or an append
        in progress finishes first, and one that waited for the lock starts a new conversation afterwards. A
        reader that has the file open reads on what it opened. Raises KeyError when there is no such session
        (unless `missing_ok`), and OSError when a link sits in the session's place (nothing is removed then).
        """
        shard_dir, name, path = self._place(session_id)
        exists = _check_place(shard_dir, path)
        try:
            shard_fd = os.open(shard_dir, _DIR_FLAGS)
        except FileNotFoundError:
            shard_fd = -1
        if shard_fd < 0 or not (exists or _side_files(shard_fd, name)):
            if shard_fd >= 0:
                os.close(shard_fd)
            if missing_ok:
                return
            raise KeyError(session_id)
        try:
            # With only side files left, the lock makes an empty data file to hold while they go: no writer can
            # start on the session meanwhile.
            with files.WriterLock(path, create=True) as lock:
                assert lock is not None
                try:
                    here = os.stat(name, dir_fd=shard_fd, follow_symlinks=False)
                except FileNotFoundError:
                    here = None
                if here is None or (here.st_dev, here.st_ino) != (lock.st.st_dev, lock.st.st_ino):
                    # The path no longer names the file in the folder we opened: a link was swapped in.
                    raise OSError(errno.ELOOP, "the session's place changed while it was being deleted", path)
                removed = 0
                for side in _side_files(shard_fd, name):
                    try:
                        os.unlink(side, dir_fd=shard_fd)
                        removed += 1
                    except (FileNotFoundError, IsADirectoryError, PermissionError):
                        pass  # a folder of that name is not ours to empty
                os.unlink(name, dir_fd=shard_fd)
                if self.durable:
                    files.flush(shard_fd)
                existed = not lock.created or removed > 0
        finally:
            os.close(shard_fd)
        if not existed and not missing_ok:
            raise KeyError(session_id)


def _listed(shard_fd: int, shard: int) -> Iterator[str]:
    """The ids of the conversation files in one shard folder: the loop that listing 100,000 sessions is made of, so
    the names are read in one go and the candidates picked out by one regex pass over them all."""
    with os.scandir(shard_fd) as entries:
        names = "/".join([e.name for e in entries if e.is_file(follow_symlinks=False)])
    crc32, reserved, canonical, reserved_escaped = zlib.crc32, _RESERVED, _CANONICAL, _RESERVED_ESCAPED
    for stem in _NAMES.findall(names):
        if crc32(stem.encode("ascii")) & 0xFF != shard:
            continue  # not in its own shard
        if "%" not in stem:  # decode_id, unrolled
            if stem[0] != "-" and stem not in reserved:
                yield stem
        elif canonical.fullmatch(stem) or stem in reserved_escaped:
            session_id = _unescape(stem)
            if session_id is not None:
                yield session_id


def _side_files(shard_fd: int, name: str) -> list[str]:
    """The files named after the conversation file `name`: `<name>.*` and `.<name>.*` (every side file the codec
    writes; stems hold no dot, so no other session's names start so)."""
    ours, hidden = name + ".", "." + name + "."
    with os.scandir(shard_fd) as entries:
        return [e.name for e in entries if e.name.startswith(ours) or e.name.startswith(hidden)]
