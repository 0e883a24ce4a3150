"""conversation-codec: persist LLM conversations in plain local JSONL files."""

from ._core import __version__
from .codec import ConversationCodec
from .errors import CodecError, DecodeError, DecryptionError, EncodeError, FormatMismatchError

__all__ = [
    "CodecError",
    "ConversationCodec",
    "DecodeError",
    "DecryptionError",
    "EncodeError",
    "FormatMismatchError",
    "__version__",
]
