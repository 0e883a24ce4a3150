"""LlamaIndex memory: `CodecChatStore`, a `BaseChatStore` that keeps one conversation file per key.

Keys are session ids of a `SessionStore` (any string). Each message is stored as `ChatMessage.model_dump(mode=
"json")`, the form `SimpleChatStore` persists (content blocks included, images as base64), and read back with
`ChatMessage.model_validate`. `add_message()` appends without rewriting the file and `delete_last_message()` cuts
the file's end; `set_messages()` and `delete_message()` of any other message rewrite the conversation, atomically.
The async methods are BaseChatStore's: the same calls in worker threads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from ..sessions import SessionStore

try:
    from llama_index.core.llms import ChatMessage
    from llama_index.core.storage.chat_store.base import BaseChatStore
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "conversation_codec.integrations.llama_index needs llama-index-core: "
        'pip install "conversation-codec[llama-index]"'
    ) from exc

__all__ = ["CodecChatStore"]


class CodecChatStore(BaseChatStore):
    """Chat histories under `store` (a `SessionStore`, or the folder of one with the codec's default options),
    one conversation per key: `ChatMemoryBuffer.from_defaults(chat_store=CodecChatStore(folder), chat_store_key=
    user_id)`. `store` is the `SessionStore` (`store.conversation(key)` is a key's codec)."""

    _sessions: SessionStore

    def __init__(self, store: SessionStore | str | os.PathLike[str], **data: Any) -> None:
        super().__init__(**data)
        self._sessions = store if isinstance(store, SessionStore) else SessionStore(store)

    @classmethod
    def class_name(cls) -> str:
        return "CodecChatStore"

    @property
    def store(self) -> SessionStore:
        return self._sessions

    def set_messages(self, key: str, messages: list[ChatMessage]) -> None:
        """Replace the conversation of `key`, atomically."""
        self._sessions.conversation(key).save([m.model_dump(mode="json") for m in messages])

    def get_messages(self, key: str) -> list[ChatMessage]:
        """The messages of `key` ([] for an unknown key)."""
        return [ChatMessage.model_validate(m) for m in self._sessions.conversation(key).load()]

    def add_message(self, key: str, message: ChatMessage) -> None:
        """Append one message, without rewriting the file."""
        self._sessions.conversation(key).append_turn([message.model_dump(mode="json")])

    def delete_messages(self, key: str) -> list[ChatMessage] | None:
        """Delete the conversation of `key` and return its messages (None for an unknown key)."""
        if key not in self._sessions:
            return None
        messages = self.get_messages(key)
        self._sessions.delete(key, missing_ok=True)
        return messages

    def delete_message(self, key: str, idx: int) -> ChatMessage | None:
        """Remove the message at `idx` (negative counts from the end, as for a list); None when there is none.
        The conversation is rewritten, atomically, from what the file holds under its writer lock: a message
        appended meanwhile is kept."""
        codec = self._sessions.conversation(key)
        count = len(codec)
        if idx < 0:
            idx += count
        if not 0 <= idx < count:
            return None
        removed: list[Any] = []

        def kept() -> Iterator[Any]:  # read inside save(), under the lock: nothing appended meanwhile is lost
            for i, message in enumerate(codec.iter()):
                if i == idx:
                    removed.append(message)
                else:
                    yield message

        codec.save(kept())
        return ChatMessage.model_validate(removed[0]) if removed else None

    def delete_last_message(self, key: str) -> ChatMessage | None:
        """Remove and return the last message (None when there is none), cutting the file's end."""
        try:
            return ChatMessage.model_validate(self._sessions.conversation(key).pop())
        except IndexError:
            return None

    def get_keys(self) -> list[str]:
        """Every key that has a conversation."""
        return list(self._sessions.sessions())
