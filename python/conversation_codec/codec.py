"""ConversationCodec: a conversation (a list of JSON messages) kept in one local file.

The whole data flow is here, one step per line, one direction:
    save: redact -> encode (Rust) -> encrypt -> write atomically
    load: read -> decrypt -> decode (Rust)
The Rust core (`_core`) only turns Python objects into JSONL bytes and back; it knows nothing of files or keys.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import _core, crypto, files
from .errors import DecryptionError

__all__ = ["ConversationCodec", "Message", "Redactor"]

Message = Any
Redactor = Callable[[Message], Message]


class ConversationCodec:
    """Saves and loads one conversation at `path`.

    `redact`, if given, is called once per message by `save()`; the file holds only what it returns.
    `fernet_key` (a key from `Fernet.generate_key()`, or a `Fernet`/`MultiFernet`) encrypts the file; it needs
    the optional `cryptography` package. `durable=False` skips the fsyncs: still atomic, but a power cut may
    lose the last save.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        redact: Redactor | None = None,
        fernet_key: crypto.FernetKey | None = None,
        *,
        durable: bool = True,
    ) -> None:
        self.path = Path(path)
        self.redact = redact
        self.durable = durable
        self._cipher = None if fernet_key is None else crypto.make_cipher(fernet_key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, encrypted={self._cipher is not None})"

    def save(self, messages: Iterable[Message]) -> None:
        """Replace the stored conversation with `messages`. Nothing is written if any message fails to encode."""
        if self.redact is not None:
            messages = map(self.redact, messages)
        chunks: Iterable[files.Chunk]
        if self._cipher is None:
            chunks = map(memoryview, _core.encode_chunks(messages))  # streamed: bounded memory
        else:
            # The original's format: one Fernet token of the whole JSONL (Fernet takes only `bytes`).
            chunks = [self._cipher.encrypt(bytes(_core.encode_lines(messages))) + b"\n"]
        files.write_atomic(self.path, chunks, durable=self.durable)

    def load(self) -> list[Message]:
        """The stored conversation; [] when the file is missing or empty."""
        chunks = files.read_chunks(self.path)
        try:
            first = next(chunks, None)
        except FileNotFoundError:
            return []
        if first is None:
            return []
        source = str(self.path)
        if crypto.looks_encrypted(first):
            if self._cipher is None:
                raise DecryptionError(f"{source}: the file is encrypted; pass fernet_key= to read it")
            # One token of the whole file: read it in one go (half the time of joining the blocks). Fernet's
            # base64 decoding skips the trailing newline, so the token needs no strip (a copy of 1.3x the text).
            chunks.close()
            token = self.path.read_bytes()
            return _core.decode_lines(crypto.decrypt(self._cipher, token, source), source=source)
        decoder = _core.LineDecoder(source=source)
        messages = decoder.feed(first)
        for chunk in chunks:
            messages += decoder.feed(chunk)
        messages += decoder.finish()
        return messages
