"""The storage layer under hostile conditions: torn turns, failing disks, locks, fork, odd files and paths.

Each test pins one defect of the hardening issue (its number in brackets); each failed before its fix.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from _helpers import KEY
from conversation_codec import (
    CodecError,
    ConversationCodec,
    CorruptFileError,
    DecryptionError,
    TornTailWarning,
    UnencryptedFileError,
)
from conversation_codec import files as files_module
from conversation_codec import storage as storage_module
from cryptography.fernet import Fernet


def message(i: int) -> dict[str, Any]:
    return {"role": ("user", "assistant")[i % 2], "content": f"message {i} " + "é" * (i % 7), "i": i}


def idx(path: Path) -> Path:
    return path.with_name(path.name + ".idx")


def side_files(folder: Path, kind: str = ".torn-") -> list[Path]:
    return sorted(p for p in folder.iterdir() if kind in p.name)


def every_view(codec: ConversationCodec) -> tuple[list[Any], int, list[Any], list[Any]]:
    """load(), len(), load(last=2) and iteration, with warnings recorded rather than raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornTailWarning)
        return codec.load(), len(codec), codec.load(last=2), list(codec)


# ------------------------------------------------------------------------------------ [5] turns land whole


@pytest.mark.parametrize("with_index", [False, True])
def test_a_plain_turn_cut_at_any_byte_is_all_or_nothing(tmp_path: Path, with_index: bool) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, durable=False)
    if with_index:
        codec.save([message(i) for i in range(4000)])  # several frames: an index
    else:
        codec.save([message(0), message(1)])
    before = codec.load()
    size = path.stat().st_size
    turn = [message(10), message(11), message(12)]
    codec.append_turn(turn)
    whole = path.read_bytes()
    index_bytes = idx(path).read_bytes() if with_index else None
    for cut in range(size, len(whole) + 1):
        path.write_bytes(whole[:cut])
        if index_bytes is not None:
            idx(path).write_bytes(index_bytes)
        fresh = ConversationCodec(path)
        expected = before + turn if cut == len(whole) else before
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert fresh.load() == expected, cut
            assert len(fresh) == len(expected), cut
            assert fresh.load(last=4) == expected[-4:], cut
            assert list(fresh) == expected, cut
        torn = cut not in (size, len(whole))
        assert all(issubclass(w.category, TornTailWarning) for w in caught)
        assert bool(caught) == torn, cut
    assert whole[size:].count(b"\t\n") == 2  # every line but the last says the turn goes on
    # The file is what the original reader reads too: one JSON document per non-blank line.
    with open(path, encoding="utf-8") as f:
        assert [json.loads(line) for line in f if line.strip()] == before + turn


def test_a_turn_cut_at_a_line_break_goes_aside_whole(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path)
    codec.append_turn(message(0))
    size = path.stat().st_size
    codec.append_turn([message(1), message(2)])
    whole = path.read_bytes()
    first_line_end = whole.index(b"\n", size) + 1
    os.truncate(path, first_line_end)  # the first of two lines reached the disk, whole, with its line break
    with pytest.warns(TornTailWarning):
        assert ConversationCodec(path).load() == [message(0)]
    ConversationCodec(path).append_turn(message(3))
    assert ConversationCodec(path).load() == [message(0), message(3)]
    assert [(p.name, p.read_bytes()) for p in side_files(tmp_path)] == [
        (f"c.jsonl.torn-{size}", whole[size:first_line_end])
    ]


# --------------------------------------------------------------------------- [10] torn tails do not break readers


