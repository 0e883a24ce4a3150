"""The exceptions and warnings users catch.

Every error this package raises for bad data derives from `CodecError`, which is a `ValueError`: the original
pure-Python design (stdlib `json` + `cryptography`) raised `ValueError`s for unreadable data, and `except
ValueError` keeps catching ours. Each class also derives from the builtin the original raised in the same
situation: an unserializable value is a `TypeError` too, a wrong key an `InvalidToken` too. The Rust core raises
`DecodeError`, `EncodeError` and `CorruptFileError` itself (it imports this module).
"""

from __future__ import annotations

__all__ = [
    "CodecError",
    "CorruptFileError",
    "DecodeError",
    "DecryptionError",
    "EncodeError",
    "FormatMismatchError",
    "TornTailWarning",
    "UnencryptedFileError",
]


class CodecError(ValueError):
    """Base class of every error raised for bad data: corrupt files, wrong keys, unserializable values."""


class DecodeError(CodecError):
    """A line of a conversation file is not valid JSON (or not valid UTF-8).

    `source` names the file, `lineno` and `colno` are 1-based, `reason` says what is wrong.
    """

    def __init__(self, source: str, lineno: int, colno: int, reason: str) -> None:
        super().__init__(f"{source}: line {lineno}, column {colno}: {reason}")
        self.source = source
        self.lineno = lineno
        self.colno = colno
        self.reason = reason

    def __reduce__(self) -> tuple[type[DecodeError], tuple[str, int, int, str]]:
        return (type(self), (self.source, self.lineno, self.colno, self.reason))


class EncodeError(CodecError, TypeError):
    """A message holds a value that cannot be written as JSON.

    `where` is the key path of the value, for example `messages[3]["content"][0]["data"]`. The stdlib raises
    `TypeError` for an unserializable type and `ValueError` for a circular reference; this class is both.
    """

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason

    def __reduce__(self) -> tuple[type[EncodeError], tuple[str, str]]:
        return (type(self), (self.where, self.reason))


class CorruptFileError(CodecError):
    """Stored data is damaged: a frame that does not parse, a checksum or count that does not match, frames of an
    encrypted conversation dropped, reordered or spliced in.

    `source` names the file, `offset` is the byte offset in it where the damage was found, `reason` says what.
    """

    def __init__(self, source: str, offset: int, reason: str) -> None:
        super().__init__(f"{source}: {reason} (at byte {offset})")
        self.source = source
        self.offset = offset
        self.reason = reason

    def __reduce__(self) -> tuple[type[CorruptFileError], tuple[str, int, str]]:
        return (type(self), (self.source, self.offset, self.reason))


class DecryptionError(CodecError):
    """An encrypted file cannot be decrypted with the key given: a wrong key, or no key given.

    When raised for a frame the key does not open it is also a `cryptography.fernet.InvalidToken`, as the
    original raised, and `offset` is the frame's byte offset. A frame the key does not open in a file whose other
    frames it opens was altered: that is a `CorruptFileError` instead.
    """

    offset: int | None = None


class FormatMismatchError(CodecError):
    """The options of a codec do not match the format of the file it is asked to read or extend."""


class UnencryptedFileError(FormatMismatchError):
    """A codec given a key found a conversation that is not encrypted.

    Loading it would let whoever can write the file inject unauthenticated messages into an encrypted memory, so
    it is refused; `ConversationCodec.encrypt()` encrypts an existing conversation under the codec's key.
    """


class TornTailWarning(UserWarning):
    """The end of a conversation file holds the bytes of a write that did not complete (a crash mid-append).

    Those bytes were never acknowledged: readers return the conversation without them, and the next writer (or
    `repair()`) moves them to a side file `<name>.torn-<offset>`.
    """
