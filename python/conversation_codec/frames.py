"""Frames: the units a data file is cut into (docs/FORMAT.md, 1.2), and how JSONL becomes a stored frame.

A frame is a run of whole JSONL lines written together: a block of a save, or one append. Stored, it is the JSONL
itself (plain), or a Fernet token line. `Framing` seals a block for one codec's options and opens a stored frame
back into JSONL; `split` finds the stored frames in a stretch of the data file.
"""

from __future__ import annotations

from typing import Union

from . import _core, crypto
from .errors import DecryptionError, FormatMismatchError

__all__ = ["FERNET", "FRAME_BYTES", "PLAIN", "Frame", "Framing", "kind_of", "split"]

PLAIN = "plain"
FERNET = "fernet"

# The JSONL in one frame of a save: small enough that the last messages of a long conversation are read (and
# decrypted) in about a millisecond, large enough that the per-frame costs (a token, an index record) vanish.
FRAME_BYTES = 128 << 10

Frame = tuple[int, int, int]  # (offset in the data file, stored length, messages)
Stored = Union[bytes, memoryview, _core.Encoded]

_WHITESPACE = frozenset(b" \t\r\n")


def kind_of(head: Stored) -> str | None:
    """The kind of a data file from its first bytes, or None for an empty (or blank) one."""
    for byte in memoryview(head).cast("B"):
        if byte not in _WHITESPACE:
            return FERNET if crypto.looks_encrypted(bytes([byte])) else PLAIN
    return None


class Framing:
    """How one codec's blocks of JSONL are stored: as they are, or each as one Fernet token line."""

    def __init__(self, cipher: crypto.Cipher | None) -> None:
        self.cipher = cipher
        self.kind = PLAIN if cipher is None else FERNET

    def seal(self, block: Stored) -> Stored:
        if self.cipher is None:
            return block
        return self.cipher.encrypt(bytes(block)) + b"\n"  # Fernet takes only `bytes`

    def open(self, stored: bytes, source: str) -> bytes:
        """The JSONL of one stored frame."""
        if self.cipher is None:
            return stored
        return crypto.decrypt(self.cipher, stored, source)

    def check(self, kind: str | None, source: str, *, writing: bool) -> None:
        """Refuse a data file of another kind than this codec's options."""
        if kind is None or kind == self.kind:
            return
        if writing:
            raise FormatMismatchError(
                f"{source}: the file is {kind}, but this codec writes {self.kind}: "
                "open it with the options it was written with"
            )
        if kind == FERNET and self.cipher is None:
            raise DecryptionError(f"{source}: the file is encrypted; pass fernet_key= to read it")


def split(kind: str, data: bytes, base: int) -> list[Frame]:
    """The stored frames in `data`, which starts at offset `base` of the data file.

    Plain JSONL is cut into frames of about FRAME_BYTES of whole lines, its messages counted in Rust. Encrypted
    data is cut at its token lines; their message counts are not known until decrypted (-1).
    """
    if kind == PLAIN:
        return [(offset, length, count) for offset, length, count, _ in _core.scan_plain(data, base=base)]
    frames = []
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end + 1
        frames.append((base + start, end - start, -1))
        start = end
    return frames
