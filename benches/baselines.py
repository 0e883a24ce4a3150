"""The implementations conversation-codec is measured against, written out (../shared/BENCH.md).

`Original` is the original pure-Python design, the drop-in this package replaces; the interoperability tests
use it too (files it writes must load here, and plain files written here must load with it).
`Orjson` is what a careful user would write instead with orjson; `OrjsonDurable` the same, written the way a
durable save is (temp file, fsync, rename, folder fsync): the like-with-like reference for our default save.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any, Callable


class Original:
    """The original design: stdlib json, one `json.dumps` per line; Fernet over the whole JSONL."""

    def __init__(
        self,
        path: str | Path,
        redact: Callable[[Any], Any] | None = None,
        fernet_key: bytes | None = None,
        compressed: bool = False,
    ) -> None:
        self.path = Path(path)
        self.redact = redact
        self.fernet = None
        if fernet_key is not None:
            from cryptography.fernet import Fernet

            self.fernet = Fernet(fernet_key)
        self.compressed = compressed

    def save(self, messages: list[Any]) -> None:
        if self.redact is not None:
            messages = [self.redact(m) for m in messages]
        if self.fernet is None and not self.compressed:
            with open(self.path, "w", encoding="utf-8") as f:
                for msg in messages:
                    f.write(json.dumps(msg) + "\n")
            return
        data = "".join(json.dumps(m) + "\n" for m in messages).encode("utf-8")
        if self.compressed:
            data = gzip.compress(data, compresslevel=6)
        if self.fernet is not None:
            data = self.fernet.encrypt(data)
        self.path.write_bytes(data)

    def load(self) -> list[Any]:
        if not self.path.exists():
            return []
        if self.fernet is None and not self.compressed:
            with open(self.path, encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        data = self.path.read_bytes()
        if self.fernet is not None:
            data = self.fernet.decrypt(data)
        if self.compressed:
            data = gzip.decompress(data)
        return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


class Orjson:
    """What a careful user would write with orjson: one buffer, one write, same gzip and Fernet steps."""

    def __init__(self, path: str | Path, fernet_key: bytes | None = None, compressed: bool = False) -> None:
        import orjson

        self._orjson = orjson
        self.path = Path(path)
        self.fernet = None
        if fernet_key is not None:
            from cryptography.fernet import Fernet

            self.fernet = Fernet(fernet_key)
        self.compressed = compressed

    def encode(self, messages: list[Any]) -> bytes:
        """The file's bytes: orjson per line, then gzip and Fernet as the options say."""
        dumps = self._orjson.dumps
        data = b"".join(dumps(m) + b"\n" for m in messages)
        if self.compressed:
            data = gzip.compress(data, compresslevel=6)
        if self.fernet is not None:
            data = self.fernet.encrypt(data)
        return data

    def save(self, messages: list[Any]) -> None:
        self.path.write_bytes(self.encode(messages))

    def load(self) -> list[Any]:
        data = self.path.read_bytes()
        if self.fernet is not None:
            data = self.fernet.decrypt(data)
        if self.compressed:
            data = gzip.decompress(data)
        loads = self._orjson.loads
        return [loads(line) for line in data.splitlines() if line.strip()]


class OrjsonDurable(Orjson):
    """`Orjson`, saved durably and atomically as our default save is: the same bytes written to a temp file in the
    same folder, fsync'd, renamed over the target with `os.replace`, then the folder fsync'd. Comparing our durable
    save with this one measures our work, not the disk's: the flushes cost what the disk costs."""

    def save(self, messages: list[Any]) -> None:
        data = self.encode(messages)
        tmp = self.path.with_name(f".{self.path.name}.orjson-tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        folder = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
