"""The Rust core: JSONL bytes to and from Python objects. Private; use `conversation_codec`."""

from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, final

from typing_extensions import Buffer

__all__ = [
    "INDEX_HEADER_LEN",
    "INDEX_RECORD_LEN",
    "TURN_FLAG",
    "BlockWriter",
    "Encoded",
    "LineChunks",
    "LineDecoder",
    "__version__",
    "crc32",
    "decode_lines",
    "encode_chunks",
    "encode_lines",
    "gunzip",
    "gzip_member",
    "gzip_members",
    "index_header",
    "pack_records",
    "parse_index_header",
    "scan_gzip",
    "scan_plain",
    "unpack_records",
]

__version__: str
INDEX_HEADER_LEN: int
INDEX_RECORD_LEN: int
TURN_FLAG: int

@final
class Encoded:
    """Encoded JSONL, read through the buffer protocol (`memoryview(e)`, `bytes(e)`, `os.write(fd, e)`)."""

    def __buffer__(self, flags: int, /) -> memoryview: ...
    def __release_buffer__(self, buffer: memoryview, /) -> None: ...
    def __len__(self) -> int: ...
    @property
    def count(self) -> int:
        """The number of messages (lines) in it."""

def encode_lines(messages: Iterable[Any], /, *, start: int = 0) -> Encoded:
    """One compact JSON document per message, each followed by a newline, as UTF-8. `start`: the position of the
    first message in its conversation, for the key path in errors.

    Raises `EncodeError` (naming the key path) for a value that cannot be written, before returning anything,
    including nesting deeper than 1024 levels or than the calling thread's stack can hold.
    """

def encode_chunks(messages: Iterable[Any], /, *, chunk_size: int = 4194304, start: int = 0) -> LineChunks:
    """The same lines as `encode_lines`, a block of at least `chunk_size` bytes (but the last) at a time."""

@final
class LineChunks(Iterator[Encoded]):
    def __iter__(self) -> LineChunks: ...
    def __next__(self) -> Encoded: ...

def scan_plain(
    data: bytes, /, *, base: int = 0, target: int = 131072
) -> tuple[list[tuple[int, int, int, int]], int, tuple[int, str] | None]:
    """Plain JSONL `data`, at offset `base` of its file, cut into frames of whole turns: `(frames, end, error)`.

    A turn ends at a `\\n` not preceded by a TAB, or at the end of the data when its last line has no `\\n`, is
    JSON or blank and does not end with a TAB. `frames` are `(offset, length, count, crc32)`, each ending at the
    first turn end at least `target` bytes from its start; `end` is where the last one ends; bytes after it are
    a torn tail, not validated. `error` is `(offset, reason)` of the first line in a would-be-whole frame that is
    not JSON; the frames then stop before the frame holding it. At `base` 0, a BOM at the start is skipped.
    """

def crc32(data: Buffer, /) -> int: ...
def index_header(dev: int, ino: int, /) -> bytes:
    """The index header for the data file of identity (`st_dev`, `st_ino`)."""

def parse_index_header(data: bytes, /) -> tuple[int, int] | None:
    """The identity (`st_dev`, `st_ino`) in an index header; None if it is damaged or not an index's."""

def pack_records(records: Sequence[tuple[int, int, int, int, int]], /) -> bytes:
    """The records' bytes; ValueError for a length or count of 2**32 or more."""

def unpack_records(data: bytes, /, first: tuple[int, int] | None = None) -> list[tuple[int, int, int, int, int]]:
    """(offset, length, count, before, crc32) per record; ValueError for damaged or inconsecutive records."""

def gzip_member(data: bytes, /, *, level: int = 6, count: int, turn: bool = False) -> bytes:
    """One gzip member of `data` (a frame of `count` messages; one turn if `turn`), with the size and count in its
    header (docs/FORMAT.md 1.3)."""

def gzip_members(
    frames: list[bytes], counts: list[int], /, *, level: int = 6, turns: list[bool] | None = None
) -> list[bytes]:
    """`gzip_member` of each frame (one turn where `turns` says so), compressed in parallel on all cores."""

def scan_gzip(data: bytes, /, *, base: int = 0) -> tuple[list[tuple[int, int, int]], tuple[int, bool, str] | None]:
    """The whole members (offset, length, messages) of a gzip stream that starts at `base`, and where the scan
    stopped: None at the end of the data, else (offset, truncated, reason). `truncated` is true when the member at
    `offset` runs past the end of the data (a torn append, a short read), false when the bytes there are damaged.
    """

def gunzip(data: bytes, /, *, base: int = 0, source: object = "<bytes>") -> bytes:
    """The concatenated data of every member of a gzip stream that starts at `base`, each of ours checked (CRC,
    ISIZE, size and message count); `CorruptFileError(source, offset, reason)` for a damaged or truncated member,
    MemoryError if the data does not fit in memory.
    """

@final
class BlockWriter:
    """Writes blocks to a file on its own thread, without the GIL (Unix only), through its own duplicate of the
    descriptor it is given (close-on-exec; closed by `close()`)."""

    def __new__(cls, fd: int, /, *, durable: bool) -> BlockWriter: ...
    def put(self, block: Buffer, /) -> None:
        """Queues a block (an `Encoded` without copying; any C-contiguous buffer in one copy, else ValueError);
        raises the thread's write error, if it has stopped on one."""

    def close(self) -> None:
        """Waits for every queued block to be written and closes the writer's descriptor; OSError for a write
        error. Closing again does nothing."""

    def __enter__(self) -> BlockWriter: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> bool: ...

def decode_lines(data: bytes, /, *, source: str = "<bytes>", first_line: int = 1) -> list[Any]:
    """The messages of JSONL `data`, skipping blank lines.

    Raises `DecodeError` naming `source` and the line (counted from `first_line`) and column. `source` may be any
    str (a path from `os.fsdecode` need not be UTF-8); the error carries that very object.
    """

@final
class LineDecoder:
    """JSONL fed in pieces of any size; each `feed` returns the messages of the lines it completed."""

    def __new__(cls, *, source: str = "<bytes>", first_line: int = 1) -> LineDecoder: ...
    def feed(self, data: Buffer, /) -> list[Any]: ...
    def finish(self) -> list[Any]:
        """The message of a last line that had no line break after it."""
