"""CodecChatMessageHistory against the real langchain-core: LangChain's own message dicts on disk, lossless both
ways, one turn per add_messages(), the async variants, and a real RunnableWithMessageHistory chain."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

pytest.importorskip("langchain_core")

from conversation_codec import SessionStore
from conversation_codec.integrations.langchain import CodecChatMessageHistory
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    messages_from_dict,
    messages_to_dict,
)
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory

MESSAGES: list[BaseMessage] = [
    SystemMessage(content="Answer in the user's language."),
    HumanMessage(content="Quel temps fait-il à Zürich ? 天気 🌦️", id="h1"),
    AIMessage(
        content="",
        tool_calls=[{"name": "weather", "args": {"city": "Zürich", "days": [1, 2]}, "id": "call_1"}],
        response_metadata={"model_name": "m", "finish_reason": "tool_calls"},
        id="a1",
    ),
    ToolMessage(content='{"temp": 21.5, "sky": null}', tool_call_id="call_1", name="weather"),
    AIMessage(content=[{"type": "text", "text": "Il fait beau."}], additional_kwargs={"refusal": None}),
]


def test_messages_round_trip_in_langchains_own_form(tmp_path: Path) -> None:
    history = CodecChatMessageHistory("user-1", tmp_path)
    assert history.messages == []
    history.add_messages(MESSAGES[:2])
    history.add_messages(MESSAGES[2:4])
    history.add_message(MESSAGES[4])
    reread = CodecChatMessageHistory("user-1", tmp_path).messages
    assert reread == MESSAGES
    assert [type(m) for m in reread] == [type(m) for m in MESSAGES]
    assert reread[2].tool_calls == MESSAGES[2].tool_calls  # type: ignore[attr-defined]
    # On disk: exactly the dicts LangChain's message_to_dict gives, what FileChatMessageHistory's JSON file holds.
    assert history.codec.load() == json.loads(json.dumps(messages_to_dict(MESSAGES)))


def test_add_messages_is_one_turn(tmp_path: Path) -> None:
    history = CodecChatMessageHistory("s", tmp_path)
    history.add_messages(MESSAGES[:2])
    history.add_messages(MESSAGES[2:4])
    # The last message ends a turn of two: a whole-turn window never holds the tool result without its call.
    assert messages_from_dict(history.codec.load(last=1, whole_turns=True)) == MESSAGES[2:4]
    assert messages_from_dict(history.codec.pop_turn()) == MESSAGES[2:4]
    assert history.messages == MESSAGES[:2]


@pytest.mark.filterwarnings("ignore:The class `InMemoryChatMessageHistory` was deprecated")
def test_converts_existing_histories_both_ways(tmp_path: Path) -> None:
    source = InMemoryChatMessageHistory(messages=list(MESSAGES))
    history = CodecChatMessageHistory.from_history(source, "imported", SessionStore(tmp_path))
    assert history.messages == MESSAGES
    target = InMemoryChatMessageHistory()
    history.to_history(target)
    assert target.messages == MESSAGES
    # A FileChatMessageHistory file is json.dumps(messages_to_dict(messages)): the same dicts, one per line here.
    file_history = tmp_path / "history.json"
    file_history.write_text(json.dumps(messages_to_dict(MESSAGES)))
    history.codec.save(json.loads(file_history.read_text()))
    assert history.messages == MESSAGES
    # from_history replaces what the session held.
    assert CodecChatMessageHistory.from_history(InMemoryChatMessageHistory(), "imported", tmp_path).messages == []


def test_clear_and_async_variants(tmp_path: Path) -> None:
    async def scenario() -> None:
        history = CodecChatMessageHistory("s", tmp_path)
        await history.aadd_messages(MESSAGES[:3])
        await history.aadd_messages(MESSAGES[3:])
        assert await history.aget_messages() == MESSAGES
        await history.aclear()
        assert await history.aget_messages() == []
        assert "s" not in history.store
        await asyncio.gather(*(history.aadd_messages([HumanMessage(content=str(i))]) for i in range(20)))
        assert sorted(int(m.content) for m in history.messages) == list(range(20))  # type: ignore[arg-type]
        history.clear()
        assert history.messages == []

    asyncio.run(scenario())


@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
def test_runnable_with_message_history(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    model = GenericFakeChatModel(messages=iter([AIMessage(content="Bonjour !"), AIMessage(content="Toujours beau.")]))
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{question}")])
    chain = RunnableWithMessageHistory(
        prompt | model,
        lambda session_id: CodecChatMessageHistory(session_id, store),
        input_messages_key="question",
        history_messages_key="history",
    )
    config = {"configurable": {"session_id": "user@example.com"}}
    chain.invoke({"question": "Salut"}, config=config)  # type: ignore[arg-type]
    chain.invoke({"question": "Et demain ?"}, config=config)  # type: ignore[arg-type]
    # Another process would read the same file: a fresh history object sees both exchanges.
    stored = CodecChatMessageHistory("user@example.com", tmp_path).messages
    assert [(m.type, m.content) for m in stored] == [
        ("human", "Salut"),
        ("ai", "Bonjour !"),
        ("human", "Et demain ?"),
        ("ai", "Toujours beau."),
    ]
