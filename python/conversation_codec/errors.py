"""The exceptions users catch.

Every error this package raises for bad data derives from `CodecError`. Each one also derives from the builtin
that the original pure-Python design (stdlib `json` + `cryptography`) raised in the same situation, so code
written against the original keeps catching what it caught: a corrupt line is a `ValueError`, an unserializable
value a `TypeError`. The Rust core raises `DecodeError` and `EncodeError` itself (it imports this module).
"""

from __future__ import annotations

__all__ = ["CodecError", "DecodeError", "DecryptionError", "EncodeError", "FormatMismatchError"]


class CodecError(Exception):
    """Base class of every error raised for bad data: corrupt files, wrong keys, unserializable values."""


class DecodeError(CodecError, ValueError):
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


class EncodeError(CodecError, TypeError, ValueError):
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


class DecryptionError(CodecError):
    """An encrypted file cannot be decrypted: wrong key, tampered or truncated data, or no key given.

    When raised for a bad token it is also a `cryptography.fernet.InvalidToken`, as the original raised.
    """


class FormatMismatchError(CodecError):
    """The options of a codec do not match the format of the file it is asked to extend."""
