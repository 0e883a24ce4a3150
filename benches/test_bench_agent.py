"""The agent workload (issue 8): a session of turns, each reading the history and appending the turn's messages.

A turn is what an agent loop does with its store between two model calls: read the history (or its tail, where the
store can read a tail), then append the turn's two new messages (the user's and the assistant's) and persist them
as the store does by default. Each store starts from a conversation of 100, 10,000 or 100,000 messages, written
with its own bulk path (not timed), then runs up to `TURNS` turns, each timed alone (one pytest-benchmark round):

- `ours`: `ConversationCodec(path)` with its defaults (durable: the append is fsync'd): `load(last=20)`, then
  `append_turn([user, assistant])`; `ours-gzip` and `ours-fernet` the same with `compressed=True` / a Fernet key;
  `ours-fullload` reads the whole conversation with `load()` instead of its tail; `ours-nodurable` passes
  `durable=False` (no fsync), to show what the flush costs;
- `original`: the original design (`benches/baselines.py`): `load()`, add the two messages, `save()` them all;
- `langchain`: langchain-community's `FileChatMessageHistory`: `.messages` (the whole JSON array, parsed into
  message objects), then `add_messages([human, ai])`, which it runs as one `add_message` per message, each reading
  the whole file again and rewriting it with `json.dumps` (no fsync), as `RunnableWithMessageHistory` does;
- `openai-agents`: the OpenAI Agents SDK's `SQLiteSession` on a database file: `await get_items(limit=20)` (the
  SDK reads everything unless a limit is set; the limit favours it), then `await add_items([user, assistant])`,
  one transaction in WAL mode with SQLite's default `synchronous=FULL` (the commit is fsync'd); each call runs in
  a worker thread (`asyncio.to_thread`), as the SDK does; `openai-agents-fullread` calls `get_items()` without
  a limit, as the SDK's `Runner` does with its default `SessionSettings`; `openai-agents-noflush` sets
  `synchronous=OFF` (no fsync), the like-with-like reference for `ours-nodurable`;
- `llamaindex`: llama-index-core's `SimpleChatStore`, which holds every conversation in memory:
  `get_messages(key)[-20:]`, two `add_message`, then `persist(persist_path)`, which rewrites the whole store as
  one JSON document (no fsync): the only way it keeps a conversation in a file.

The turns' messages are the agent corpus's user requests and final assistant answers (`agent_pairs`: prose with
code, emoji and CJK; 0.25 and 0.8 KB as JSON), built as each store's own message type before the clock starts.
Between turns the store's files are flushed (`fsync`, not timed): an agent waits seconds for the model between
two turns, time in which the kernel writes back what a store left in the page cache.

The slow stores read or rewrite the whole conversation every turn: each session's first two turns run untimed,
and from their cost `plan` times as many more as fit in `BUDGET` seconds (`BENCH_AGENT_BUDGET`, default 10; a
growing store's turn costs more as the conversation grows), at least `MIN_TURNS` and at most the `TURNS` - 2 left
(`BENCH_AGENT_BUDGET=0` times them all). Every bench records `extra_info` = {section: "agent", corpus:
"agent-turns", op: "turn@N", impl, messages (N), turns (timed), session_turns (run), p95 (seconds), first_median
and last_median (of the first and last tenth of the timed turns: how a turn's cost moves within the session),
last_read (messages the last turn read)}.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from . import corpus
from .baselines import Original
from .report import AGENT_IMPLS

try:
    from conversation_codec import ConversationCodec
except ImportError:  # not built yet: the other stores still run
    ConversationCodec = None

LENGTHS = (100, 10_000, 100_000)
TURNS = int(os.environ.get("BENCH_AGENT_TURNS", "1000"))
BUDGET = float(os.environ.get("BENCH_AGENT_BUDGET", "10"))
MIN_TURNS = min(5, TURNS)
TAIL = 20
KEY = b"J0mTqgTnTEm3CzC3aDQTR4E7q-rr4ad9q_gNcMiyEQY="
SESSION = "bench-session"
IMPLS = AGENT_IMPLS  # the stores, in the report's order (one list, in report.py)
# The stores whose turn reads the whole conversation; the others read its last `TAIL` messages.
READS_ALL = ("ours-fullload", "original", "langchain", "openai-agents-fullread")

Message = dict[str, Any]
Pair = tuple[Message, Message]


@functools.cache
def agent_pairs() -> tuple[Pair, ...]:
    """(user request, final assistant answer) pairs of the agent corpus, as plain `{"role", "content"}` messages.

    The corpus's turns also carry tool calls and images; a turn here is the conversational pair every store can
    hold natively (a LangChain `HumanMessage` and `AIMessage`, a LlamaIndex `ChatMessage`, a Responses API item).
    """

    def text(content: Any) -> str | None:
        if isinstance(content, str):
            return content
        if isinstance(content, list) and content and content[0].get("type") == "text":
            return str(content[0]["text"])
        return None

    users: list[str] = []
    answers: list[str] = []
    for message in corpus.agent_transcript():
        content = text(message["content"])
        if message["role"] == "user" and content is not None:  # a request, not a list of tool results
            users.append(content)
        elif message["role"] == "assistant" and "metadata" in message:  # the turn's final answer
            answers.append(str(content))
    return tuple(
        ({"role": "user", "content": user}, {"role": "assistant", "content": answer})
        for user, answer in zip(users, answers)
    )


def messages(count: int, start: int = 0) -> list[Message]:
    """`count` messages of alternating user and assistant turns, from pair `start // 2` on (cycling the corpus)."""
    pairs = agent_pairs()
    return [pairs[(i // 2) % len(pairs)][i % 2] for i in range(start, start + count)]


class Store:
    """One store under the workload: `fill` writes the starting conversation, `turn` runs one turn.

    `grows`: whether a turn reads or rewrites the whole conversation, so that its cost grows with it (`plan`).
    """

    grows = False

    def fill(self, history: list[Message]) -> None:
        raise NotImplementedError

    def prepare(self, batch: list[Message]) -> Any:
        """Messages as this store's own objects (a turn's are built before the clock starts)."""
        return batch

    def turn(self, new: Any) -> int:
        """Read the history (or its tail), append `new`; the number of messages read."""
        raise NotImplementedError

    def count(self) -> int:
        """How many messages the store holds, read back after the session."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class Ours(Store):
    def __init__(self, directory: Path, last: int | None = TAIL, **options: Any) -> None:
        self.codec = ConversationCodec(directory / "conversation.jsonl", **options)
        self.last = last
        self.grows = last is None

    def fill(self, history: list[Message]) -> None:
        self.codec.save(history)

    def turn(self, new: list[Message]) -> int:
        read = len(self.codec.load(last=self.last))
        self.codec.append_turn(new)
        return read

    def count(self) -> int:
        return len(self.codec.load())


