"""CodecSession against the real OpenAI Agents SDK: the Session protocol, whole turns, and memory that outlives a
process, with a real `Runner.run` and a scripted model (tests/_agents_helper.py; no network)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")

from _agents_helper import run
from agents.memory import Session, SessionSettings
from conversation_codec import SessionStore
from conversation_codec.integrations.openai_agents import CodecSession

HELPER = str(Path(__file__).with_name("_agents_helper.py"))

USER = {"role": "user", "content": "Zürich? 天気"}
CALL = {
    "type": "function_call",
    "call_id": "call_1",
    "name": "weather",
    "arguments": '{"city": "Zürich"}',
    "id": "fc_1",
}
OUTPUT = {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}
ANSWER = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "Sunny 🌞", "annotations": [], "logprobs": None}],
}


def helper(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(HELPER).parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, HELPER, *args], capture_output=True, text=True, env=env, check=True, timeout=120
    )


def test_implements_the_sdk_session_protocol(tmp_path: Path) -> None:
    session = CodecSession("user-1", tmp_path)
    assert isinstance(session, Session)
    assert session.session_id == "user-1"
    assert isinstance(session.session_settings, SessionSettings)


def test_items_round_trip_and_pop(tmp_path: Path, options: dict[str, Any]) -> None:
    store = SessionStore(tmp_path, **options)  # plain, gzip, encrypted, both

    async def scenario() -> None:
        session = CodecSession("user/1 ..", store)
        assert await session.get_items() == []
        assert await session.pop_item() is None
        await session.add_items([USER])
        await session.add_items([CALL, OUTPUT])
        await session.add_items([ANSWER])
        assert await session.get_items() == [USER, CALL, OUTPUT, ANSWER]
        assert await CodecSession("user/1 ..", store).get_items() == [USER, CALL, OUTPUT, ANSWER]
        assert await session.pop_item() == ANSWER
        assert await session.get_items() == [USER, CALL, OUTPUT]
        assert await session.pop_turn() == [CALL, OUTPUT]
        assert await session.get_items() == [USER]
        await session.clear_session()
        assert await session.get_items() == []
        assert "user/1 .." not in session.store
        await session.clear_session()  # clearing an empty session is no error

    asyncio.run(scenario())


def test_limit_is_exact_as_the_protocol_says(tmp_path: Path) -> None:
    # The SDK compares the last `limit` items with what it wrote when it resumes or rewinds a write, and peeks at
    # the newest item with limit=1: the count must be exact, even inside a turn.
    async def scenario() -> None:
        session = CodecSession("s", tmp_path)
        for turn in ([USER], [CALL, OUTPUT], [ANSWER]):
            await session.add_items(turn)
        assert await session.get_items(limit=1) == [ANSWER]
        assert await session.get_items(limit=2) == [OUTPUT, ANSWER]
        assert await session.get_items(limit=0) == []
        assert await session.get_items(limit=99) == [USER, CALL, OUTPUT, ANSWER]
        limited = CodecSession("s", tmp_path, session_settings=SessionSettings(limit=3))
        assert await limited.get_items() == [CALL, OUTPUT, ANSWER]
        assert await limited.get_items(limit=1) == [ANSWER]

    asyncio.run(scenario())


def test_history_limit_never_starts_inside_a_turn(tmp_path: Path) -> None:
    # openai-agents issue 3738: an item-count window cut between a tool call and its output.
    async def scenario() -> None:
        session = CodecSession("s", tmp_path, history_limit=2)
        for turn in ([USER], [CALL, OUTPUT], [ANSWER]):
            await session.add_items(turn)
        assert await session.get_items() == [CALL, OUTPUT, ANSWER]
        assert await session.get_items(limit=2) == [OUTPUT, ANSWER]  # an explicit limit stays exact
        session.history_limit = 1
        assert await session.get_items() == [ANSWER]
        session.history_limit = 0
        assert await session.get_items() == []

    asyncio.run(scenario())


def test_runner_with_history_limit_sends_whole_turns(tmp_path: Path) -> None:
    async def scenario() -> list[Any]:
        session = CodecSession("s", tmp_path, history_limit=3)
        await run(session, "Paris")  # user, [call, output], answer
        return (await run(session, "Oslo"))["inputs"][0]

    first_input = asyncio.run(scenario())
    # The last 3 items are [output, answer] and the new input; the window grows back to the call.
    assert [item.get("type") for item in first_input[:3]] == ["function_call", "function_call_output", "message"]
    assert first_input[0]["call_id"] == first_input[1]["call_id"]
    assert first_input[-1] == {"role": "user", "content": "Oslo"}


def test_runner_memory_persists_across_processes(tmp_path: Path) -> None:
    first = json.loads(helper("run", str(tmp_path), "user@example.com", "Paris").stdout)
    assert first["final"] == "It is sunny in Paris."
    assert first["inputs"][0] == [{"role": "user", "content": "Paris"}]
    stored = CodecSession("user@example.com", tmp_path).codec.load()
    assert [item.get("type", item.get("role")) for item in stored] == [
        "user",
        "function_call",
        "function_call_output",
        "message",
    ]

    second = json.loads(helper("run", str(tmp_path), "user@example.com", "Oslo").stdout)
    assert second["final"] == "It is sunny in Oslo."
    # The model of the second process received the first run's whole history, then the new input.
    received = second["inputs"][0]
    assert received[0] == {"role": "user", "content": "Paris"}
    assert received[1]["type"] == "function_call" and received[2]["output"] == "sunny in Paris"
    assert received[3]["content"][0]["text"] == "It is sunny in Paris."
    assert received[4:] == [{"role": "user", "content": "Oslo"}]
    assert len(CodecSession("user@example.com", tmp_path).codec) == 8


def test_fork_branches_a_conversation(tmp_path: Path) -> None:
    async def scenario() -> None:
        session = CodecSession("main", tmp_path, history_limit=10)
        await session.add_items([USER])
        branch = await session.fork("main/branch")
        assert branch.session_id == "main/branch" and branch.history_limit == 10
        await branch.add_items([CALL, OUTPUT])
        await session.add_items([ANSWER])
        assert await branch.get_items() == [USER, CALL, OUTPUT]
        assert await session.get_items() == [USER, ANSWER]
        with pytest.raises(FileExistsError):
            await session.fork("main/branch")
        assert sorted(session.store.sessions()) == ["main", "main/branch"]

    asyncio.run(scenario())


def test_many_sessions_add_items_concurrently(tmp_path: Path) -> None:
    store = SessionStore(tmp_path, durable=False)
    sessions = [CodecSession(f"user-{i}", store) for i in range(40)]

    async def writer(session: CodecSession) -> None:
        for i in range(25):
            await session.add_items(
                [{"role": "user", "content": f"{session.session_id}:{i}"}, dict(OUTPUT, call_id=str(i))]
            )

    async def scenario() -> None:
        await asyncio.gather(*(writer(s) for s in sessions))

    asyncio.run(scenario())
    for session in sessions:
        items = session.codec.load()
        assert len(items) == 50
        assert [item["content"] for item in items[::2]] == [f"{session.session_id}:{i}" for i in range(25)]
        assert [item["call_id"] for item in items[1::2]] == [str(i) for i in range(25)]


def test_two_processes_add_items_to_one_session(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(HELPER).parent)}
    writers = [
        subprocess.Popen(
            [sys.executable, HELPER, "write", str(tmp_path), "shared", tag, "150"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    for w in writers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    items = CodecSession("shared", tmp_path).codec.load()
    assert len(items) == 600  # nothing lost, no lock error
    calls, outputs = items[::2], items[1::2]
    assert all(c["type"] == "function_call" and o["call_id"] == c["call_id"] for c, o in zip(calls, outputs))
    for tag in ("a", "b"):  # each writer's turns whole and in its order
        assert [c["call_id"] for c in calls if c["call_id"].startswith(tag)] == [f"{tag}-{i}" for i in range(150)]