def test_readers_return_the_acknowledged_conversation_before_a_torn_tail(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, **options)
    codec.save([message(i) for i in range(5)])
    codec.append_turn(message(5))
    size = path.stat().st_size
    codec.append_turn([message(6), message(7)])
    whole = path.read_bytes()
    for cut in sorted({size + 1, (size + len(whole)) // 2, len(whole) - 1}):
        path.write_bytes(whole[:cut])
        fresh = ConversationCodec(path, **options)
        with pytest.warns(TornTailWarning, match=f"from byte {size}"):
            assert fresh.load() == [message(i) for i in range(6)]
        with pytest.warns(TornTailWarning, match=f"from byte {size}"):
            assert len(fresh) == 6
        with pytest.warns(TornTailWarning, match=f"from byte {size}"):
            assert fresh.load(last=3) == [message(3), message(4), message(5)]
        with pytest.warns(TornTailWarning, match=f"from byte {size}"):
            assert list(fresh) == [message(i) for i in range(6)]
        assert path.read_bytes() == whole[:cut]  # readers leave the bytes for the next writer


def test_damage_before_the_end_is_an_error_naming_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, fernet_key=KEY)
    for i in range(3):
        codec.append_turn(message(i))
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1][:50] + b"!" + lines[1][51:]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(CorruptFileError) as info:
        codec.load()
    assert info.value.offset == len(lines[0]) + 1
    assert isinstance(info.value, ValueError)


def test_a_writer_at_work_is_not_reported_as_torn(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path).append_turn(message(0))
    with open(path, "ab") as f:
        f.write(b'{"half": "writ')
    with files_module.WriterLock(str(path), create=False), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ConversationCodec(path).load() == [message(0)]  # left out, silently: it is in progress


# ------------------------------------------------------------------------------ [9] a failed append is cut back


def test_a_failed_append_leaves_the_file_as_it_was(tmp_path: Path, options: dict[str, Any], monkeypatch) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, **options)
    codec.save([message(0), message(1)])
    codec.append_turn(message(2))
    before = path.read_bytes()
    real_write_all = files_module.write_all

    def half_then_enospc(fd: int, *chunks: Any) -> None:
        data = b"".join(bytes(c) for c in chunks)
        real_write_all(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files_module, "write_all", half_then_enospc)
    with pytest.raises(OSError) as info:
        codec.append_turn([message(3), message(4)])
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ConversationCodec(path, **options).load() == [message(0), message(1), message(2)]
    codec.append_turn(message(5))
    assert codec.load() == [message(0), message(1), message(2), message(5)]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real file system of 256 KiB (tmpfs), to fill up for a real ENOSPC. Needs root (mount)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_never_leaves_a_torn_tail_or_fails_a_landed_write(
    small_disk: Path, options: dict[str, Any]
) -> None:
    path = small_disk / "c.jsonl"
    codec = ConversationCodec(path, **options)
    acknowledged: list[Any] = []
    i = 0
    failures = 0
    while failures < 3:
        turn = [message(i), {"filler": os.urandom(3000).hex()}]
        try:
            codec.append_turn(turn)
            acknowledged += turn
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            failures += 1
        i += 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no torn tail: every failed append was cut back off
        assert ConversationCodec(path, **options).load() == acknowledged
        assert len(ConversationCodec(path, **options)) == len(acknowledged)


# ---------------------------------------------------------------- [8] a cache that cannot be written fails nothing


