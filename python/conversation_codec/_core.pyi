"""The Rust core: JSONL bytes to and from Python objects. Private; use `conversation_codec`."""

from collections.abc import Iterable
from typing import Any

__version__: str

def encode_lines(messages: Iterable[Any], /) -> bytes:
    """One compact JSON document per message, each followed by a newline, as UTF-8.

    Raises `EncodeError` (naming the key path) for a value that cannot be written, before returning anything.
    """

def decode_lines(data: bytes, /, *, source: str = "<bytes>", first_line: int = 1) -> list[Any]:
    """The messages of JSONL `data`, skipping blank lines.

    Raises `DecodeError` naming `source` and the line (counted from `first_line`) and column.
    """