class OriginalStore(Store):
    grows = True

    def __init__(self, directory: Path) -> None:
        self.codec = Original(directory / "conversation.jsonl")

    def fill(self, history: list[Message]) -> None:
        self.codec.save(history)

    def turn(self, new: list[Message]) -> int:
        history = self.codec.load()
        read = len(history)
        history.extend(new)
        self.codec.save(history)
        return read

    def count(self) -> int:
        return len(self.codec.load())


class LangChain(Store):
    grows = True

    def __init__(self, directory: Path) -> None:
        from langchain_community.chat_message_histories import FileChatMessageHistory

        self.history = FileChatMessageHistory(str(directory / "history.json"))

    def prepare(self, batch: list[Message]) -> Any:
        from langchain_core.messages import AIMessage, HumanMessage

        kinds = {"user": HumanMessage, "assistant": AIMessage}
        return [kinds[m["role"]](content=m["content"]) for m in batch]

    def fill(self, history: list[Message]) -> None:
        # Its only bulk path: the file `add_message` writes (one JSON array of `messages_to_dict`), written at once;
        # `add_messages` of 100,000 messages would rewrite the file 100,000 times.
        import json

        from langchain_core.messages import messages_to_dict

        records = messages_to_dict(self.prepare(history))
        self.history.file_path.write_text(json.dumps(records))

    def turn(self, new: Any) -> int:
        read = len(self.history.messages)
        self.history.add_messages(new)
        return read

    def count(self) -> int:
        return len(self.history.messages)


class OpenAIAgents(Store):
    def __init__(self, directory: Path, flush: bool = True, limit: int | None = TAIL) -> None:
        from agents import SQLiteSession

        class NoFlush(SQLiteSession):
            """`synchronous=OFF`: commits are not fsync'd (set where the SDK sets WAL mode, on every connection)."""

            @staticmethod
            def _configure_connection(conn: Any) -> None:
                SQLiteSession._configure_connection(conn)
                conn.execute("PRAGMA synchronous=OFF")

        self.loop = asyncio.new_event_loop()
        self.session = (SQLiteSession if flush else NoFlush)(SESSION, directory / "sessions.db")
        self.limit = limit
        self.grows = limit is None

    def fill(self, history: list[Message]) -> None:
        self.loop.run_until_complete(self.session.add_items(history))

    async def _turn(self, new: list[Message]) -> int:
        read = len(await self.session.get_items(limit=self.limit))
        await self.session.add_items(new)
        return read

    def turn(self, new: list[Message]) -> int:
        return self.loop.run_until_complete(self._turn(new))

    def count(self) -> int:
        return len(self.loop.run_until_complete(self.session.get_items()))

    def close(self) -> None:
        self.session.close()
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


