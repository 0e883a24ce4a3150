"""Many sessions (issue 7): listing 100,000 sessions under a second, and what the store adds to each conversation.

The store of 100,000 sessions is built once per run in the scratch folder, file by file in the store's layout
(each file the one JSONL line a `save()` of one message writes, 0600, in its 0700 shard folder): creating them
through `save()` would take minutes of fsyncs and measures nothing the `create` bench does not. Its ids are a
realistic mix: UUIDs (stored under their own name), e-mail addresses and capitalised names (escaped).
Every bench records `extra_info` = {section: "sessions", corpus: "sessions", op, impl, sessions}; `report.py`
prints them as their own table with the issue's target.

- `list@100k`: `sum(1 for _ in store.sessions())`, the whole listing streamed;
- `contains@100k`: `session_id in store` for a stored id;
- `conversation`: `store.conversation(id)` (encode, shard, link checks) against `ConversationCodec(path)`;
- `append`: `append_turn` of one typical message, `durable=False`, through a store's codec (which checks for
  planted links before each operation) against a plain codec on the same file;
- `create`: the first `save()` of a one-message conversation of a new session, durable and not;
- `delete`: `store.delete(id)` of a one-message session.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import SCRATCH

try:
    from conversation_codec import ConversationCodec, SessionStore
except ImportError:  # not built yet
    ConversationCodec = SessionStore = None

pytestmark = pytest.mark.skipif(SessionStore is None, reason="the package is not built")

MANY = 100_000
TYPICAL = {"role": "user", "content": ("Could you explain how this works, step by step? " * 9)[:433]}
LINE = b'{"role":"user","content":"hello"}\n'


def info(benchmark: Any, op: str, impl: str, sessions: int = 0) -> None:
    benchmark.extra_info.update(section="sessions", corpus="sessions", op=op, impl=impl, sessions=sessions)


def realistic_ids(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kind = i % 4
        if kind < 2:
            out.append(str(uuid.UUID(int=rng.getrandbits(128), version=4)))
        elif kind == 2:
            out.append(f"user{i}@example.com")
        else:
            out.append(f"{rng.choice(['Alice', 'Bob', 'Carol', 'Dave'])} {i}")
    return out


@pytest.fixture(scope="module")
def many() -> Iterator[tuple[SessionStore, list[str]]]:
    SCRATCH.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(dir=SCRATCH))
    try:
        store = SessionStore(directory / "store", durable=False)
        ids = realistic_ids(MANY)
        made: set[str] = set()
        for session_id in ids:
            path = store.conversation(session_id).path
            folder = str(path.parent)
            if folder not in made:
                os.makedirs(folder, mode=0o700, exist_ok=True)
                made.add(folder)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, LINE)
            finally:
                os.close(fd)
        assert store.conversation(ids[-1]).load() == [{"role": "user", "content": "hello"}]
        yield store, ids
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_list(benchmark: Any, many: tuple[SessionStore, list[str]]) -> None:
    store, ids = many
    assert set(store.sessions()) == set(ids)
    info(benchmark, "list@100k", "store", MANY)
    count = benchmark.pedantic(lambda: sum(1 for _ in store.sessions()), rounds=7, iterations=1, warmup_rounds=1)
    assert count == MANY


def test_contains(benchmark: Any, many: tuple[SessionStore, list[str]]) -> None:
    store, ids = many
    probe = iter(random.Random(1).choices(ids, k=3200))
    info(benchmark, "contains@100k", "store", MANY)
    found = benchmark.pedantic(lambda: next(probe) in store, rounds=3000, iterations=1, warmup_rounds=200)
    assert found


@pytest.mark.parametrize("impl", ["store", "codec"])
def test_conversation(benchmark: Any, bench_dir: Path, impl: str) -> None:
    store = SessionStore(bench_dir)
    ids = iter(realistic_ids(3200))
    if impl == "store":

        def make() -> Any:
            return store.conversation(next(ids))

    else:

        def make() -> Any:
            return ConversationCodec(bench_dir / "aa" / f"{next(ids)}.jsonl")

    info(benchmark, "conversation", impl)
    benchmark.pedantic(make, rounds=3000, iterations=1, warmup_rounds=200)


@pytest.mark.parametrize("impl", ["store", "codec"])
def test_append(benchmark: Any, bench_dir: Path, impl: str) -> None:
    store = SessionStore(bench_dir, durable=False)
    codec = store.conversation("user@example.com")
    if impl == "codec":
        codec = ConversationCodec(codec.path, durable=False)
    codec.append_turn(TYPICAL)
    info(benchmark, "append", impl)
    benchmark.pedantic(codec.append_turn, args=(TYPICAL,), rounds=3000, iterations=1, warmup_rounds=200)
    assert len(codec) == 3201


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "nodurable"])
def test_create(benchmark: Any, bench_dir: Path, durable: bool) -> None:
    store = SessionStore(bench_dir, durable=durable)
    ids = iter(realistic_ids(1200, seed=3))
    info(benchmark, "create", "store" if durable else "store-nodurable")
    benchmark.pedantic(
        lambda: store.conversation(next(ids)).save([TYPICAL]), rounds=1000, iterations=1, warmup_rounds=100
    )
    assert sum(1 for _ in store.sessions()) == 1100


def test_delete(benchmark: Any, bench_dir: Path) -> None:
    store = SessionStore(bench_dir)
    ids = iter(realistic_ids(600, seed=5))

    def one() -> tuple[tuple[str], dict[str, Any]]:
        session_id = next(ids)
        store.conversation(session_id).save([TYPICAL])
        return (session_id,), {}

    info(benchmark, "delete", "store")
    benchmark.pedantic(store.delete, setup=one, rounds=500, iterations=1, warmup_rounds=50)
    assert list(store.sessions()) == []
