"""save() is atomic: a crash (SIGKILL) or a concurrent reader sees the old or the new conversation, whole.

A process killed mid-save may leave its temporary files (`.<name>.tmp`, or the index's `.<name>.idx.tmp`) behind:
nothing can remove them after SIGKILL, and the next save replaces them. The conversation file itself is never torn,
empty or missing.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _helpers import folder_listing
from conversation_codec import ConversationCodec, DecodeError, EncodeError

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and fsync of folders are POSIX")

# Built the same way in this process and in the child that gets killed.
BUILD = textwrap.dedent(
    """
    def build(tag, count, size):
        return [
            {"role": ("user", "assistant")[i % 2], "i": i, "tag": tag,
             "content": [{"type": "text", "text": (tag * size) + str(i)}, {"n": i * 1.5}]}
            for i in range(count)
        ]
    """
)
_namespace: dict[str, Any] = {}
exec(BUILD, _namespace)
build = _namespace["build"]

CHILD = BUILD + textwrap.dedent(
    """
    import sys
    from conversation_codec import ConversationCodec
    path, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    messages = build("b", count, size)
    codec = ConversationCodec(path)
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    while True:
        codec.save(messages)
    """
)

# ~30 MB and ~25 MB: large enough that a save takes a while, so that kills land inside writes.
A_COUNT, B_COUNT, SIZE = 3000, 2500, 10_000
TIME_BUDGET = 15.0  # seconds of kill trials
MIN_TRIALS = 8
MAX_TRIALS = 40


def _leftover_tmp_files(path: Path) -> list[Path]:
    return [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.") and p.name.endswith(".tmp")]


def test_sigkill_mid_save_leaves_old_or_new_file(conv_path: Path) -> None:
    a = build("a", A_COUNT, SIZE)
    b = build("b", B_COUNT, SIZE)
    codec = ConversationCodec(conv_path)
    start = time.perf_counter()
    codec.save(a)
    save_time = time.perf_counter() - start
    rng = random.Random(1234)

    trials = seen_a = seen_b = interrupted_writes = 0
    deadline = time.monotonic() + TIME_BUDGET
    # Enough trials that kills landed inside writes, and both before and after the child's first rename.
    while trials < MIN_TRIALS or not (seen_a and seen_b and interrupted_writes >= 3):
        if trials >= MAX_TRIALS or time.monotonic() > deadline:
            break
        # Every trial starts from A; the child replaces it with B, again and again. This save also replaces
        # whatever temporary files the last kill left: none may remain, or they would pile up.
        codec.save(a)
        assert folder_listing(conv_path) == [conv_path.name]
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(conv_path), str(B_COUNT), str(SIZE)],
            stdout=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n"
            # The child's first save takes about save_time: about half the kills land inside it.
            time.sleep(rng.uniform(0.0, 2.5 * save_time))
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            if child.stdout is not None:
                child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        trials += 1

        try:
            loaded = ConversationCodec(conv_path).load()
        except DecodeError as exc:
            pytest.fail(f"trial {trials}: torn file after SIGKILL: {exc}")
        if loaded == a:
            seen_a += 1
        elif loaded == b:
            seen_b += 1
        else:
            pytest.fail(f"trial {trials}: the file holds neither conversation ({len(loaded)} messages)")
        assert os.stat(conv_path).st_mode & 0o777 == 0o600

        # A kill inside the data file's write leaves `.<name>.tmp`, one inside the index's write (after the data
        # file took its name) `.<name>.idx.tmp`: fixed names, that the next save replaces (checked above).
        leftovers = _leftover_tmp_files(conv_path)
        interrupted_writes += bool(leftovers)
        assert {p.name for p in leftovers} <= {f".{conv_path.name}.tmp", f".{conv_path.name}.idx.tmp"}
        assert set(folder_listing(conv_path)) == {conv_path.name} | {p.name for p in leftovers}

    stats = f"{trials} trials: old file {seen_a}, new file {seen_b}, kills inside a write {interrupted_writes}"
    # The test only means something if kills interrupted writes in progress, before and after a rename.
    assert interrupted_writes >= 1, stats
    assert seen_a >= 1, stats
    assert seen_b >= 1, stats


def test_concurrent_reader_sees_a_whole_conversation(conv_path: Path) -> None:
    # ~9 MB and ~6 MB: several blocks of the streaming reader and writer.
    a = build("a", 3000, 3000)
    b = build("b", 2000, 3000)
    ConversationCodec(conv_path).save(a)
    stop = threading.Event()
    errors: list[BaseException] = []
    saves = 0

    def writer() -> None:
        nonlocal saves
        codec = ConversationCodec(conv_path)
        try:
            while not stop.is_set():
                codec.save(b if saves % 2 == 0 else a)
                saves += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    reader = ConversationCodec(conv_path)
    loads = {"a": 0, "b": 0}
    try:
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            try:
                loaded = reader.load()
            except DecodeError as exc:
                pytest.fail(f"a reader saw a torn file: {exc}")
            if loaded == a:
                loads["a"] += 1
            elif loaded == b:
                loads["b"] += 1
            else:
                pytest.fail(f"a reader saw neither conversation ({len(loaded)} messages)")
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert saves >= 2
    assert loads["a"] and loads["b"], loads
    assert folder_listing(conv_path) == [conv_path.name]


def test_concurrent_writers_last_rename_wins_whole(conv_path: Path) -> None:
    convs = [build(tag, 100, 2000) for tag in "abcd"]
    errors: list[BaseException] = []

    def writer(messages: list[Any]) -> None:
        codec = ConversationCodec(conv_path)
        try:
            for _ in range(10):
                codec.save(messages)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(c,)) for c in convs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert ConversationCodec(conv_path).load() in convs
    assert folder_listing(conv_path) == [conv_path.name]


@pytest.mark.parametrize("frames", [1, 3])  # one frame writes no index; several write one through its own temp file
def test_save_replaces_the_temp_files_a_killed_save_left(conv_path: Path, frames: int) -> None:
    codec = ConversationCodec(conv_path)
    codec.save(build("a", 3, 10))
    for name in (f".{conv_path.name}.tmp", f".{conv_path.name}.idx.tmp"):  # as a kill mid-write leaves them
        (conv_path.parent / name).write_bytes(b"half a write")
    b = build("b", 30, 10)
    codec.save(b)
    for _ in range(frames - 1):
        codec.append_turn(build("c", 2, 10))
    codec.save(codec.load())
    assert folder_listing(conv_path) == [conv_path.name]
    assert codec.load()[:30] == b


# ----------------------------------------------------------------------- failed saves leave no temp file


@pytest.fixture
def saved(conv_path: Path) -> tuple[ConversationCodec, bytes]:
    codec = ConversationCodec(conv_path)
    codec.save([{"role": "user", "content": "old"}])
    return codec, conv_path.read_bytes()


def _assert_untouched(codec: ConversationCodec, before: bytes) -> None:
    assert codec.path.read_bytes() == before
    assert not _leftover_tmp_files(codec.path)
    assert folder_listing(codec.path) == [codec.path.name]


def test_no_temp_file_after_encode_error(saved: tuple[ConversationCodec, bytes]) -> None:
    codec, before = saved
    with pytest.raises(EncodeError):
        codec.save([{"ok": 1}, {"bad": object()}])
    _assert_untouched(codec, before)


def test_no_temp_file_after_redact_error(saved: tuple[ConversationCodec, bytes]) -> None:
    codec, before = saved

    def redact(m: Any) -> Any:
        raise LookupError("no")

    with pytest.raises(LookupError):
        ConversationCodec(codec.path, redact=redact).save([{"a": 1}])
    _assert_untouched(codec, before)


@pytest.mark.parametrize("failing", ["fsync", "rename", "write"])
def test_no_temp_file_after_io_error(
    saved: tuple[ConversationCodec, bytes], monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    # The disk fails in the middle of the write: the old file stays, the temporary file is removed.
    codec, before = saved

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    if failing == "rename":  # whichever of the two the save uses
        monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError) as info:
        codec.save([{"role": "user", "content": "new" * 1000}])
    assert info.value.errno == 28
    monkeypatch.undo()
    _assert_untouched(codec, before)


def test_interrupt_during_save_leaves_old_file(
    saved: tuple[ConversationCodec, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C (KeyboardInterrupt) while the bytes are being written.
    codec, before = saved

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        codec.save([{"role": "user", "content": "new"}])
    monkeypatch.undo()
    _assert_untouched(codec, before)


MUTATOR = textwrap.dedent(
    """
    import sys, threading
    from conversation_codec import ConversationCodec
    codec = ConversationCodec(sys.argv[1], durable=False)
    N = 40
    messages = [{"content": "x" * 1_000_000 + str(i), "parts": ["p" * 300_000 + str(i)]} for i in range(N)]
    stop = False

    def mutate():
        i = 0
        while not stop:
            m = messages[i % N]
            m["content"] = "y" * 1_000_000 + str(i)  # frees the string the encoder may be copying
            m["parts"][0] = "é" * 200_000 + str(i)
            if i % 7 == 0:
                messages[(i * 3) % N] = {"content": "z" * 500_000, "parts": ["q"]}
            i += 1

    thread = threading.Thread(target=mutate)
    thread.start()
    try:
        for _ in range(10):
            codec.save(messages)
            loaded = codec.load()
            assert len(loaded) == N and all(set(m) == {"content", "parts"} for m in loaded), "bad load"
    finally:
        stop = True
        thread.join()
    print("ok")
    """
)


def test_messages_mutated_by_another_thread_during_save(conv_path: Path) -> None:
    # The encoder reads each message whole with the GIL held, but a save lets other threads run between blocks:
    # in the Python code that frames them, and while it waits for room in the queue of the Rust writer thread
    # (which never takes the GIL and holds only bytes already encoded). Then MUTATOR's thread replaces and frees
    # strings of messages not yet encoded. Each saved message is some consistent state; the process must not
    # crash. Run in a child process so that a crash (SIGSEGV) fails this test instead of killing the test run.
    result = subprocess.run(
        [sys.executable, "-c", MUTATOR, str(conv_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.strip() == "ok"