class LlamaIndex(Store):
    grows = True

    def __init__(self, directory: Path) -> None:
        from llama_index.core.storage.chat_store import SimpleChatStore

        self.store = SimpleChatStore()
        self.path = str(directory / "chat_store.json")

    def prepare(self, batch: list[Message]) -> Any:
        from llama_index.core.llms import ChatMessage

        return [ChatMessage(role=m["role"], content=m["content"]) for m in batch]

    def fill(self, history: list[Message]) -> None:
        self.store.set_messages(SESSION, self.prepare(history))
        self.store.persist(persist_path=self.path)

    def turn(self, new: Any) -> int:
        read = len(self.store.get_messages(SESSION)[-TAIL:])
        for message in new:
            self.store.add_message(SESSION, message)
        self.store.persist(persist_path=self.path)
        return read

    def count(self) -> int:
        from llama_index.core.storage.chat_store import SimpleChatStore

        return len(SimpleChatStore.from_persist_path(self.path).get_messages(SESSION))


def make(impl: str, directory: Path) -> Store:
    if impl == "ours":
        return Ours(directory)
    if impl == "ours-nodurable":
        return Ours(directory, durable=False)
    if impl == "ours-fullload":
        return Ours(directory, last=None)
    if impl == "ours-gzip":
        return Ours(directory, compressed=True)
    if impl == "ours-fernet":
        return Ours(directory, fernet_key=KEY)
    if impl == "original":
        return OriginalStore(directory)
    if impl == "langchain":
        return LangChain(directory)
    if impl == "openai-agents":
        return OpenAIAgents(directory)
    if impl == "openai-agents-fullread":
        return OpenAIAgents(directory, limit=None)
    if impl == "openai-agents-noflush":
        return OpenAIAgents(directory, flush=False)
    if impl == "llamaindex":
        return LlamaIndex(directory)
    raise KeyError(impl)


def _marks(impl: str) -> list[pytest.MarkDecorator]:
    if impl.startswith("ours") and ConversationCodec is None:
        return [pytest.mark.skip(reason="conversation_codec is not built (make build)")]
    return []


def _p95(data: list[float]) -> float:
    return statistics.quantiles(data, n=20, method="inclusive")[-1] if len(data) > 1 else data[0]


def plan(store: Store, length: int, first: float) -> int:
    """How many more turns to time: all that are left, or as many as fit in `BUDGET` seconds (at least `MIN_TURNS`),
    from the cost of the first turns, which grows with the conversation (2 messages a turn) if the store `grows`."""
    left = TURNS - 2
    if BUDGET <= 0:
        return left
    turns, spent = 0, 0.0
    while turns < left:
        cost = first * ((length + 2 * turns) / length if store.grows else 1.0)
        if spent + cost > BUDGET:
            break
        spent += cost
        turns += 1
    return max(turns, MIN_TURNS)


def flush(directory: Path) -> None:
    """What a store left in the page cache for its files, written back (`fsync` of each; cheap if it fsync'd)."""
    for path in directory.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@pytest.fixture(scope="module", autouse=True)
def _pairs_before_timing() -> None:
    """The agent corpus, made once per module before any session, then moved out of the collector's sight: a
    process running an agent does not hold a 57 MB corpus for every collection to walk."""
    agent_pairs()
    gc.collect()
    gc.freeze()


@pytest.mark.parametrize(
    ("length", "impl"),
    [pytest.param(n, impl, id=f"{n}-{impl}", marks=_marks(impl)) for n in LENGTHS for impl in IMPLS],
)
def test_turn(benchmark: Any, bench_dir: Path, length: int, impl: str) -> None:
    store = make(impl, bench_dir)
    try:
        store.fill(messages(length))
        new = iter([store.prepare(messages(2, length + 2 * t)) for t in range(TURNS)])
        reads: list[int] = []

        def one_turn() -> None:
            reads.append(store.turn(next(new)))

        # How many turns fit in the budget, from the first two (turns of the session like the others, not timed).
        flush(bench_dir)
        started = time.perf_counter()
        one_turn()
        one_turn()
        turns = plan(store, length, (time.perf_counter() - started) / 2)
        benchmark.pedantic(one_turn, setup=lambda: flush(bench_dir), rounds=turns, iterations=1, warmup_rounds=0)
        data = list(benchmark.stats.stats.data)
        tenth = max(1, len(data) // 10)
        benchmark.extra_info.update(
            section="agent",
            corpus="agent-turns",
            op=f"turn@{length}",
            impl=impl,
            messages=length,
            turns=len(data),
            session_turns=len(reads),
            p95=_p95(data),
            first_median=statistics.median(data[:tenth]),
            last_median=statistics.median(data[-tenth:]),
            last_read=reads[-1],
        )
        final = length + 2 * len(reads)
        assert store.count() == final, f"{impl}: {store.count()} messages after the session, expected {final}"
        assert reads[-1] == (final - 2 if impl in READS_ALL else TAIL), f"{impl} read {reads[-1]} messages"
    finally:
        store.close()
