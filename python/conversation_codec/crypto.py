"""Fernet encryption, through the optional `cryptography` package (pip install "conversation-codec[crypto]").

It is imported only when a codec is given a key, so plain use needs nothing beyond the standard library. Key
material is never put in a message, a repr, a file or a file name: an invalid key is named by its place in the
list of keys, never shown, and no exception carrying it is chained.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Protocol, Union

from .errors import DecryptionError

__all__ = ["Cipher", "FernetKey", "decrypt", "is_one_token", "make_cipher"]


class Cipher(Protocol):
    """What `cryptography.fernet.Fernet` and `MultiFernet` (key rotation) provide."""

    def encrypt(self, data: bytes) -> bytes: ...
    def decrypt(self, token: bytes) -> bytes: ...


OneKey = Union[bytes, str, Cipher]
# One key, or a list of keys (as MultiFernet): the first encrypts, every one decrypts.
FernetKey = Union[OneKey, Sequence[OneKey]]

# A Fernet token is urlsafe base64 (with its padding) of 1 + 8 + 16 + 16k + 32 bytes, k >= 1.
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def make_cipher(key: FernetKey) -> Cipher:
    """The cipher for `fernet_key`: a Fernet for one key (bytes or str, as `Fernet.generate_key()` gives), a
    MultiFernet for a list of them (the first encrypts, all decrypt), or the Fernet/MultiFernet given."""
    if _is_cipher(key):
        return key  # type: ignore[return-value]
    try:
        from cryptography.fernet import Fernet, MultiFernet
    except ImportError:
        raise ImportError(
            'fernet_key needs the cryptography package: pip install "conversation-codec[crypto]"'
        ) from None
    if isinstance(key, (bytes, str)):
        return _fernet(Fernet, key, "fernet_key")
    if not isinstance(key, Sequence):
        raise TypeError(
            f"fernet_key must be a key (bytes or str), a list of keys or a Fernet, not {type(key).__name__}"
        )
    if not key:
        raise ValueError("fernet_key is an empty list: give at least one key (the first encrypts)")
    ciphers = [k if _is_cipher(k) else _fernet(Fernet, k, f"fernet_key[{i}]") for i, k in enumerate(key)]
    return MultiFernet(ciphers)  # type: ignore[arg-type]


def _is_cipher(key: object) -> bool:
    return hasattr(key, "encrypt") and hasattr(key, "decrypt")


def _fernet(fernet: type[Cipher], key: object, name: str) -> Cipher:
    if not isinstance(key, (bytes, str)):
        raise TypeError(f"{name} must be a key (bytes or str) or a Fernet, not {type(key).__name__}")
    try:
        return fernet(key)  # type: ignore[call-arg]
    except ValueError:
        # Said without the key, and without chaining cryptography's error (whose context holds the key's bytes).
        raise ValueError(
            f"{name} is not a Fernet key: a key is 32 url-safe base64-encoded bytes, as Fernet.generate_key() gives"
        ) from None


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


def could_start_token(tail: bytes) -> bool:
    """Whether `tail` (the end of a file of tokens, without a line break) can be a token of ours cut short by a
    write that did not complete: base64 characters only, and padding only at its end."""
    rest = tail.translate(None, _ALPHABET)
    return rest in (b"", b"=", b"==") and tail.endswith(rest)


def opens(cipher: Cipher, token: bytes) -> bool:
    """Whether the key opens `token`."""
    from cryptography.fernet import InvalidToken

    try:
        cipher.decrypt(token)
    except InvalidToken:
        return False
    return True


WRONG_KEY = "wrong key, or the frame was altered"


def decrypt(cipher: Cipher, token: bytes, source: str, offset: int) -> bytes:
    """The plaintext of the frame at byte `offset` of `source`; DecryptionError (with `offset`) if the key does
    not open it. Whether that is a wrong key or an altered frame, one frame cannot tell: the store decides, by
    trying the key on the file's other frames."""
    from cryptography.fernet import InvalidToken

    try:
        return cipher.decrypt(token)
    except InvalidToken:
        error = _invalid_token_error()(f"{source} (frame at byte {offset}): cannot decrypt: {WRONG_KEY}")
        error.offset = offset
        raise error from None


@functools.cache
def _invalid_token_error() -> type[DecryptionError]:
    # Also an InvalidToken, so that code written against the original, which let cryptography's exception
    # through, keeps catching it. Built lazily: cryptography is optional.
    from cryptography.fernet import InvalidToken

    return type("InvalidTokenError", (DecryptionError, InvalidToken), {"__module__": __name__})
