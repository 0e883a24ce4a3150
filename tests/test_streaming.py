"""Saves and loads that span several blocks: the writer thread, the reused read buffer, lines cut across blocks.

Small conversations fit in one block and take the simple paths; these tests make conversations of several
blocks (4 MiB each) so that the pipelined paths run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import tracemalloc

import pytest
from conversation_codec import ConversationCodec, DecodeError, EncodeError, _core

BLOCK = 4 << 20


def big_conversation(total_bytes: int = 3 * BLOCK + 12345) -> list[dict[str, object]]:
    """Messages of varied sizes and text, adding up to about `total_bytes` of JSONL."""
    messages: list[dict[str, object]] = []
    size = 0
    i = 0
    while size < total_bytes:
        content = f"turn {i}: " + ('lorem ipsum é 😀 "quoted"\n' * (1 + i % 300))
        msg = {"role": ("user", "assistant")[i % 2], "content": content, "n": i, "score": i / 7}
        messages.append(msg)
        size += len(json.dumps(msg, ensure_ascii=False, separators=(",", ":")).encode()) + 1
        i += 1
    return messages


@pytest.fixture(scope="module")
def big() -> list[dict[str, object]]:
    return big_conversation()


def test_chunks_hold_whole_lines_and_add_up_to_the_whole(big: list[dict[str, object]]) -> None:
    chunks = [bytes(c) for c in _core.encode_chunks(big, chunk_size=BLOCK)]
    assert len(chunks) >= 3
    assert all(c.endswith(b"\n") for c in chunks)
    assert all(len(c) >= BLOCK for c in chunks[:-1])
    assert b"".join(chunks) == bytes(_core.encode_lines(big))


def test_multi_block_plain_round_trip(tmp_path, big: list[dict[str, object]]) -> None:
    codec = ConversationCodec(tmp_path / "c.jsonl")
    codec.save(big)
    assert os.path.getsize(codec.path) > 3 * BLOCK
    assert codec.load() == big


def test_multi_block_save_from_a_generator(tmp_path, big: list[dict[str, object]]) -> None:
    codec = ConversationCodec(tmp_path / "c.jsonl", durable=False)
    codec.save(m for m in big)
    assert codec.load() == big


def test_multi_block_encrypted_round_trip(tmp_path, big: list[dict[str, object]]) -> None:
    # Regression: the encrypted load joined views of the one reused read buffer, so a file of more than one
    # block was read as garbage and raised DecryptionError.
    pytest.importorskip("cryptography")  # a listed test dependency; skipped only where it is not installed
    from cryptography.fernet import Fernet

    key = Fernet.generate_key()
    ConversationCodec(tmp_path / "c.jsonl", fernet_key=key).save(big)
    assert os.path.getsize(tmp_path / "c.jsonl") > 3 * BLOCK
    assert ConversationCodec(tmp_path / "c.jsonl", fernet_key=key).load() == big


def test_encode_error_late_in_a_multi_block_save_leaves_the_old_file(tmp_path, big) -> None:
    codec = ConversationCodec(tmp_path / "c.jsonl")
    codec.save([{"role": "user", "content": "the old conversation"}])
    before = codec.path.read_bytes()
    threads_before = threading.active_count()
    bad = [*big, {"role": "user", "content": b"bytes"}]
    with pytest.raises(EncodeError, match=rf'messages\[{len(big)}\]\["content"\]: bytes is not JSON serializable'):
        codec.save(bad)
    assert codec.path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".idx") == ["c.jsonl"]
    assert threading.active_count() == threads_before  # the writer thread ended


def test_write_failure_in_the_writer_thread_is_raised_and_the_old_file_kept(tmp_path) -> None:
    """A real write error: the file size limit (RLIMIT_FSIZE) hit by the writer thread, in a child process."""
    script = textwrap.dedent(
        f"""
        import errno, resource, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_streaming import big_conversation
        from conversation_codec import ConversationCodec
        codec = ConversationCodec({str(tmp_path / "c.jsonl")!r})
        codec.save([{{"role": "user", "content": "the old conversation"}}])
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, ({BLOCK * 2}, {BLOCK * 2}))
        try:
            codec.save(big_conversation())
        except OSError as exc:
            assert exc.errno == errno.EFBIG, exc
            print("EFBIG")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "EFBIG"
    assert ConversationCodec(tmp_path / "c.jsonl").load() == [{"role": "user", "content": "the old conversation"}]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".idx") == ["c.jsonl"]


SAMPLE = (
    b'\xef\xbb\xbf{"role":"user","content":"caf\xc3\xa9 \\n \\ud83d\\ude00"}\r\n'
    b"\n"
    b'  [1, 2.5, null, true, "\xe2\x82\xac"]  \r'
    b'"a string"\n'
    b"\x0c\n"
    b"12345678901234567890123\n"
    b'{"last": "no newline after me"}'
)


def test_decoder_fed_in_two_pieces_cut_anywhere_matches_one_piece() -> None:
    whole = _core.decode_lines(SAMPLE)
    assert len(whole) == 5
    for cut in range(len(SAMPLE) + 1):
        decoder = _core.LineDecoder()
        got = decoder.feed(SAMPLE[:cut]) + decoder.feed(memoryview(SAMPLE)[cut:]) + decoder.finish()
        assert got == whole, cut


def test_decoder_fed_byte_by_byte_matches_one_piece() -> None:
    decoder = _core.LineDecoder()
    got = [m for i in range(len(SAMPLE)) for m in decoder.feed(bytearray(SAMPLE[i : i + 1]))]
    assert got + decoder.finish() == _core.decode_lines(SAMPLE)


@pytest.mark.parametrize("cut", [0, 5, 17, 18, 19, 30])
def test_line_numbers_stay_right_across_pieces(cut: int) -> None:
    data = b'{"a": 1}\r\n\r\n{"b": 2}\n{"c": }\n'  # line 4 is bad
    decoder = _core.LineDecoder(source="conv.jsonl")
    with pytest.raises(DecodeError) as info:
        decoder.feed(data[:cut])
        decoder.feed(data[cut:])
        decoder.finish()
    assert (info.value.source, info.value.lineno, info.value.colno) == ("conv.jsonl", 4, 7)


def test_a_bad_line_after_the_first_block_names_its_line(tmp_path, big) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path).save(big)
    with open(path, "ab") as f:
        f.write(b'{"role": "user", "content": "truncated by a crash\n')
    with pytest.raises(DecodeError) as info:
        ConversationCodec(path).load()
    assert info.value.lineno == len(big) + 1
    assert str(path) in str(info.value)


def test_iterating_a_gzip_conversation_holds_one_frame_at_a_time(tmp_path) -> None:
    """A 4 MiB read block of gzip can inflate to a hundred times more: iteration decodes frame by frame."""
    codec = ConversationCodec(tmp_path / "c.jsonl", compressed=True)
    codec.save({"role": "user", "content": "hello world " * 20, "i": i} for i in range(300_000))
    assert (tmp_path / "c.jsonl").stat().st_size < (4 << 20)  # the whole file is one read block
    tracemalloc.start()
    try:
        count = sum(1 for _ in codec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 300_000
    assert peak < 16 << 20, f"iteration peaked at {peak >> 20} MiB"  # frames are 1 MiB of JSONL; all of it ~80 MiB
