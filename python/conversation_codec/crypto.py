"""Fernet encryption, through the optional `cryptography` package (pip install "conversation-codec[crypto]").

It is imported only when a codec is given a key, so plain use needs nothing beyond the standard library.
"""

from __future__ import annotations

import functools
from typing import Protocol, Union

from .errors import DecryptionError

__all__ = ["Cipher", "FernetKey", "decrypt", "make_cipher"]


class Cipher(Protocol):
    """What `cryptography.fernet.Fernet` and `MultiFernet` (key rotation) provide."""

    def encrypt(self, data: bytes) -> bytes: ...
    def decrypt(self, token: bytes) -> bytes: ...


FernetKey = Union[bytes, str, Cipher]


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


def decrypt(cipher: Cipher, token: bytes, source: str) -> bytes:
    from cryptography.fernet import InvalidToken

    try:
        return cipher.decrypt(token)
    except InvalidToken:
        raise _invalid_token_error()(
            f"{source}: cannot decrypt: wrong key, or the file was altered or truncated"
        ) from None


@functools.cache
def _invalid_token_error() -> type[DecryptionError]:
    # Also an InvalidToken, so that code written against the original, which let cryptography's exception
    # through, keeps catching it. Built lazily: cryptography is optional.
    from cryptography.fernet import InvalidToken

    return type("InvalidTokenError", (DecryptionError, InvalidToken), {"__module__": __name__})
