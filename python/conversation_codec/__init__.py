"""conversation-codec: persist LLM conversations in plain local JSONL files."""

from ._core import __version__
from .codec import ConversationCodec
from .errors import (
    CodecError,
    CorruptFileError,
    DecodeError,
    DecryptionError,
    EncodeError,
    FormatMismatchError,
    TornTailWarning,
    UnencryptedFileError,
)
from .sessions import SessionStore
from .storage import Report

__all__ = [
    "CodecError",
    "ConversationCodec",
    "CorruptFileError",
    "DecodeError",
    "DecryptionError",
    "EncodeError",
    "FormatMismatchError",
    "Report",
    "SessionStore",
    "TornTailWarning",
    "UnencryptedFileError",
    "__version__",
]