def test_an_index_that_cannot_be_written_fails_no_write(tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / "c.jsonl"
    idx(path).mkdir()  # nothing can write, replace or remove the index
    codec = ConversationCodec(path, **options)
    expected = [message(i) for i in range(3000)]
    codec.save(expected)  # several frames: it tries to write the index
    for i in range(3000, 3005):
        codec.append_turn(message(i))
        expected.append(message(i))
    fresh = ConversationCodec(path, **options)
    assert (fresh.load(), len(fresh), fresh.load(last=3)) == (expected, len(expected), expected[-3:])


def test_an_index_write_failing_on_a_full_disk_is_dropped(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path)
    codec.save([message(i) for i in range(3000)])
    codec.append_turn(message(3000))
    real = {name: getattr(os, name) for name in ("write", "writev", "pwrite")}
    faults = []

    def full(name: str) -> Any:
        """`os.<name>`, but a full disk for the index file (whichever call the code uses to write it)."""

        def write(fd: int, *args: Any) -> int:
            if os.readlink(f"/proc/self/fd/{fd}").endswith(".idx"):
                faults.append(name)
                raise OSError(errno.ENOSPC, "No space left on device")
            return real[name](fd, *args)

        return write

    for name in real:
        monkeypatch.setattr(os, name, full(name))
    codec.append_turn(message(3001))  # landed: must not raise, or a retry would store it twice
    monkeypatch.undo()
    assert faults  # the index write was attempted, and failed
    assert not idx(path).exists()
    assert ConversationCodec(path).load(last=2) == [message(3000), message(3001)]


# ------------------------------------------------------------------------- [6] [14] readers never write


def test_readers_never_write(tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, **options)
    codec.save([message(i) for i in range(3000)])
    codec.append_turn(message(3000))
    idx(path).unlink()
    listing = sorted(p.name for p in tmp_path.iterdir())
    every_view(ConversationCodec(path, **options))
    assert sorted(p.name for p in tmp_path.iterdir()) == listing


request_cleanup: list[Path] = []


@pytest.fixture(autouse=True, scope="module")
def _remove_folders_made_outside_tmp_path():
    yield
    for folder in request_cleanup:
        shutil.rmtree(folder, ignore_errors=True)


READ_ONLY_CHILD = textwrap.dedent(
    """
    import json, os, sys
    from conversation_codec import ConversationCodec  # imported first: root's interpreter is not for nobody
    os.setgid(65534); os.setuid(65534)
    codec = ConversationCodec(sys.argv[1])
    print(json.dumps([len(codec), codec.load(last=2), len(codec.load()), len(list(codec))]))
    """
)


def test_readers_work_in_a_folder_they_cannot_write(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root, to read as another user who cannot write the folder")
    folder = Path(tempfile.mkdtemp(prefix="cc-readonly-"))  # /tmp's own parents are open to every user
    os.chmod(folder, 0o755)
    request_cleanup.append(folder)
    path = folder / "c.jsonl"
    codec = ConversationCodec(path)
    codec.save([message(i) for i in range(3000)])
    codec.append_turn(message(3000))
    os.chmod(path, 0o644)
    idx(path).unlink()  # a reader that rebuilt it would need to write
    out = subprocess.run([sys.executable, "-c", READ_ONLY_CHILD, str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [3001, [message(2999), message(3000)], 3001, 3001]


# ------------------------------------------------------------------------------------- [7] no self-deadlock


def run_within(seconds: float, work: Any) -> Any:
    """`work()` on another thread, which must finish within `seconds` (a deadlock fails the test instead of
    hanging it); its exception is raised here."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "deadlocked"
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def test_saving_what_the_codec_itself_iterates(tmp_path: Path, options: dict[str, Any]) -> None:
    codec = ConversationCodec(tmp_path / "c.jsonl", **options)
    codec.save([message(i) for i in range(10)])
    run_within(30, lambda: codec.save(m for m in codec if m["i"] % 2 == 0))
    assert codec.load() == [message(i) for i in range(0, 10, 2)]


def test_a_redact_that_reads_the_codec(tmp_path: Path, options: dict[str, Any]) -> None:
    codec = ConversationCodec(tmp_path / "c.jsonl", **options)
    codec.save([message(0)])
    codec.redact = lambda m: {**m, "seen": len(codec)}
    run_within(30, lambda: codec.save([message(1), message(2)]))
    run_within(30, lambda: codec.append_turn(message(3)))
    assert [m["seen"] for m in codec.load()] == [1, 1, 2]


def test_a_redact_that_writes_the_file_being_written_raises(tmp_path: Path) -> None:
    codec = ConversationCodec(tmp_path / "c.jsonl")
    codec.save([message(0)])
    other = ConversationCodec(tmp_path / "c.jsonl")
    codec.redact = lambda m: other.append_turn(m) or m
    with pytest.raises(RuntimeError, match="already writes"):
        run_within(30, lambda: codec.save([message(1)]))


# ---------------------------------------------------------------------------------------------- [15] fork

FORK_CHILD = textwrap.dedent(
    """
    import json, os, sys, threading, time
    from conversation_codec import ConversationCodec
    path = sys.argv[1]
    codec = ConversationCodec(path)
    codec.save([{"i": 0}])
    locked = threading.Event()

    def slow():
        locked.set()
        time.sleep(1.0)
        yield {"i": 1}

    saver = threading.Thread(target=lambda: codec.save(slow()))
    saver.start()
    locked.wait()
    pid = os.fork()
    if pid == 0:
        ConversationCodec(path).append_turn({"child": 1})  # waits for the parent's save, then lands
        time.sleep(3.0)  # stays alive: its inherited descriptors must not hold the parent's lock
        os._exit(0)
    saver.join()
    start = time.monotonic()
    ConversationCodec(path).append_turn({"parent": 1})
    waited = time.monotonic() - start
    for _ in range(200):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        sys.exit("the child never finished its append")
    print(json.dumps([waited, status, ConversationCodec(path).load()]))
    """
)


def test_a_child_forked_during_a_save_neither_hangs_nor_holds_the_lock(tmp_path: Path) -> None:
    # Its own session: if anything hangs, the whole process group (the forked child too) is killed.
    script = subprocess.Popen(
        [sys.executable, "-c", FORK_CHILD, str(tmp_path / "c.jsonl")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = script.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(script.pid, signal.SIGKILL)
        script.communicate()
        pytest.fail("the parent or its forked child hung")
    assert script.returncode == 0, stderr
    waited, status, loaded = json.loads(stdout)
    assert waited < 1.0  # the parent's append did not wait for the child to exit
    assert status == 0
    assert loaded[0] == {"i": 1}
    assert sorted(loaded[1:], key=json.dumps) == [{"child": 1}, {"parent": 1}]


# ------------------------------------------------------------------------------ [16] reads of any length


def test_reads_are_looped_until_complete(tmp_path: Path, options: dict[str, Any], monkeypatch) -> None:
    # One pread returns at most 2 GiB - 4 KiB on Linux: every read must loop. Short reads, simulated here at a
    # few bytes, stand for it.
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, **options)
    codec.save([message(i) for i in range(2000)])
    codec.append_turn(message(2000))
    real_pread = os.pread
    monkeypatch.setattr(files_module, "_MAX_READ", 1000)
    monkeypatch.setattr(os, "pread", lambda fd, n, offset: real_pread(fd, min(n, 777), offset))
    fresh = ConversationCodec(path, **options)
    assert fresh.load() == [message(i) for i in range(2001)]
    assert len(fresh) == 2001
    assert fresh.load(last=3) == [message(i) for i in range(1998, 2001)]


# -------------------------------------------------------------------------------- [17] odd starts of a file


@pytest.mark.parametrize("blank", [100, 5 << 20])
def test_a_file_that_starts_with_blank_lines(tmp_path: Path, blank: int) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\n" * blank + b'{"a": 1}\n[2]\n')
    codec = ConversationCodec(path)
    assert (codec.load(), len(codec), codec.load(last=1)) == ([{"a": 1}, [2]], 2, [[2]])
    with pytest.raises(UnencryptedFileError):
        ConversationCodec(path, fernet_key=KEY).append_turn({"b": 3})


def test_a_byte_order_mark_line_is_no_message(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'\xef\xbb\xbf\n{"a": 1}\n[2]\n')
    codec = ConversationCodec(path)
    assert (codec.load(), len(codec)) == ([{"a": 1}, [2]], 2)


@pytest.mark.parametrize("data", [b"garbage\n", b"\x1f\x8bnot gzip at all\n", b"g" * 200 + b"\n"])
def test_every_error_for_unreadable_data_is_a_value_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(data)
    for view in (ConversationCodec(path).load, ConversationCodec(path).__len__):
        with pytest.raises(ValueError):
            view()


def test_a_gzip_file_cut_to_one_byte_is_not_silently_empty(tmp_path: Path) -> None:
    path = tmp_path / "c.gz"
    ConversationCodec(path, compressed=True).save([message(0)])
    os.truncate(path, 1)
    with pytest.warns(TornTailWarning, match="from byte 0"):
        assert ConversationCodec(path, compressed=True).load() == []
    ConversationCodec(path, compressed=True).save([message(1)])
    assert (tmp_path / "c.gz.torn-0").read_bytes() == b"\x1f"  # kept, not deleted


# ------------------------------------------------------------------------------------ [18] any file name


def test_a_path_that_is_not_utf8(tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / os.fsdecode(b"caf\xe9.jsonl")
    codec = ConversationCodec(path, **options)
    codec.save([message(0)])
    codec.append_turn(message(1))
    assert (codec.load(), len(codec), list(codec)) == ([message(0), message(1)], 2, [message(0), message(1)])


def test_an_error_names_a_path_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / os.fsdecode(b"caf\xe9.jsonl")
    Path(path).write_bytes(b'{"a": 1}\n{oops}\n[3]\n')
    with pytest.raises(CodecError) as info:
        ConversationCodec(path).load()
    assert os.fsdecode(b"caf\xe9") in str(info.value)


# ----------------------------------------------------------------------------------- [19] nothing overwritten


def test_torn_tails_at_the_same_offset_are_both_kept(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path)
    codec.append_turn(message(0))
    size = path.stat().st_size
    for tail in (b'{"first": "tor', b'{"second": "to'):
        with open(path, "ab") as f:
            f.write(tail)
        codec.append_turn(message(1))
        os.truncate(path, size)  # as if that append was lost again
        codec = ConversationCodec(path)
    assert sorted(p.read_bytes() for p in side_files(tmp_path)) == [b'{"first": "tor', b'{"second": "to']


def slow(started: threading.Event, seconds: float, *messages: Any) -> Any:
    """Messages for a save that is slow to produce them: `started` is set once the save has begun (and holds
    the lock)."""
    started.set()
    time.sleep(seconds)
    yield from messages


def test_an_append_during_the_first_save_lands_after_it(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    started = threading.Event()
    saver = threading.Thread(target=lambda: ConversationCodec(path).save(slow(started, 0.5, message(0))))
    saver.start()
    started.wait()
    time.sleep(0.05)
    ConversationCodec(path).append_turn(message(1))  # waits for the save, then lands after it
    saver.join()
    assert ConversationCodec(path).load() == [message(0), message(1)]


def test_readers_do_not_wait_for_a_save(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path).save([message(0)])
    started = threading.Event()
    saver = threading.Thread(target=lambda: ConversationCodec(path).save(slow(started, 2.0, message(1))))
    saver.start()
    started.wait()
    t0 = time.monotonic()
    assert ConversationCodec(path).load() == [message(0)]  # the old conversation, at once
    assert len(ConversationCodec(path)) == 1
    assert time.monotonic() - t0 < 1.0
    saver.join()
    assert ConversationCodec(path).load() == [message(1)]


def test_a_dead_saves_temporary_file_is_replaced_by_the_next_save(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path).save([message(0)])
    (tmp_path / ".c.jsonl.tmp").write_bytes(b"left by a save that was killed")
    ConversationCodec(path).save([message(1)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


# ------------------------------------------------------------------------- [21] len() is len(load())


def test_len_of_a_damaged_plain_file_raises_as_load_does(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": oops}\n[3]\n')
    with pytest.raises(CodecError):
        ConversationCodec(path).load()
    with pytest.raises(CodecError):
        len(ConversationCodec(path))


def test_len_under_a_wrong_key_raises_even_with_an_index(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, fernet_key=KEY)
    codec.save([message(i) for i in range(3000)])
    codec.append_turn(message(3000))
    assert idx(path).exists()
    with pytest.raises(DecryptionError):
        len(ConversationCodec(path, fernet_key=Fernet.generate_key()))


def test_the_index_names_the_device_and_inode(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path).save([message(i) for i in range(3000)])
    header = idx(path).read_bytes()[:32]
    st = path.stat()
    assert int.from_bytes(header[8:16], "little") == st.st_ino
    assert int.from_bytes(header[16:24], "little") == st.st_dev


def test_a_symlinked_path_is_followed_by_every_write(tmp_path: Path, options: dict[str, Any]) -> None:
    real = tmp_path / "real" / "c.jsonl"
    real.parent.mkdir()
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    codec = ConversationCodec(link, **options)
    codec.save([message(0)])
    assert link.is_symlink() and real.is_file()  # the link stays, the file it names is replaced
    codec.append_turn(message(1))
    codec.save([*codec.load(), message(2)])
    assert link.is_symlink()
    assert ConversationCodec(real, **options).load() == [message(0), message(1), message(2)]
    assert ConversationCodec(link, **options).load() == [message(0), message(1), message(2)]


def test_gzip_damage_early_in_a_file_without_index_is_not_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "c.gz"
    codec = ConversationCodec(path, compressed=True)
    for i in range(10):
        codec.append_turn(message(i))
    if idx(path).exists():
        idx(path).unlink()
    data = bytearray(path.read_bytes())
    data[40] ^= 0x10  # inside the first member's deflate data
    path.write_bytes(bytes(data))
    codec = ConversationCodec(path, compressed=True)
    codec.append_turn(message(10))  # nothing set aside: the damage is not at the end
    assert side_files(tmp_path) == []
    assert path.read_bytes()[: len(data)] == bytes(data)
    with pytest.raises(CorruptFileError):
        codec.load()
    data[5] ^= 0x01  # now in the first member's header too: a writer refuses to go on
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError):
        ConversationCodec(path, compressed=True).append_turn(message(11))
    assert side_files(tmp_path) == []


# ------------------------------------------------------------------ [12] gzip counts are never trusted unchecked


def test_a_flipped_bit_in_a_gzip_members_count_is_an_error_never_a_wrong_answer(tmp_path: Path) -> None:
    path = tmp_path / "c.gz"
    codec = ConversationCodec(path, compressed=True)
    codec.append_turn([message(0), message(1)])
    first = path.stat().st_size
    codec.append_turn([message(2), message(3)])
    whole = path.read_bytes()
    for bit in range(32):  # the message count field of the second member: bytes 20-23 of its header
        data = bytearray(whole)
        data[first + 20 + bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(data))
        fresh = ConversationCodec(path, compressed=True)
        for view, right in ((len, 4), (lambda codec: codec.load(last=3), [message(1), message(2), message(3)])):
            try:
                assert view(fresh) == right, bit
            except CorruptFileError as exc:
                assert exc.offset == first, bit


def test_iterating_an_original_token_longer_than_a_read_block(tmp_path: Path, monkeypatch) -> None:
    # The original design's one-token file (no line break) spans several read blocks. A block of 64m + 12
    # base64 characters has the length of a whole token: it must not be taken for one.
    path = tmp_path / "c.jsonl"
    messages = [{"i": i, "pad": "x" * 200} for i in range(30000)]
    jsonl = b"".join(json.dumps(m).encode() + b"\n" for m in messages)
    path.write_bytes(Fernet(KEY).encrypt(jsonl))
    monkeypatch.setattr(storage_module, "_READ_BLOCK", 64 * 65536 + 12)
    assert list(ConversationCodec(path, fernet_key=KEY)) == messages


def test_an_append_through_a_link_to_a_file_yet_to_be_made(tmp_path: Path) -> None:
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "sub" / "real.jsonl")
    run_within(30, lambda: ConversationCodec(link).append_turn(message(0)))
    assert link.is_symlink()
    assert ConversationCodec(tmp_path / "sub" / "real.jsonl").load() == [message(0)]


# ---------------------------------------------------------------------------- concurrency, end to end

# Appenders (turns of two messages), a saver that rewrites the conversation, and readers using every view, in
# processes of their own. Readers must never raise, warn or see half a turn; every turn appended after the last save
# must be there, in order. (A save of what was loaded earlier replaces turns appended in between: by design.)
STRESS = """
import json, os, sys, time, warnings, multiprocessing as mp, tempfile
from conversation_codec import ConversationCodec, TornTailWarning
from cryptography.fernet import Fernet
KEY = b"J0mTqgTnTEm3CzC3aDQTR4E7q-rr4ad9q_gNcMiyEQY="
FMT = {"plain": {}, "gzip": {"compressed": True}, "fernet": {"fernet_key": KEY}}
def appender(path, opts, wid, n, saver_done):
    c = ConversationCodec(path, durable=False, **opts)
    for i in range(n):
        if i == 100:
            saver_done.wait()
        c.append_turn([{"w": wid, "i": i, "k": 0, "pad": "x" * (i % 300)}, {"w": wid, "i": i, "k": 1}])
def reader(path, opts, stop, out):
    c = ConversationCodec(path, **opts)
    errors = warns = reads = 0
    while not stop.is_set():
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            try:
                m = c.load(); n = len(c); t = c.load(last=3); it = sum(1 for _ in c)
                reads += 1
                # every turn whole: pairs
                seen = {}
                for x in m:
                    if "w" in x: seen.setdefault((x["w"], x["i"]), []).append(x["k"])
                bad = [k for k, v in seen.items() if sorted(v) != [0, 1]]
                if bad: errors += 1; print("PARTIAL TURN", bad[:3], flush=True)
            except Exception as e:
                errors += 1; print("ERR", type(e).__name__, e, flush=True)
            warns += sum(issubclass(x.category, TornTailWarning) for x in w)
    out.put((reads, errors, warns))
def saver(path, opts, n, done):
    c = ConversationCodec(path, durable=False, **opts)
    for i in range(n):
        m = c.load()
        c.save(m)  # rewrite the same conversation (appends between the load and the save are replaced: by design)
        time.sleep(0.01)
    done.set()
if __name__ == "__main__":
    mp = mp.get_context("fork")  # 3.14's default, forkserver, cannot import this script's functions
    for fmt, opts in [(sys.argv[1], FMT[sys.argv[1]])]:
        d = tempfile.mkdtemp(); path = os.path.join(d, "c.jsonl")
        ConversationCodec(path, **opts).save([{"seed": 1}])
        stop = mp.Event(); out = mp.Queue()
        rs = [mp.Process(target=reader, args=(path, opts, stop, out)) for _ in range(2)]
        saver_done = mp.Event()
        ws = [mp.Process(target=appender, args=(path, opts, w, 160, saver_done)) for w in range(3)]
        sv = mp.Process(target=saver, args=(path, opts, 10, saver_done))
        for p in rs + ws + [sv]: p.start()
        for p in ws + [sv]: p.join()
        stop.set()
        res = [out.get() for _ in rs]
        for p in rs: p.join()
        final = ConversationCodec(path, **opts).load()
        pairs = {}
        for x in final:
            if "w" in x: pairs.setdefault((x["w"], x["i"]), []).append(x["k"])
        ok = all(sorted(v) == [0, 1] for v in pairs.values())
        # after the saver's last save, each appender's later turns must all be there, in order
        for w in range(3):
            got = [i for (ww, i) in pairs if ww == w]
            assert got == sorted(got), "order"
            assert [i for i in got if i >= 100] == list(range(100, 160)), ("turns after the last save missing", w)
        ok = ok and all(len(v) == 2 for v in pairs.values())
        print(json.dumps({"readers": res, "ok": ok}), flush=True)
"""


@pytest.mark.parametrize("fmt", ["plain", "gzip", "fernet"])
def test_appenders_a_saver_and_readers_at_once(fmt: str) -> None:
    out = subprocess.run([sys.executable, "-c", STRESS, fmt], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["ok"]
    assert all(errors == 0 and warned == 0 and reads > 0 for reads, errors, warned in report["readers"]), report


@pytest.mark.parametrize("what", ["a link to nothing", "a file"])
def test_a_parent_folder_that_cannot_be_made_raises_instead_of_looping(tmp_path: Path, what: str) -> None:
    # A dangling link where a parent folder belongs made WriterLock retry mkdir and open forever.
    parent = tmp_path / "parent"
    if what == "a file":
        parent.write_bytes(b"")
    else:
        parent.symlink_to(tmp_path / "nowhere")
    codec = ConversationCodec(parent / "c.jsonl")
    with pytest.raises(NotADirectoryError) as info:
        codec.append_turn({"a": 1})
    assert info.value.filename in (str(parent), str(parent / "c.jsonl"))
    with pytest.raises(NotADirectoryError):
        codec.save([{"a": 1}])
    assert not (tmp_path / "nowhere").exists()


# ---- only regular files: never a device, a pipe or a socket ------------------------------------------------------


class Hung(BaseException):
    """Raised in a call that waited for ever: not an OSError (TimeoutError is one), which the code may catch."""


@pytest.fixture
def no_hang() -> Any:
    """Turns a call that would wait for ever (opening a pipe with no other end) into `Hung`."""

    def expire(*_: object) -> None:
        raise Hung("the call waited for ever")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@contextmanager
def _node(path: Path, kind: str) -> Iterator[None]:
    """A pipe, a socket or a character device like /dev/null at `path`, for the time of the block."""
    if kind == "pipe":
        os.mkfifo(path, 0o600)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(path))
            yield
        return
    else:
        try:
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
        except PermissionError:
            # Only a device needs the privilege; the pipe and the socket run the same check (the opened file's
            # type) everywhere, and CI, which runs as root, runs this case too.
            pytest.skip("making a device needs CAP_MKNOD (CI runs as root)")
    yield


@pytest.mark.parametrize("kind", ["pipe", "socket", "character device"])
def test_a_conversation_is_never_read_from_or_written_over_anything_but_a_regular_file(
    tmp_path: Path, kind: str, no_hang: None
) -> None:
    """`ConversationCodec("/dev/null").save(...)` replaced /dev/null with a file (as root), and a pipe read as an
    empty conversation, or waited for ever for a writer. Every call now refuses, naming the path, and the node
    stays what it was."""
    path = tmp_path / "conversation.jsonl"
    with _node(path, kind):
        _refused_by_every_call(path, tmp_path)


def _refused_by_every_call(path: Path, tmp_path: Path) -> None:
    mode = os.lstat(path).st_mode
    codec = ConversationCodec(path)
    calls = {
        "load": codec.load,
        "load(last)": lambda: codec.load(last=2, whole_turns=True),
        "len": lambda: len(codec),
        "iter_turns": lambda: list(codec.iter_turns()),
        "verify": codec.verify,
        "save": lambda: codec.save([message(0)]),
        "save_turns": lambda: codec.save_turns([[message(0)]]),
        "append_turn": lambda: codec.append_turn(message(0)),
        "pop": codec.pop,
        "pop_turn": codec.pop_turn,
        "repair": codec.repair,
        "fork": lambda: codec.fork(tmp_path / "fork.jsonl"),
    }
    for name, call in calls.items():
        with pytest.raises(
            OSError, match=r"not a regular file \(a .*\): a conversation is kept in a regular file"
        ) as e:
            call()
        assert e.value.filename == str(path), name
    assert os.lstat(path).st_mode == mode
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_a_pipe_in_place_of_the_index_or_the_pop_log_never_makes_a_call_wait(tmp_path: Path, no_hang: None) -> None:
    path = tmp_path / "conversation.jsonl"
    codec = ConversationCodec(path, compressed=True)
    codec.save([message(i) for i in range(3)])
    codec.append_turn([message(3), message(4)])
    index = tmp_path / "conversation.jsonl.idx"
    index.unlink()
    os.mkfifo(index, 0o600)
    assert ConversationCodec(path).load(last=1, whole_turns=True) == [message(3), message(4)]  # read without it
    assert len(ConversationCodec(path)) == 5
    codec = ConversationCodec(path, compressed=True)
    codec.append_turn(message(5))  # the writer replaces it with an index of its own
    assert index.is_file() and codec.verify().index == "sound"
    os.mkfifo(tmp_path / "conversation.jsonl.pop", 0o600)  # not a log this library wrote
    with pytest.raises(OSError, match="not a regular file") as raised:
        ConversationCodec(path, compressed=True).append_turn(message(6))
    assert raised.value.filename == str(path) + ".pop"
    assert ConversationCodec(path).load() == [message(i) for i in range(6)]
