"""The async methods (issue 8, "Async"): the same results as the blocking calls, run in worker threads, so that many
sessions in one event loop never hold it up, even on a slow disk."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from conversation_codec import ConversationCodec, SessionStore
from conversation_codec import files as files_module


def message(i: int) -> dict[str, Any]:
    return {"role": ("user", "assistant")[i % 2], "content": f"message {i}", "i": i}


def test_each_async_method_gives_what_its_blocking_twin_gives(conv_path: Path, options: dict[str, Any]) -> None:
    async def scenario() -> None:
        codec = ConversationCodec(conv_path, **options)
        await codec.asave([message(i) for i in range(5)])
        await codec.aappend_turn(message(5))
        await codec.aappend_turn([message(6), message(7)])
        expected = [message(i) for i in range(8)]
        assert await codec.aload() == expected == codec.load()
        assert await codec.aload(last=3) == expected[-3:]
        assert await codec.alen() == 8
        report = await codec.averify()
        assert report.ok and report.messages == 8
        assert await codec.arepair() == []
        if "fernet_key" in options:
            new = pytest.importorskip("cryptography.fernet").Fernet.generate_key()
            rotating = ConversationCodec(conv_path, fernet_key=[new, options["fernet_key"]])
            await rotating.arotate()
            assert await ConversationCodec(conv_path, fernet_key=new).aload() == expected

    asyncio.run(scenario())


def test_aencrypt(conv_path: Path, fernet_key: bytes) -> None:
    ConversationCodec(conv_path).save([message(0)])
    asyncio.run(ConversationCodec(conv_path, fernet_key=fernet_key).aencrypt())
    assert conv_path.read_bytes().startswith(b"gAAAA")
    assert ConversationCodec(conv_path, fernet_key=fernet_key).load() == [message(0)]


def test_errors_reach_the_awaiting_coroutine(conv_path: Path) -> None:
    conv_path.write_bytes(b'{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        asyncio.run(ConversationCodec(conv_path).aload())


def test_many_sessions_appending_at_once_in_one_loop(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "store", durable=False)
    sessions, turns = 40, 15

    async def session(n: int) -> None:
        codec = store.conversation(f"user-{n}")
        for i in range(turns):
            await codec.aappend_turn(message(i))

    async def scenario() -> None:
        await asyncio.gather(*(session(n) for n in range(sessions)))
        assert sorted(await store.asessions()) == sorted(f"user-{n}" for n in range(sessions))
        for n in range(sessions):
            assert await store.conversation(f"user-{n}").aload() == [message(i) for i in range(turns)]
        await store.adelete("user-0")
        with pytest.raises(KeyError):
            await store.adelete("user-0")
        await store.adelete("user-0", missing_ok=True)
        assert "user-0" not in store

    asyncio.run(scenario())


def test_concurrent_appends_through_one_codec_keep_every_turn(conv_path: Path, options: dict[str, Any]) -> None:
    codec = ConversationCodec(conv_path, **options)

    async def scenario() -> None:
        await asyncio.gather(*(codec.aappend_turn(message(i)) for i in range(60)))

    asyncio.run(scenario())
    assert sorted(m["i"] for m in codec.load()) == list(range(60))
    assert codec.verify().ok


SLOW = 0.3  # seconds each flush takes on the "slow disk"


async def _largest_lag(work: Any) -> float:
    """The longest the event loop went without running a task that asks for a turn every 10 ms, while `work`
    (a coroutine) runs."""
    lags: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - before - 0.01)

    task = asyncio.create_task(probe())
    await asyncio.sleep(0.02)
    try:
        await work
    finally:
        done.set()
        await task
    return max(lags)


def test_a_slow_disk_never_holds_up_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_flush = files_module.flush

    def slow_flush(fd: int) -> None:
        time.sleep(SLOW)  # a flush that takes long: a busy or network disk
        real_flush(fd)

    monkeypatch.setattr(files_module, "flush", slow_flush)
    store = SessionStore(tmp_path / "store")
    codecs = [store.conversation(f"s{n}") for n in range(8)]

    async def through_async() -> None:
        await asyncio.gather(*(c.asave([message(n)]) for n, c in enumerate(codecs)))
        await asyncio.gather(*(c.aappend_turn(message(-n)) for n, c in enumerate(codecs)))

    async def blocking() -> None:
        codecs[0].append_turn(message(99))  # the blocking call, made from the loop: the probe must see it

    async def scenario() -> tuple[float, float]:
        return await _largest_lag(through_async()), await _largest_lag(blocking())

    async_lag, blocking_lag = asyncio.run(scenario())
    assert blocking_lag >= SLOW * 0.9  # the probe sees a loop held up
    assert async_lag < SLOW / 2, f"the loop was held up for {async_lag:.3f} s"
    assert [c.load() for c in codecs[1:]] == [[message(n), message(-n)] for n in range(1, 8)]
