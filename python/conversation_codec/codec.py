"""ConversationCodec: a conversation (a list of JSON messages) kept in one local file.

The steps, one direction each, every one in one place:
    save:         redact -> encode blocks (Rust) -> seal each block (frames) -> replace the file (storage)
    save_turns:   the same, a turn of several messages a block (a frame) of its own
    append_turn:  redact -> encode (Rust) -> storage: lock, make the file end whole, seal, append, index
    pop, fork:    storage: lock, make the file end whole, then cut the last turn off / copy the bytes
    load, iter:   storage: read whole frames -> open each (frames: decrypt, inflate) -> decode (Rust)
The Rust core turns Python objects into JSONL bytes and back; `frames` seals and opens stored frames; `storage`
owns the file: its lock, torn tails, the index cache. The rules that keep a conversation whole are in storage.py.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from . import _core, crypto
from .frames import Framing, blocks, turn_blocks
from .storage import FileStore, Report

__all__ = ["ConversationCodec", "Message", "Redactor", "Report"]

Message = Any
Redactor = Callable[[Message], Message]


class ConversationCodec:
    """Saves, appends to and loads one conversation at `path`.

    `redact`, if given, is called once per message by `save()` and `append_turn()`; the file holds only what it
    returns. `fernet_key` (a key from `Fernet.generate_key()`, a list of keys, or a `Fernet`/`MultiFernet`)
    encrypts the file: with a list, the first key encrypts and every key decrypts (`rotate()` then re-encrypts
    under the first). It needs the optional `cryptography` package, and a codec with a key reads only encrypted
    files. `compressed=True` writes gzip (RFC 1952, readable by `gzip -dc`) at `compression_level` (0-12:
    libdeflate's levels; 6, the default, is zlib's usual). `durable=False` skips the flushes to disk: still
    atomic, but a power cut may lose the last write. Reading needs no options but the key: the format is
    recognised from the bytes.
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
        self._framing = Framing(cipher, compressed, compression_level)
        self._store_of: tuple[Path, bool, FileStore] | None = None

    def __repr__(self) -> str:
        framing = self._framing
        return (
            f"{type(self).__name__}({str(self.path)!r}, encrypted={framing.cipher is not None}, "
            f"compressed={framing.compressed})"
        )

    @property
    def _store(self) -> FileStore:
        # `path` and `durable` are plain attributes (as in the original design): the store follows them.
        cached = self._store_of
        if cached is None or cached[0] is not self.path or cached[1] != self.durable:
            cached = (self.path, self.durable, FileStore(os.fspath(self.path), self._framing, durable=self.durable))
            self._store_of = cached
        return cached[2]

    # ---- writing ------------------------------------------------------------------------------------------

    def save(self, messages: Iterable[Message]) -> None:
        """Replace the stored conversation with `messages` (any iterable, streamed to disk in bounded memory).

        Nothing changes if any message fails to encode. Appends wait for the save and land after it.
        """
        if self.redact is not None:
            messages = map(self.redact, messages)
        self._store.replace(blocks(messages, self._framing.frame_bytes))

    def save_turns(self, turns: Iterable[list[Message]]) -> None:
        """`save()` of a conversation given turn by turn, each turn a list of messages (as `iter_turns()` gives
        them): each stays a turn, as if it had been appended with `append_turn()`, so `load(whole_turns=True)` and
        `pop_turn()` keep them together. Streamed in bounded memory; nothing changes if any message fails to
        encode or a turn is not a list."""
        self._store.replace(turn_blocks(self._turns(turns), self._framing.frame_bytes))

    def _turns(self, turns: Iterable[list[Message]]) -> Iterator[list[Message]]:
        redact = self.redact
        for i, turn in enumerate(turns):
            if not isinstance(turn, list):
                raise TypeError(f"save_turns() takes lists of messages: turn {i} is a {type(turn).__name__}")
            yield list(turn) if redact is None else [redact(m) for m in turn]  # a list of its own, read once

    def append_turn(self, turn: Message | list[Message]) -> None:
        """Add one message, or a list of messages written together (all or none), without rewriting the file.

        A list is always a list of messages: to append one message that is itself a JSON array, pass `[array]`.
        """
        messages = turn if isinstance(turn, list) else [turn]
        if not messages:
            return
        if self.redact is not None:
            messages = [self.redact(m) for m in messages]
        self._store.append(_core.encode_lines(messages))

    def encrypt(self) -> None:
        """Encrypt an existing plain or gzip conversation under this codec's key, in place and atomically.

        A codec with a key refuses to read unencrypted data (anyone able to write the file could slip messages
        into it); this is how such a conversation becomes an encrypted one. Does nothing if it already is.
        """
        if self._framing.cipher is None:
            raise ValueError("encrypt() needs a codec with a fernet_key")
        self._store.rewrite(unencrypted=True)

    def rotate(self) -> None:
        """Encrypt every frame again under the first of this codec's keys, in place and atomically.

        Give the codec the new key first and the old ones after (`fernet_key=[new, old]`): every key in the list
        reads the file, and after `rotate()` the old keys no longer do. A crash leaves the old file or the new one.
        The file is rewritten in this codec's format (`compressed` or not). Does nothing if there is no file.
        """
        if self._framing.cipher is None:
            raise ValueError("rotate() needs a codec with a fernet_key")
        self._store.rewrite(unencrypted=False)

    # ---- reading ------------------------------------------------------------------------------------------

    def pop(self) -> Message:
        """Removes the last message and returns it (IndexError if there is none), without rewriting the file.

        The file is cut where the last message starts. In a gzip or encrypted file, where a turn is one frame, the
        rest of its turn is written back as one frame; a pop cut short there (a crash, a failed write) is undone by
        the next writer or `repair()`, from what it kept in `<name>.pop`: a crash never leaves a pop half done.
        """
        popped = self._store.pop(turn=False)
        if not popped:
            raise IndexError(f"pop from an empty conversation: {self.path}")
        return popped[0]

    def pop_turn(self) -> list[Message]:
        """Removes the last turn (what one `append_turn` wrote; a message of a `save()` is a turn of its own) and
        returns its messages ([] if the conversation is empty). The file is cut where the turn starts."""
        return self._store.pop(turn=True)

    def fork(self, path: str | os.PathLike[str]) -> ConversationCodec:
        """Copies the conversation into a new file at `path` (FileExistsError if one is there) and returns a codec
        for it with this codec's options and key. The copy is the stored bytes as they are, taken whole (no write
        is half in it), so it costs a file copy, not a re-encoding; on filesystems that share blocks (btrfs, XFS)
        the two files share them. The two conversations then go their own ways."""
        self._store.fork(os.fspath(path))
        framing = self._framing
        return ConversationCodec(
            path,
            self.redact,
            framing.cipher,
            compressed=framing.compressed,
            compression_level=framing.level,
            durable=self.durable,
        )

    def load(self, last: int | None = None, *, whole_turns: bool = False) -> list[Message]:
        """The stored conversation, or its last `last` messages; [] when the file is missing or empty.

        With `whole_turns`, the result starts where the turn that holds the first of the last `last` messages
        starts, so that no turn comes cut in two (a tool's result never without the call that asked for it): it
        may hold more than `last` messages."""
        if last is not None:
            if isinstance(last, bool) or not isinstance(last, int) or last < 0:
                raise ValueError(f"last must be a non-negative int or None, not {last!r}")
            if last == 0:
                return []
        store = self._store
        with store.reading() as view:
            if view is None:
                return []
            return store.load(view) if last is None else store.tail(view, last, whole_turns=whole_turns)

    def __len__(self) -> int:
        """The number of messages: what `len(load())` is, mostly without reading the conversation (the index)."""
        store = self._store
        with store.reading() as view:
            return 0 if view is None else store.count(view)

    def __iter__(self) -> Iterator[Message]:
        return self.iter()

    def iter(self) -> Iterator[Message]:
        """The messages one at a time, reading the file a block at a time: memory is bounded by one frame."""
        store = self._store
        with store.reading() as view:
            if view is not None:
                yield from store.iterate(view)

    def iter_turns(self) -> Iterator[list[Message]]:
        """The turns one at a time, each the list of its messages: what one `append_turn()` wrote, or a single
        message (of a `save()`, or of a file another tool wrote). Reads as `iter()` does."""
        store = self._store
        with store.reading() as view:
            if view is not None:
                yield from store.iterate(view, turns=True)

    # ---- checking -----------------------------------------------------------------------------------------

    def verify(self) -> Report:
        """Read every frame (decrypting and inflating it) and check counts, CRCs and the index; writes nothing.

        The report has `ok`, `messages`, `turns`, `frames`, `torn_tail_bytes`, `errors` ((byte offset, what) pairs)
        and `index`.
        """
        return self._store.verify()

    def repair(self) -> list[str]:
        """Make the file sound: a torn tail is moved to a side file; a file damaged in the middle is rewritten
        with every intact frame, and the damaged original kept beside it (`<name>.damaged`). Never deletes
        anything. Returns the names of the side files written."""
        written, _ = self._store.repair()
        return written

    # ---- async: the same calls in a worker thread (asyncio.to_thread): the event loop never waits for the disk -

    async def asave(self, messages: Iterable[Message]) -> None:
        """`save()` in a worker thread; `messages` is consumed there."""
        await asyncio.to_thread(self.save, messages)

    async def asave_turns(self, turns: Iterable[list[Message]]) -> None:
        """`save_turns()` in a worker thread; `turns` is consumed there."""
        await asyncio.to_thread(self.save_turns, turns)

    async def aappend_turn(self, turn: Message | list[Message]) -> None:
        """`append_turn()` in a worker thread."""
        await asyncio.to_thread(self.append_turn, turn)

    async def aload(self, last: int | None = None, *, whole_turns: bool = False) -> list[Message]:
        """`load()` in a worker thread."""
        return await asyncio.to_thread(self.load, last, whole_turns=whole_turns)

    async def apop(self) -> Message:
        """`pop()` in a worker thread."""
        return await asyncio.to_thread(self.pop)

    async def apop_turn(self) -> list[Message]:
        """`pop_turn()` in a worker thread."""
        return await asyncio.to_thread(self.pop_turn)

    async def afork(self, path: str | os.PathLike[str]) -> ConversationCodec:
        """`fork()` in a worker thread."""
        return await asyncio.to_thread(self.fork, path)

    async def alen(self) -> int:
        """`len(codec)` in a worker thread."""
        return await asyncio.to_thread(len, self)

    async def aencrypt(self) -> None:
        """`encrypt()` in a worker thread."""
        await asyncio.to_thread(self.encrypt)

    async def arotate(self) -> None:
        """`rotate()` in a worker thread."""
        await asyncio.to_thread(self.rotate)

    async def averify(self) -> Report:
        """`verify()` in a worker thread."""
        return await asyncio.to_thread(self.verify)

    async def arepair(self) -> list[str]:
        """`repair()` in a worker thread."""
        return await asyncio.to_thread(self.repair)
