"""Frames: the units a data file is cut into (docs/FORMAT.md, 1.2), and how JSONL becomes a stored frame.

A frame is a run of whole JSONL lines written together: a block of a save, or one append. Stored, it is the JSONL
itself (plain), a gzip member (compressed), or a Fernet token line (encrypted; holding a gzip member when also
compressed). `Framing` seals blocks for one codec's options and opens a stored frame back into JSONL; `split` finds
the stored frames in a stretch of the data file.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from typing import Union

from . import _core, crypto
from .errors import CodecError, DecryptionError, FormatMismatchError

__all__ = ["FERNET", "FRAME_BYTES", "GZIP", "PLAIN", "Frame", "Framing", "gunzip", "kind_of", "split"]

PLAIN = "plain"
GZIP = "gzip"
FERNET = "fernet"

# The JSONL in one frame of a save: small enough that the last messages of a long conversation are read (and
# decrypted) in about a millisecond, large enough that the per-frame costs (a token, an index record) vanish.
FRAME_BYTES = 128 << 10
# Compressed, frames are larger: deflate restarts with each member, and at 1 MiB the file is within 0.5% of
# compressing the whole JSONL at once (about 3% at 128 KiB); inflating one takes about a millisecond.
GZIP_FRAME_BYTES = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
# Frames compressed together, in parallel in Rust (GIL released): a few per core keep every core busy.
_BATCH = 4 * (os.cpu_count() or 1)

Frame = tuple[int, int, int]  # (offset in the data file, stored length, messages)
Stored = Union[bytes, memoryview, _core.Encoded]

_WHITESPACE = frozenset(b" \t\r\n")
# Every Fernet token starts with the version byte 0x80, which base64url writes as "gA"; no JSON text starts with
# "g", so the first byte that is not whitespace tells an encrypted file from a plain one.
_TOKEN_START = ord("g")


def kind_of(head: Stored) -> str | None:
    """The kind of a data file from its first bytes, or None for an empty (or blank) one."""
    view = memoryview(head).cast("B")
    if bytes(view[:2]) == _GZIP_MAGIC:
        return GZIP
    for byte in view:
        if byte not in _WHITESPACE:
            return FERNET if byte == _TOKEN_START else PLAIN
    return None


class Framing:
    """How one codec's blocks of JSONL are stored: as they are, as gzip members, as Fernet tokens, or both."""

    def __init__(self, cipher: crypto.Cipher | None, compressed: bool = False, level: int = 6) -> None:
        self.cipher = cipher
        self.compressed = compressed
        self.level = level
        self.kind = FERNET if cipher is not None else GZIP if compressed else PLAIN
        self.frame_bytes = GZIP_FRAME_BYTES if compressed else FRAME_BYTES

    def seal(self, block: Stored, count: int) -> Stored:
        """One block of `count` messages as a stored frame."""
        if self.compressed:
            block = _core.gzip_member(bytes(block), level=self.level, count=count)
        if self.cipher is not None:
            block = self.cipher.encrypt(bytes(block)) + b"\n"  # Fernet takes only `bytes`
        return block

    def seal_all(self, blocks: Iterable[_core.Encoded]) -> Iterator[tuple[Stored, int]]:
        """Each block as a stored frame with its message count; compressed a batch at a time on all cores."""
        if not self.compressed:
            for block in blocks:
                yield self.seal(block, block.count), block.count
            return
        pending = iter(blocks)
        while batch := list(itertools.islice(pending, _BATCH)):
            counts = [b.count for b in batch]
            members = _core.gzip_members([bytes(b) for b in batch], counts, level=self.level)
            for member, count in zip(members, counts):
                yield (member if self.cipher is None else self.cipher.encrypt(member) + b"\n"), count

    def open(self, stored: bytes, source: str) -> bytes:
        """The JSONL of one stored frame: a token is decrypted, and a gzip member (inside one or not) inflated."""
        if self.cipher is not None:
            stored = crypto.decrypt(self.cipher, stored, source)
        return gunzip(stored, source) if stored[:2] == _GZIP_MAGIC else stored

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
    if kind == GZIP:
        members, stop = _core.scan_gzip(data, base=base)
        if stop is not None:
            raise CodecError(f"damaged gzip member at offset {stop[0]}: {stop[2]}")
        return members
    frames = []
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end + 1
        frames.append((base + start, end - start, -1))
        start = end
    return frames


def gunzip(data: bytes, source: str) -> bytes:
    """The JSONL of one or more gzip members (inflated in parallel in Rust)."""
    return _core.gunzip(data, source=source)
