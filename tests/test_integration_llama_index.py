"""CodecChatStore against the real llama-index-core: every BaseChatStore method, side by side with LlamaIndex's
own SimpleChatStore, messages with content blocks round-tripping, the async methods, and a ChatMemoryBuffer whose
memory outlives its store object."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("llama_index.core")

from conversation_codec import SessionStore
from conversation_codec.integrations.llama_index import CodecChatStore
from llama_index.core.base.llms.types import ImageBlock, TextBlock
from llama_index.core.llms import ChatMessage, MessageRole
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.storage.chat_store import SimpleChatStore


def msg(role: MessageRole, text: str) -> ChatMessage:
    return ChatMessage(role=role, content=text)


RICH = ChatMessage(
    role=MessageRole.ASSISTANT,
    blocks=[
        TextBlock(text="Voilà le graphe 📈"),
        ImageBlock(image=b"\x89PNG\r\n\x1a\n\x00binary", image_mimetype="image/png"),
    ],
    additional_kwargs={
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    },
)


def test_messages_round_trip_with_blocks(tmp_path: Path) -> None:
    store = CodecChatStore(tmp_path)
    store.add_message("k", msg(MessageRole.USER, "Zürich? 天気"))
    store.add_message("k", RICH)
    assert CodecChatStore(tmp_path).get_messages("k") == [msg(MessageRole.USER, "Zürich? 天気"), RICH]
    assert CodecChatStore(tmp_path).get_messages("k")[1].blocks[1].image == RICH.blocks[1].image  # type: ignore[union-attr]


def test_behaves_as_simple_chat_store(tmp_path: Path) -> None:
    ours, theirs = CodecChatStore(SessionStore(tmp_path)), SimpleChatStore()
    a, b, c, d = (msg(MessageRole.USER, x) for x in "abcd")
    steps = [
        ("get_messages", ("k",)),
        ("delete_messages", ("k",)),
        ("delete_message", ("k", 0)),
        ("delete_last_message", ("nobody",)),
        ("set_messages", ("k", [a, b, c])),
        ("add_message", ("k", d)),
        ("add_message", ("user/2 ..", a)),
        ("get_messages", ("k",)),
        ("delete_message", ("k", 1)),
        ("delete_message", ("k", 7)),
        ("delete_message", ("k", -1)),
        ("get_messages", ("k",)),
        ("delete_last_message", ("k",)),
        ("get_messages", ("k",)),
        ("delete_messages", ("user/2 ..",)),
        ("get_messages", ("user/2 ..",)),
    ]
    for name, args in steps:
        assert getattr(ours, name)(*args) == getattr(theirs, name)(*args), (name, args)
        assert sorted(ours.get_keys()) == sorted(theirs.get_keys()), (name, args)
    assert ours.get_messages("k") == [a]


def test_delete_last_message_on_an_emptied_key(tmp_path: Path) -> None:
    store = CodecChatStore(tmp_path)
    store.add_message("k", msg(MessageRole.USER, "x"))
    assert store.delete_last_message("k") == msg(MessageRole.USER, "x")
    assert store.delete_last_message("k") is None
    assert store.get_messages("k") == []


def test_async_methods(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = CodecChatStore(tmp_path)
        await asyncio.gather(
            *(store.async_add_message(f"user-{i % 4}", msg(MessageRole.USER, str(i))) for i in range(40))
        )
        assert sorted(await store.aget_keys()) == [f"user-{i}" for i in range(4)]
        for i in range(4):
            assert sorted(int(m.content or "") for m in await store.aget_messages(f"user-{i}")) == list(range(i, 40, 4))
        await store.aset_messages("user-0", [RICH])
        assert await store.adelete_message("user-0", 0) == RICH
        assert await store.adelete_last_message("user-1") is not None
        assert len(await store.adelete_messages("user-2") or []) == 10
        assert sorted(await store.aget_keys()) == ["user-0", "user-1", "user-3"]

    asyncio.run(scenario())


def test_chat_memory_buffer_outlives_the_store_object(tmp_path: Path) -> None:
    memory = ChatMemoryBuffer.from_defaults(chat_store=CodecChatStore(tmp_path), chat_store_key="user@example.com")
    memory.put(msg(MessageRole.USER, "Je m'appelle Zoé."))
    memory.put(msg(MessageRole.ASSISTANT, "Enchanté, Zoé."))
    later = ChatMemoryBuffer.from_defaults(chat_store=CodecChatStore(tmp_path), chat_store_key="user@example.com")
    assert [m.content for m in later.get()] == ["Je m'appelle Zoé.", "Enchanté, Zoé."]
