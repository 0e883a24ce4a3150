"""LangChain memory: `CodecChatMessageHistory`, a `BaseChatMessageHistory` kept in a conversation file.

Each line of the file is LangChain's own `message_to_dict()` form of a message (`{"type": "ai", "data": {...}}`),
the form `FileChatMessageHistory` and the other LangChain stores write, so histories convert both ways without
loss (`from_history()`, `to_history()`). Each `add_messages()` call is appended as one turn, all or nothing,
without rewriting the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..sessions import SessionCodec, SessionStore

try:
    from langchain_core.chat_history import BaseChatMessageHistory
    from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'conversation_codec.integrations.langchain needs langchain-core: pip install "conversation-codec[langchain]"'
    ) from exc

__all__ = ["CodecChatMessageHistory"]


class CodecChatMessageHistory(BaseChatMessageHistory):
    """The messages of session `session_id` of `store` (a `SessionStore` or the folder of one, with the codec's
    default options). Fits `RunnableWithMessageHistory`: `lambda sid: CodecChatMessageHistory(sid, store)`.

    The codec is `self.codec`, for what LangChain has no call for: `load(last=n, whole_turns=True)`,
    `pop_turn()`, `fork(path)`. The async calls run in worker threads.
    """

    def __init__(self, session_id: str, store: SessionStore | str | os.PathLike[str]) -> None:
        self.session_id = session_id
        self.store = store if isinstance(store, SessionStore) else SessionStore(store)
        self.codec: SessionCodec = self.store.conversation(session_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.session_id!r}, {self.store!r})"

    @classmethod
    def from_history(
        cls, source: BaseChatMessageHistory, session_id: str, store: SessionStore | str | os.PathLike[str]
    ) -> CodecChatMessageHistory:
        """Session `session_id` of `store` made to hold the messages of any LangChain history (a
        `FileChatMessageHistory`, an `InMemoryChatMessageHistory`, a database's): replaced in one atomic save."""
        history = cls(session_id, store)
        history.codec.save([message_to_dict(m) for m in source.messages])
        return history

    def to_history(self, target: BaseChatMessageHistory) -> None:
        """Add these messages to another LangChain history, in one `add_messages()` call."""
        target.add_messages(self.messages)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]  # LangChain declares an attribute
        """Every message of the conversation, in order."""
        return messages_from_dict(self.codec.load())

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append `messages` as one turn: written whole or not at all."""
        self.codec.append_turn([message_to_dict(m) for m in messages])

    def clear(self) -> None:
        """Remove every message: the session's file and the files beside it are deleted."""
        self.store.delete(self.session_id, missing_ok=True)

    async def aget_messages(self) -> list[BaseMessage]:
        return messages_from_dict(await self.codec.aload())

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        await self.codec.aappend_turn([message_to_dict(m) for m in messages])

    async def aclear(self) -> None:
        await self.store.adelete(self.session_id, missing_ok=True)
