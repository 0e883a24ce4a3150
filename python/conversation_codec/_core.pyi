"""The Rust core: JSONL bytes to and from Python objects. Private; use `conversation_codec`."""

from collections.abc import Iterable, Iterator
from typing import Any, final

__all__ = ["Encoded", "LineChunks", "LineDecoder", "__version__", "decode_lines", "encode_chunks", "encode_lines"]

__version__: str

@final
class Encoded:
    """Encoded JSONL, read through the buffer protocol (`memoryview(e)`, `bytes(e)`, `os.write(fd, e)`)."""

    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __release_buffer__(self, buffer: memoryview, /) -> None: ...
    def __len__(self) -> int: ...

def encode_lines(messages: Iterable[Any], /) -> Encoded:
    """One compact JSON document per message, each followed by a newline, as UTF-8.

    Raises `EncodeError` (naming the key path) for a value that cannot be written, before returning anything.
    """

def encode_chunks(messages: Iterable[Any], /, *, chunk_size: int = 4194304) -> LineChunks:
    """The same lines as `encode_lines`, a block of at least `chunk_size` bytes (but the last) at a time."""

@final
class LineChunks(Iterator[Encoded]):
    def __iter__(self) -> LineChunks: ...
    def __next__(self) -> Encoded: ...

def decode_lines(data: bytes, /, *, source: str = "<bytes>", first_line: int = 1) -> list[Any]:
    """The messages of JSONL `data`, skipping blank lines.

    Raises `DecodeError` naming `source` and the line (counted from `first_line`) and column.
    """

@final
class LineDecoder:
    """JSONL fed in pieces of any size; each `feed` returns the messages of the lines it completed."""

    def __new__(cls, *, source: str = "<bytes>", first_line: int = 1) -> LineDecoder: ...
    def feed(self, data: bytes | bytearray | memoryview, /) -> list[Any]: ...
    def finish(self) -> list[Any]:
        """The message of a last line that had no line break after it."""
