"""Turns: `load(last=n, whole_turns=True)`, `pop()`, `pop_turn()` and `fork()`.

A turn is what one `append_turn` wrote; each message of a `save()` is a turn of its own. Every test here checks the
codec against a model: the list of turns a conversation is made of.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from _helpers import FORMATS, KEY
from conversation_codec import (
    ConversationCodec,
    CorruptFileError,
    DecryptionError,
    EncodeError,
    SessionStore,
    _core,
    storage,
)
from conversation_codec.frames import TURN_FLAG
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

Turns = list[list[Any]]


def flat(turns: Turns) -> list[Any]:
    return [m for turn in turns for m in turn]


def whole_tail(turns: Turns, last: int) -> list[Any]:
    """The model of `load(last, whole_turns=True)`: whole turns from the end until they hold `last` messages."""
    taken: Turns = []
    for turn in reversed(turns):
        if sum(map(len, taken)) >= last:
            break
        taken.insert(0, turn)
    return flat(taken)


def build(codec: ConversationCodec, saved: int, appended: list[int]) -> Turns:
    """A conversation of `saved` saved messages and then turns of the sizes `appended`; returns its turns."""
    turns: Turns = [[{"saved": i}] for i in range(saved)]
    codec.save(flat(turns))
    for n, size in enumerate(appended):
        turn = [{"turn": n, "m": k, "text": "x" * (n % 7)} for k in range(size)]
        codec.append_turn(turn)
        turns.append(turn)
    return turns


# ---- load(last, whole_turns=True) -----------------------------------------------------------------------------


def test_a_tail_never_starts_inside_a_turn(conv_path: Path, options: dict[str, Any]) -> None:
    codec = ConversationCodec(conv_path, **options)
    turns = build(codec, 4, [1, 3, 2, 1, 4, 2])
    messages = flat(turns)
    for last in range(1, len(messages) + 2):
        assert codec.load(last=last, whole_turns=True) == whole_tail(turns, last), last
        assert codec.load(last=last) == messages[-last:], last


def test_a_tool_result_comes_with_the_call_that_asked_for_it(conv_path: Path, options: dict[str, Any]) -> None:
    """The openai-agents issue 3738 case: the last two items are a call's result and the answer; a plain tail of
    two would start with the result, orphaned."""
    codec = ConversationCodec(conv_path, **options)
    codec.append_turn({"role": "user", "content": "weather?"})
    call = {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"}
    result = {"type": "function_call_output", "call_id": "c1", "output": "sunny"}
    answer = {"role": "assistant", "content": "Sunny."}
    codec.append_turn([call, result, answer])
    assert codec.load(last=2) == [result, answer]
    assert codec.load(last=2, whole_turns=True) == [call, result, answer]


@pytest.mark.parametrize("index", ["sound", "missing", "stale"])
def test_whole_turns_with_or_without_the_index(conv_path: Path, options: dict[str, Any], index: str) -> None:
    codec = ConversationCodec(conv_path, **options)
    turns = build(codec, 300, [5, 1, 9, 2] * 30)
    index_path = Path(str(conv_path) + ".idx")
    if index == "missing":
        index_path.unlink()
    elif index == "stale":
        index_path.write_bytes(index_path.read_bytes()[:-8] + b"\0" * 8)
    for last in (1, 2, 5, 6, 16, 17, 100, 455, 500, 10_000):
        assert ConversationCodec(conv_path, **options).load(last=last, whole_turns=True) == whole_tail(turns, last)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fmt=st.sampled_from(sorted(FORMATS)),
    saved=st.integers(0, 5),
    appended=st.lists(st.integers(1, 5), max_size=12),
    pops=st.lists(st.booleans(), max_size=6),
    last=st.integers(1, 40),
)
def test_turns_follow_the_model_through_appends_and_pops(
    tmp_path: Path, fmt: str, saved: int, appended: list[int], pops: list[bool], last: int
) -> None:
    if "fernet_key" in FORMATS[fmt]:
        pytest.importorskip("cryptography.fernet")
    path = tmp_path / f"{fmt}-{saved}-{len(appended)}-{len(pops)}-{last}.jsonl"
    path.unlink(missing_ok=True)
    codec = ConversationCodec(path, **FORMATS[fmt])
    turns = build(codec, saved, appended)
    for whole in pops:
        if whole:
            assert codec.pop_turn() == (turns.pop() if turns else [])
        elif turns:
            assert codec.pop() == turns[-1].pop()
            if not turns[-1]:
                turns.pop()
        else:
            with pytest.raises(IndexError):
                codec.pop()
    assert codec.load() == flat(turns)
    assert len(codec) == len(flat(turns))
    assert ConversationCodec(path, **FORMATS[fmt]).load(last=last, whole_turns=True) == whole_tail(turns, last)
    report = codec.verify()
    assert report.ok and report.messages == len(flat(turns)), report
    assert list(codec.iter_turns()) == turns
    copy = ConversationCodec(tmp_path / f"copy-{path.name}", **FORMATS[fmt])
    copy.save_turns(codec.iter_turns())
    assert list(copy.iter_turns()) == turns
    assert copy.load(last=last, whole_turns=True) == whole_tail(turns, last)
    # The calls that rewrite a file keep its turns: rotate() an encrypted one, encrypt() another.
    fernet = pytest.importorskip("cryptography.fernet")
    compressed = FORMATS[fmt].get("compressed", False)
    if "fernet_key" in FORMATS[fmt]:
        rewritten = ConversationCodec(path, fernet_key=[fernet.Fernet.generate_key(), KEY], compressed=compressed)
        rewritten.rotate()
    else:
        rewritten = ConversationCodec(path, fernet_key=KEY, compressed=compressed)
        rewritten.encrypt()
    assert list(rewritten.iter_turns()) == turns
    assert rewritten.load(last=last, whole_turns=True) == whole_tail(turns, last)


# ---- pop and pop_turn ---------------------------------------------------------------------------------------------


def test_pop_takes_the_last_message_and_keeps_the_rest_of_its_turn_a_turn(
    conv_path: Path, options: dict[str, Any]
) -> None:
    codec = ConversationCodec(conv_path, **options)
    codec.append_turn({"q": 1})
    codec.append_turn([{"a": 1}, {"a": 2}, {"a": 3}])
    assert codec.pop() == {"a": 3}
    assert codec.load(last=1, whole_turns=True) == [{"a": 1}, {"a": 2}]
    assert codec.pop_turn() == [{"a": 1}, {"a": 2}]
    assert codec.load() == [{"q": 1}]
    assert codec.pop_turn() == [{"q": 1}]
    assert codec.load() == [] and len(codec) == 0
    assert codec.pop_turn() == []
    with pytest.raises(IndexError, match="empty conversation"):
        codec.pop()


def test_pop_of_a_missing_conversation(conv_path: Path) -> None:
    codec = ConversationCodec(conv_path)
    assert codec.pop_turn() == []
    with pytest.raises(IndexError):
        codec.pop()
    assert not conv_path.exists()


def test_a_pop_cuts_the_file_and_never_rewrites_it(conv_path: Path, options: dict[str, Any]) -> None:
    codec = ConversationCodec(conv_path, **options)
    build(codec, 50, [3] * 40)
    before = conv_path.read_bytes()
    inode = conv_path.stat().st_ino
    popped = codec.pop_turn()
    after = conv_path.read_bytes()
    assert conv_path.stat().st_ino == inode
    assert before.startswith(after) and len(after) < len(before)
    assert popped == [{"turn": 39, "m": k, "text": "x" * (39 % 7)} for k in range(3)]
    codec.pop()  # the rest of a turn of three is written where the turn was
    assert conv_path.read_bytes()[: len(after) - 400] == after[: len(after) - 400]
    assert conv_path.stat().st_ino == inode


def test_pops_keep_the_index_sound_so_appends_stay_cheap(conv_path: Path, options: dict[str, Any]) -> None:
    codec = ConversationCodec(conv_path, **options)
    turns = build(codec, 1000, [2] * 20)
    for _ in range(5):
        assert codec.pop() == turns[-1].pop()
        assert codec.pop_turn() == turns.pop()
    codec.append_turn([{"new": 1}, {"new": 2}])
    turns.append([{"new": 1}, {"new": 2}])
    report = codec.verify()
    assert report.ok and report.index == "sound", report
    assert codec.load() == flat(turns)
    assert ConversationCodec(conv_path, **options).load(last=3, whole_turns=True) == whole_tail(turns, 3)


def test_pop_into_a_save_takes_one_message(conv_path: Path, options: dict[str, Any]) -> None:
    codec = ConversationCodec(conv_path, **options)
    codec.save([{"i": i} for i in range(4)])
    assert codec.pop_turn() == [{"i": 3}]
    assert codec.pop() == {"i": 2}
    codec.append_turn([{"t": 1}, {"t": 2}])
    assert codec.load(last=1, whole_turns=True) == [{"t": 1}, {"t": 2}]
    assert codec.load() == [{"i": 0}, {"i": 1}, {"t": 1}, {"t": 2}]


def test_pop_of_a_file_of_another_writer(conv_path: Path) -> None:
    """Lines written by another tool are turns of one message each, whatever their line endings."""
    conv_path.write_bytes(b'{"a":1}\r\n{"b":2}\r\n{"c":3}')
    codec = ConversationCodec(conv_path)
    assert codec.pop() == {"c": 3}
    assert codec.pop_turn() == [{"b": 2}]
    assert conv_path.read_bytes() == b'{"a":1}\r\n'


def test_a_turn_is_flagged_in_gzip_and_still_reads_with_gzip(conv_path: Path) -> None:
    codec = ConversationCodec(conv_path, compressed=True)
    codec.save([{"s": 1}, {"s": 2}])
    codec.append_turn([{"t": 1}, {"t": 2}])
    data = conv_path.read_bytes()
    second = data.index(b"\x1f\x8b", 1)
    assert int.from_bytes(data[20:24], "little") == 2  # a block of a save: no flag
    assert int.from_bytes(data[second + 20 : second + 24], "little") == 2 | TURN_FLAG
    assert gzip.decompress(data) == b'{"s":1}\n{"s":2}\n{"t":1}\n{"t":2}\n'


# ---- a pop cut short --------------------------------------------------------------------------------------------


_KILLED_POP = """
import os, sys
from conversation_codec import ConversationCodec, files, storage
import _helpers
options = dict(_helpers.FORMATS[sys.argv[2]])
if "fernet_key" in options:
    options["fernet_key"] = os.environb[b"TEST_KEY"]  # the parent's key: _helpers makes a new one per process
