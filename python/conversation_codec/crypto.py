"""Fernet encryption, through the optional `cryptography` package (pip install "conversation-codec[crypto]").

It is imported only when a codec is given a key, so plain use needs nothing beyond the standard library. Key
material is never put in a message, a repr or a file name.
"""

from __future__ import annotations

import functools
from typing import Protocol, Union

from .errors import DecryptionError

__all__ = ["Cipher", "FernetKey", "decrypt", "is_one_token", "make_cipher"]


class Cipher(Protocol):
    """What `cryptography.fernet.Fernet` and `MultiFernet` (key rotation) provide."""

    def encrypt(self, data: bytes) -> bytes: ...
    def decrypt(self, token: bytes) -> bytes: ...


FernetKey = Union[bytes, str, Cipher]

# A Fernet token is urlsafe base64 (with its padding) of 1 + 8 + 16 + 16k + 32 bytes, k >= 1.
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def make_cipher(key: FernetKey) -> Cipher:
    """A Fernet for a key (bytes or str, as `Fernet.generate_key()` gives), or the Fernet/MultiFernet given."""
    if hasattr(key, "encrypt") and hasattr(key, "decrypt"):
        return key
    try:
        from cryptography.fernet import Fernet
    except ImportError as exc:
        raise ImportError(
            'fernet_key needs the cryptography package: pip install "conversation-codec[crypto]"'
        ) from exc
    return Fernet(key)


def is_one_token(line: bytes) -> bool:
    """Whether `line` (without its line break) is exactly one Fernet token, with nothing before or after it.

    cryptography's base64 decoding skips characters outside the alphabet, so two tokens joined by a space (one
    flipped bit in the line break between them) would decrypt as the first alone: such a line is refused here.
    """
    if len(line) % 4 or len(line) < 100:
        return False
    rest = line.translate(None, _ALPHABET)
    if rest not in (b"", b"=", b"==") or not line.endswith(rest):
        return False
    size = len(line) // 4 * 3 - len(rest)
    return size >= 73 and (size - 57) % 16 == 0


def decrypt(cipher: Cipher, token: bytes, source: str) -> bytes:
    from cryptography.fernet import InvalidToken

    try:
        return cipher.decrypt(token)
    except InvalidToken:
        raise _invalid_token_error()(f"{source}: cannot decrypt: wrong key, or the data was altered") from None


@functools.cache
def _invalid_token_error() -> type[DecryptionError]:
    # Also an InvalidToken, so that code written against the original, which let cryptography's exception
    # through, keeps catching it. Built lazily: cryptography is optional.
    from cryptography.fernet import InvalidToken

    return type("InvalidTokenError", (DecryptionError, InvalidToken), {"__module__": __name__})