where = sys.argv[3]
real_truncate, real_write = os.ftruncate, files.write_all
def truncate(fd, size):
    if where == "before the cut":
        os._exit(9)
    real_truncate(fd, size)
    if where == "after the cut":
        os._exit(9)
def write_all(fd, *chunks):  # the first write is the intent's, the second the frame's
    calls.append(fd)
    data = b"".join(bytes(c) for c in chunks)
    if len(calls) == 1:
        return real_write(fd, data)
    real_write(fd, data[: len(data) // 2])
    os._exit(9)
calls = []
storage.os.ftruncate = truncate
if where == "inside the write":
    files.write_all = write_all
ConversationCodec(sys.argv[1], **options).pop()
"""


def _kill_a_pop(path: Path, fmt: str, where: str) -> None:
    key = FORMATS["fernet"]["fernet_key"].decode()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "TEST_KEY": key}
    args = [sys.executable, "-c", textwrap.dedent(_KILLED_POP), str(path), fmt, where]
    assert subprocess.run(args, env=env, check=False).returncode == 9


@pytest.mark.parametrize("where", ["before the cut", "after the cut"])
def test_a_plain_pop_killed_midway_leaves_old_or_new(conv_path: Path, where: str) -> None:
    """A plain pop of one message of a turn of several makes it a turn of its own, then cuts it off: killed in
    between, the conversation is whole, its last message a turn of its own; nothing waits to be finished."""
    codec = ConversationCodec(conv_path)
    turns = build(codec, 3, [1, 4])
    _kill_a_pop(conv_path, "plain", where)
    assert not Path(str(conv_path) + storage.PENDING).exists()
    if where == "before the cut":
        turns[-1:] = [turns[-1][:-1], turns[-1][-1:]]
    else:
        turns[-1].pop()
    reader = ConversationCodec(conv_path)
    assert reader.load() == flat(turns)
    assert reader.load(last=1, whole_turns=True) == turns[-1]
    assert reader.verify().ok


def test_a_reader_racing_plain_pops_never_sees_a_turn_come_back(conv_path: Path) -> None:
    codec = ConversationCodec(conv_path)
    build(codec, 0, [3] * 60)
    seen: list[int] = []
    done = threading.Event()

    def read() -> None:
        reader = ConversationCodec(conv_path)
        while not done.is_set():
            seen.append(len(reader.load()))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for _ in range(150):
            codec.pop()
    finally:
        done.set()
        thread.join()
    assert len(seen) > 10
    assert seen == sorted(seen, reverse=True), "a reader saw messages vanish and come back"


@pytest.mark.parametrize("fmt", ["gzip", "fernet", "gzip+fernet"])
@pytest.mark.parametrize("where", ["before the cut", "after the cut", "inside the write"])
def test_a_pop_killed_midway_is_undone_by_the_next_writer(conv_path: Path, fmt: str, where: str) -> None:
    """A pop killed midway is undone: what it replaced is kept in `<name>.pop` until the frame that
    replaces it is on disk, and put back by the next writer."""
    options = FORMATS[fmt]
    if "fernet_key" in options:
        pytest.importorskip("cryptography.fernet")
    codec = ConversationCodec(conv_path, **options)
    turns = build(codec, 3, [1, 4])
    _kill_a_pop(conv_path, fmt, where)
    assert Path(str(conv_path) + storage.PENDING).exists()
    report = ConversationCodec(conv_path, **options).verify()
    assert not report.ok and "a pop was cut short" in report.errors[-1][1], report
    writer = ConversationCodec(conv_path, **options)
    writer.append_turn({"next": 1})
    assert writer.load() == [*flat(turns), {"next": 1}]
    assert writer.load(last=2, whole_turns=True) == [*turns[-1], {"next": 1}]
    assert not Path(str(conv_path) + storage.PENDING).exists()
    assert writer.verify().ok


@pytest.mark.parametrize("fmt", ["gzip", "fernet"])
def test_a_pop_whose_write_fails_changes_nothing(conv_path: Path, fmt: str) -> None:
    options = FORMATS[fmt]
    if "fernet_key" in options:
        pytest.importorskip("cryptography.fernet")
    codec = ConversationCodec(conv_path, **options)
    turns = build(codec, 2, [3])
    before = conv_path.read_bytes()
    real = storage.files.write_all
    calls: list[int] = []

    def full_disk(fd: int, *chunks: Any) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the first write is the intent's, the second the frame's
            raise OSError(28, "No space left on device")
        real(fd, *chunks)

    storage.files.write_all = full_disk
    try:
        with pytest.raises(OSError, match="No space"):
            codec.pop()
    finally:
        storage.files.write_all = real
    assert conv_path.read_bytes() == before
    assert not Path(str(conv_path) + storage.PENDING).exists()
    assert codec.pop() == turns[-1][-1]


def test_repair_undoes_a_pop_cut_short(conv_path: Path) -> None:
    codec = ConversationCodec(conv_path, compressed=True)
    turns = build(codec, 2, [3])
    _kill_a_pop(conv_path, "gzip", "after the cut")
    assert codec.load() == flat(turns[:-1])  # what a reader sees until a writer comes
    assert codec.repair() == []
    assert codec.load() == flat(turns) and codec.verify().ok
    assert codec.load(last=1, whole_turns=True) == turns[-1]


def test_a_pop_cut_short_is_undone_in_a_copy_of_its_folder(tmp_path: Path) -> None:
    """A backup restored, a folder copied: the undo log must not be bound to the inode (found by crash_states)."""
    conv_path = tmp_path / "a" / "conversation.jsonl"
    codec = ConversationCodec(conv_path, compressed=True)
    turns = build(codec, 2, [3])
    _kill_a_pop(conv_path, "gzip", "after the cut")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    copy = ConversationCodec(tmp_path / "b" / "conversation.jsonl", compressed=True)
    copy.append_turn({"next": 1})
    assert copy.load() == [*flat(turns), {"next": 1}]


def test_an_undo_log_of_a_replaced_file_is_dropped(conv_path: Path) -> None:
    codec = ConversationCodec(conv_path, compressed=True)
    build(codec, 2, [3])
    _kill_a_pop(conv_path, "gzip", "after the cut")
    pending = Path(str(conv_path) + storage.PENDING)
    assert pending.exists()
    codec.save([{"fresh": 1}])  # a save replaces what the undo log was for
    assert not pending.exists()
    codec.append_turn({"b": 2})
    assert codec.load() == [{"fresh": 1}, {"b": 2}]


# ---- fork ---------------------------------------------------------------------------------------------------------


def test_a_fork_is_the_same_conversation_and_then_its_own(tmp_path: Path, options: dict[str, Any]) -> None:
    codec = ConversationCodec(tmp_path / "a.jsonl", **options)
    turns = build(codec, 200, [3, 1, 2] * 20)
    fork = codec.fork(tmp_path / "branches" / "b.jsonl")
    assert isinstance(fork, ConversationCodec)
    assert fork.load() == flat(turns)
    assert fork.load(last=2, whole_turns=True) == whole_tail(turns, 2)
    assert fork.verify().index == "sound"
    assert (tmp_path / "branches" / "b.jsonl").stat().st_mode & 0o777 == 0o600
    fork.append_turn({"branch": "b"})
    codec.append_turn({"branch": "a"})
    assert fork.load()[-1] == {"branch": "b"} and codec.load()[-1] == {"branch": "a"}
    assert fork.load()[:-1] == codec.load()[:-1] == flat(turns)
    assert fork.verify().ok and codec.verify().ok


def test_a_fork_never_replaces_a_file(tmp_path: Path) -> None:
    codec = ConversationCodec(tmp_path / "a.jsonl")
    codec.append_turn({"a": 1})
    (tmp_path / "b.jsonl").write_text('{"mine":1}\n')
    with pytest.raises(FileExistsError):
        codec.fork(tmp_path / "b.jsonl")
    assert (tmp_path / "b.jsonl").read_text() == '{"mine":1}\n'
    assert sorted(os.listdir(tmp_path)) == ["a.jsonl", "b.jsonl"]  # no temporary file left


def test_a_fork_of_a_missing_conversation_is_empty(tmp_path: Path) -> None:
    fork = ConversationCodec(tmp_path / "a.jsonl").fork(tmp_path / "b.jsonl")
    assert fork.load() == [] and not (tmp_path / "b.jsonl").exists()


def test_a_fork_leaves_a_torn_tail_out(conv_path: Path, tmp_path: Path) -> None:
    codec = ConversationCodec(conv_path)
    codec.append_turn({"a": 1})
    with conv_path.open("ab") as f:
        f.write(b'\t{"cut":')
    fork = codec.fork(tmp_path / "fork.jsonl")
    assert (tmp_path / "fork.jsonl").read_bytes() == b'{"a":1}\n'
    assert fork.verify().ok
    assert list(tmp_path.glob("conversation.jsonl.torn-*"))  # set aside, as every writer does


def test_async_pop_and_fork(tmp_path: Path, options: dict[str, Any]) -> None:
    codec = ConversationCodec(tmp_path / "a.jsonl", **options)
    build(codec, 1, [2, 2])

    async def scenario() -> tuple[Any, list[Any], list[Any]]:
        fork = await codec.afork(tmp_path / "b.jsonl")
        return await codec.apop(), await codec.apop_turn(), await fork.aload(last=1, whole_turns=True)

    popped, turn, tail = asyncio.run(scenario())
    assert popped == {"turn": 1, "m": 1, "text": "x"}
    assert turn == [{"turn": 1, "m": 0, "text": "x"}]
    assert tail == [{"turn": 1, "m": 0, "text": "x"}, {"turn": 1, "m": 1, "text": "x"}]


def test_a_session_forks_into_a_new_session(tmp_path: Path, options: dict[str, Any]) -> None:
    store = SessionStore(tmp_path / "store", **options)
    source = store.conversation("user-1")
    source.append_turn([{"a": 1}, {"a": 2}])
    branch = store.fork("user-1", "user-1/branch b")
    assert branch.session_id == "user-1/branch b"
    assert branch.load() == [{"a": 1}, {"a": 2}]
    branch.pop()
    assert source.load() == [{"a": 1}, {"a": 2}] and branch.load() == [{"a": 1}]
    assert sorted(store.sessions()) == ["user-1", "user-1/branch b"]
    with pytest.raises(FileExistsError):
        store.fork("user-1/branch b", "user-1")
    assert asyncio.run(store.afork("user-1", "user-2")).load() == [{"a": 1}, {"a": 2}]


def test_verify_counts_turns(conv_path: Path, options: dict[str, Any]) -> None:
    codec = ConversationCodec(conv_path, **options)
    turns = build(codec, 3, [2, 1, 4])
    assert codec.verify().turns == len(turns) == 6
    codec.pop()
    assert codec.verify().turns == 6
    codec.pop_turn()
    assert codec.verify().turns == 5


def test_a_pop_sets_a_torn_tail_aside_first(conv_path: Path, options: dict[str, Any]) -> None:
    codec = ConversationCodec(conv_path, **options)
    turns = build(codec, 1, [2, 2])
    whole = conv_path.read_bytes()
    codec.append_turn([{"torn": 1}, {"torn": 2}])
    torn = conv_path.read_bytes()[len(whole) :]
    conv_path.write_bytes(whole + torn[: len(torn) // 2])
    assert ConversationCodec(conv_path, **options).pop_turn() == turns[-1]
    assert codec.load() == flat(turns[:-1])
    (side,) = conv_path.parent.glob("conversation.jsonl.torn-*")
    assert side.read_bytes() == torn[: len(torn) // 2]


def test_a_pop_of_a_damaged_file_or_under_a_wrong_key_changes_nothing(
    conv_path: Path, fernet_key: bytes, other_fernet_key: bytes
) -> None:
    codec = ConversationCodec(conv_path, fernet_key=fernet_key)
    build(codec, 1, [2, 2])
    before = conv_path.read_bytes()
    with pytest.raises(DecryptionError):
        ConversationCodec(conv_path, fernet_key=other_fernet_key).pop()
    lines = before.splitlines(keepends=True)
    damaged = b"".join(lines[:-1]) + lines[-1][:10] + b"!" + lines[-1][11:]
    conv_path.write_bytes(damaged)
    with pytest.raises(CorruptFileError):
        codec.pop_turn()
    assert conv_path.read_bytes() == damaged
    assert not Path(str(conv_path) + storage.PENDING).exists()


@pytest.mark.parametrize("fmt", ["gzip", "fernet"])
def test_a_retried_pop_after_a_double_fault_takes_one_message(conv_path: Path, fmt: str) -> None:
    """The frame's write fails, and so does putting the cut bytes back: the log stays, and the next writer must
    undo the pop (not finish it), or the caller's retry would take a second message (found by io_errors)."""
    options = FORMATS[fmt]
    if "fernet_key" in options:
        pytest.importorskip("cryptography.fernet")
    codec = ConversationCodec(conv_path, **options)
    turns = build(codec, 2, [3])
    real = storage.files.write_all
    calls: list[int] = []

    def failing(fd: int, *chunks: Any) -> None:
        calls.append(fd)
        if len(calls) >= 2:  # the first write is the log's; the frame's and the put-back's fail
            raise OSError(5, "Input/output error")
        real(fd, *chunks)

    storage.files.write_all = failing
    try:
        with pytest.raises(OSError):
            codec.pop()
    finally:
        storage.files.write_all = real
    assert Path(str(conv_path) + storage.PENDING).exists()
    assert codec.pop() == turns[-1][-1]  # the retry
    assert codec.load() == flat(turns)[:-1]


# ---- iter_turns, save_turns, and the calls that rewrite a file keep turns -----------------------------------------


def big_turns(count: int) -> Turns:
    """`count` turns of 1 to 4 messages of 40 to 1,000 bytes."""
    return [
        [{"turn": n, "m": k, "text": f"{n}-{k} " + "lorem ipsum " * ((n * 7 + k * 13) % 80)} for k in range(1 + n % 4)]
        for n in range(count)
    ]


def test_iter_turns_gives_the_turns_across_read_blocks(
    conv_path: Path, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = ConversationCodec(conv_path, **options)
    turns: Turns = [[{"saved": i}] for i in range(50)]
    codec.save(flat(turns))
    for turn in big_turns(300):
        codec.append_turn(turn)
        turns.append(turn)
    monkeypatch.setattr(storage, "_READ_BLOCK", 1000)  # turns straddle the blocks the file is read in
    assert conv_path.stat().st_size > 20 * storage._READ_BLOCK
    assert list(codec.iter_turns()) == turns
    assert list(codec.iter()) == flat(turns)
    assert list(ConversationCodec(conv_path.parent / "none.jsonl").iter_turns()) == []


def test_save_turns_keeps_each_turn_whole(conv_path: Path, options: dict[str, Any]) -> None:
    codec = ConversationCodec(conv_path, **options)
    turns = [[{"saved": 0}], *big_turns(300), [{"one": 1}], [{"two": 1}, {"two": 2}]]
    codec.save_turns(iter(turns))  # any iterable, streamed
    assert list(codec.iter_turns()) == turns
    assert codec.load() == flat(turns)
    assert codec.load(last=1, whole_turns=True) == turns[-1]
    assert codec.pop_turn() == turns[-1]
    report = codec.verify()
    assert report.ok and report.turns == len(turns) - 1, report
    codec.save_turns([[], [{"a": 1}], []])  # empty turns hold nothing
    assert list(codec.iter_turns()) == [[{"a": 1}]]
    codec.save_turns([])
    assert codec.load() == [] and len(codec) == 0


def test_save_turns_redacts_and_refuses_what_is_not_a_turn(conv_path: Path, options: dict[str, Any]) -> None:
    codec = ConversationCodec(conv_path, redact=lambda m: {**m, "secret": "[redacted]"}, **options)
    codec.save_turns([[{"secret": "s1"}, {"secret": "s2"}]])
    assert list(codec.iter_turns()) == [[{"secret": "[redacted]"}, {"secret": "[redacted]"}]]
    before = conv_path.read_bytes()
    with pytest.raises(TypeError, match="turn 1 is a dict"):
        codec.save_turns([[{"a": 1}], {"role": "user"}])  # a message where a turn should be
    with pytest.raises(EncodeError) as caught:  # the path counts messages from the start of the conversation
        codec.save_turns([[{"a": 1}], [{"b": 2}, {"c": {1j}}]])
    assert "[2]" in str(caught.value), caught.value
    with pytest.raises(EncodeError) as caught:
        codec.save_turns([[{"a": 1}], [{"b": 2}, {"c": 3}], [{"d": object()}]])
    assert "[3]" in str(caught.value), caught.value
    assert conv_path.read_bytes() == before  # nothing changed


def test_save_turns_reads_each_turn_once(conv_path: Path) -> None:
    """A hostile list subclass whose len() disagrees with its items: what is stored is what iterating it gives."""

    class Lying(list):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return 1

    codec = ConversationCodec(conv_path)
    codec.save_turns([Lying([{"a": 1}, {"a": 2}, {"a": 3}]), [{"b": 1}]])
    assert list(codec.iter_turns()) == [[{"a": 1}, {"a": 2}, {"a": 3}], [{"b": 1}]]


def test_asave_turns(conv_path: Path, options: dict[str, Any]) -> None:
    codec = ConversationCodec(conv_path, **options)
    turns = [[{"a": 1}, {"a": 2}], [{"b": 1}]]
    asyncio.run(codec.asave_turns(turns))
    assert list(codec.iter_turns()) == turns


def tool_turns(codec: ConversationCodec) -> Turns:
    """A conversation whose last turn is a tool call, its result and the answer."""
    turns: Turns = [[{"role": "user", "content": "weather?"}]]
    turns.append(
        [
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ]
    )
    for turn in turns:
        codec.append_turn(turn)
    return turns


@pytest.mark.parametrize("compressed", [False, True])
def test_rotate_keeps_turns(tmp_path: Path, compressed: bool) -> None:
    fernet = pytest.importorskip("cryptography.fernet")
    old, new = fernet.Fernet.generate_key(), fernet.Fernet.generate_key()
    path = tmp_path / "c.jsonl"
    turns = [[{"saved": i}] for i in range(3)]
    ConversationCodec(path, fernet_key=old, compressed=compressed).save(flat(turns))
    turns += tool_turns(ConversationCodec(path, fernet_key=old, compressed=compressed))
    rotated = ConversationCodec(path, fernet_key=[new, old], compressed=compressed)
    rotated.rotate()
    reader = ConversationCodec(path, fernet_key=new)
    assert list(reader.iter_turns()) == turns
    assert reader.load(last=2, whole_turns=True) == turns[-1]  # the result never without its call
    assert reader.verify().turns == len(turns)


@pytest.mark.parametrize("fmt", ["plain", "gzip"])
def test_encrypt_keeps_turns(tmp_path: Path, fmt: str) -> None:
    pytest.importorskip("cryptography.fernet")
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, **FORMATS[fmt])
    turns = build(codec, 2, [3, 1, 2]) + tool_turns(codec)
    ConversationCodec(path, **FORMATS["fernet"]).encrypt()
    reader = ConversationCodec(path, **FORMATS["fernet"])
    assert list(reader.iter_turns()) == turns
    assert reader.load(last=2, whole_turns=True) == turns[-1]


def test_repair_keeps_the_turns_of_the_intact_frames(conv_path: Path) -> None:
    codec = ConversationCodec(conv_path, compressed=True)
    turns = build(codec, 2, [3, 1, 2, 4])
    damaged = bytearray(conv_path.read_bytes())
    members, _ = _core.scan_gzip(bytes(damaged))
    assert [count for _, _, count in members] == [2, 3, 1, 2, 4]
    damaged[members[2][0] + 30] ^= 0xFF  # inside the deflate data of the turn of 1
    conv_path.write_bytes(bytes(damaged))
    assert not codec.verify().ok
    codec.repair()
    kept = [turn for turn in turns if turn != turns[3]]
    assert list(codec.iter_turns()) == kept
    assert codec.load(last=1, whole_turns=True) == kept[-1]


# ---- blank lines and empty frames hold no turn ----------------------------------------------------------------


@pytest.mark.parametrize("blank", [b"\n", b"  \r\n", b"\n\n \n"])
def test_blank_lines_are_no_turn(conv_path: Path, blank: bytes) -> None:
    """A plain file of another writer may hold blank lines (the stdlib reader skips them): they hold no message,
    so no turn, wherever they are."""
    conv_path.write_bytes(b'{"a":1}\n' + blank + b'{"b":2}\n\t{"c":1}\t\n{"c":2}\n' + blank)
    codec = ConversationCodec(conv_path)
    turns = [[{"a": 1}], [{"b": 2}], [{"c": 1}, {"c": 2}]]
    assert list(codec.iter_turns()) == turns
    assert codec.verify().turns == 3
    assert codec.load(last=1, whole_turns=True) == turns[-1]


@pytest.mark.parametrize("blank", [b"\n", b"  \n\n"])
def test_a_pop_takes_a_message_from_before_blank_lines(conv_path: Path, blank: bytes) -> None:
    conv_path.write_bytes(b'{"a":1}\n\t{"b":1}\t\n{"b":2}\n' + blank)
    codec = ConversationCodec(conv_path)
    assert codec.pop() == {"b": 2}
    assert codec.load() == [{"a": 1}, {"b": 1}]  # the popped message is gone from the file, not the blank line
    conv_path.write_bytes(b'{"a":1}\n\t{"b":1}\t\n{"b":2}\n' + blank)
    assert codec.pop_turn() == [{"b": 1}, {"b": 2}]
    assert conv_path.read_bytes() == b'{"a":1}\n'


@pytest.mark.parametrize("fmt", ["plain", "gzip"])
def test_a_pop_steps_over_frames_that_hold_no_message(conv_path: Path, fmt: str) -> None:
    """The file's last frames hold no message (blank lines after a frame boundary of a large plain file; an empty
    gzip member of another tool), and the index has their records: a pop cuts them off and takes the last turn."""
    codec = ConversationCodec(conv_path, **FORMATS[fmt])
    turns = build(codec, 0, [])
    turns += [[{"i": i, "text": "x" * 1000}] for i in range(400)]
    codec.save(flat(turns))
    codec.append_turn([{"a": 1}, {"a": 2}])
    turns.append([{"a": 1}, {"a": 2}])
    with open(conv_path, "ab") as f:
        f.write(b"\n  \n" if fmt == "plain" else gzip.compress(b""))
    codec = ConversationCodec(conv_path, **FORMATS[fmt])
    codec.append_turn({"last": 1})  # the empty frame is now in the middle (and in the index): nothing to step over
    assert codec.pop_turn() == [{"last": 1}]
    with open(conv_path, "ab") as f:
        f.write(b"\n  \n" if fmt == "plain" else gzip.compress(b""))
    codec = ConversationCodec(conv_path, **FORMATS[fmt])
    assert codec.pop_turn() == turns.pop()
    assert codec.pop() == turns.pop()[0]
    assert codec.load() == flat(turns)
    report = codec.verify()
    assert report.ok and report.turns == len(turns), report
