"""The `conversation-codec` command: every subcommand across the four formats, its exit statuses, its one-line
errors, its key handling (never printed), with and without rich. Most runs call `cli.main()` in-process (fast);
the entry points, a missing rich, a closed pipe and a terminal run the real command in a subprocess."""

from __future__ import annotations

import base64
import ctypes
import json
import os
import pty
import stat
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from _helpers import FORMATS, KEY, assert_same, reference
from conversation_codec import ConversationCodec, DecryptionError, __version__, _core, cli
from cryptography.fernet import Fernet

COMMANDS = ["show", "stats", "verify", "repair", "convert"]
NO_RICH = "import sys; sys.modules['rich'] = None; from conversation_codec.cli import main; sys.exit(main())"


class Result(NamedTuple):
    status: int
    out: str
    err: str


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]) -> Any:
    """`run(*argv, key=..., new_key=...)`: `cli.main(argv)` in-process, with the keys in the environment."""
    monkeypatch.setenv("COLUMNS", "80")

    def run(*argv: object, key: bytes | None = None, new_key: bytes | None = None) -> Result:
        for name, value in ((cli.KEY_ENV, key), (cli.NEW_KEY_ENV, new_key)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value.decode())
        status = cli.main([str(a) for a in argv])
        out, err = capsysbinary.readouterr()
        return Result(status, out.decode(), err.decode())

    return run


@pytest.fixture(params=["rich", "no rich"])
def rich(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Runs a test with rich, then with rich made unimportable (the CLI then prints plain text)."""
    if request.param == "no rich":
        monkeypatch.setitem(sys.modules, "rich", None)
    return request.param == "rich"


def command(*argv: object, env: dict[str, str] | None = None, rich: bool = True, **kwargs: Any) -> Result:
    """The real command in a subprocess (`python -m conversation_codec`, or with rich unimportable)."""
    base = {k: v for k, v in os.environ.items() if k not in (cli.KEY_ENV, cli.NEW_KEY_ENV)}
    prefix = ["-m", "conversation_codec"] if rich else ["-c", NO_RICH]
    done = subprocess.run(
        [sys.executable, *prefix, *map(str, argv)],
        env={**base, "COLUMNS": "80", **(env or {})},
        capture_output=True,
        timeout=120,
        **kwargs,
    )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


def key_of(options: dict[str, Any]) -> bytes | None:
    return KEY if "fernet_key" in options else None


def one_error_line(result: Result, status: int) -> str:
    """The one line of a failure, once its status and shape are checked."""
    assert result.status == status, result
    assert result.err.startswith("conversation-codec: error: ") and result.err.count("\n") == 1, result.err
    assert "Traceback" not in result.err
    return result.err


def message(i: int) -> dict[str, Any]:
    return {"role": ("user", "assistant")[i % 2], "content": f"message {i} " + "lorem ipsum " * (i % 7)}


# ==================================================================================================== show


def test_show_sets_roles_apart_and_shows_tool_calls(
    run: Any, rich: bool, tmp_path: Path, options: dict[str, Any], conversation: list[Any]
) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path, **options).save(conversation)
    result = run("show", path, key=key_of(options))
    assert (result.status, result.err) == (0, "")
    out = result.out
    assert out.startswith("[1] system\n  You are a helpful assistant.")
    assert "\n[3] assistant\n  tool call get_weather (call_9pQx2)\n" in out
    assert '    {"city": "Z\\u00fcrich", "unit": "celsius"}\n' in out  # the arguments, as the model wrote them
    assert "\n[4] tool (call_9pQx2)\n" in out
    assert "  Il neige à Zürich, -3.5 °C.\n  Prenez un manteau.\n" in out  # line breaks of the content kept
    assert "  tool call describe (toolu_01A)\n" in out  # Anthropic tool_use
    assert "  thinking\n    The user sent an image; describe it.\n" in out
    assert "  tool result (toolu_01A)\n    a cat\n" in out
    assert "  tool result (toolu_01B) error\n" in out
    assert '"data": "iVBORw0KGgo="' in out  # an image block: shown as JSON
    assert "\x1b" not in out  # no colours into a file or a pipe
    assert out.count("\n\n[") == len(conversation) - 1  # one blank line between messages


def test_show_json_is_the_conversation_as_jsonl(
    run: Any, tmp_path: Path, options: dict[str, Any], conversation: list[Any]
) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path, **options).save(conversation)
    result = run("show", "--json", path, key=key_of(options))
    assert result.status == 0
    assert_same([json.loads(line) for line in result.out.splitlines()], reference(conversation))
    last = run("show", "--json", "--last", 2, path, key=key_of(options))
    assert_same([json.loads(line) for line in last.out.splitlines()], reference(conversation[-2:]))


def test_show_last_numbers_messages_from_the_start(run: Any, tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path).save([message(i) for i in range(10)])
    out = run("show", "--last", 2, path).out
    assert out.startswith("[9] user\n  message 8") and "\n\n[10] assistant\n  message 9" in out
    assert out.count("[") == 2
    assert run("show", "--last", 0, path) == (0, "", "")
    assert run("show", "--last", 50, path).out.count("\n\n[") == 9


def test_show_knows_the_usual_message_shapes(run: Any, rich: bool, tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path).save(
        [
            # OpenAI Responses / Agents SDK items
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "find cats"}]},
            {"type": "function_call", "name": "search", "arguments": '{"q":"cats"}', "call_id": "fc_1"},
            {"type": "function_call_output", "call_id": "fc_1", "output": "3 cats found"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "count them"}]},
            # LangChain message_to_dict
            {"type": "human", "data": {"content": "hi from langchain", "type": "human"}},
            {"type": "ai", "data": {"content": "", "tool_calls": [{"name": "calc", "args": {"x": 1}, "id": "t1"}]}},
            {"type": "tool", "data": {"content": "2", "tool_call_id": "t1"}},
            # anything else
            [1, {"a": None}],
            "a string",
            {"no": "role"},
            {"role": "assistant", "content": None},
        ]
    )
    out = run("show", path).out
    expected = [
        "[1] user\n  find cats\n",
        '[2] assistant\n  tool call search (fc_1)\n    {"q":"cats"}\n',
        "[3] tool (fc_1)\n  3 cats found\n",
        "[4] assistant\n  reasoning\n    count them\n",
        "[5] user\n  hi from langchain\n",
        '[6] assistant\n  tool call calc (t1)\n    {"x": 1}\n',
        "[7] tool (t1)\n  2\n",
        '[8] json\n  [\n    1,\n    {\n      "a": null\n    }\n  ]\n',
        '[9] json\n  "a string"\n',
        '[10] json\n  {\n    "no": "role"\n  }\n',
        "[11] assistant\n  (empty)\n",
    ]
    assert out == "\n".join(expected)


def test_show_wraps_long_content_to_the_terminal(run: Any, rich: bool, tmp_path: Path, monkeypatch: Any) -> None:
    path = tmp_path / "c.jsonl"
    words = " ".join(f"word{i}" for i in range(60))
    ConversationCodec(path).save([{"role": "user", "content": words}])
    monkeypatch.setenv("COLUMNS", "40")
    lines = run("show", path).out.splitlines()
    assert len(lines) > 10 and all(len(line) <= 40 for line in lines)
    assert all(line.startswith("  word") for line in lines[1:])
    assert " ".join(" ".join(lines[1:]).split()) == words  # nothing lost, in order


def test_show_neutralises_terminal_control_characters(run: Any, rich: bool, tmp_path: Path) -> None:
    """A message that holds an escape sequence cannot drive the terminal (clear it, retitle it, hide text)."""
    path = tmp_path / "c.jsonl"
    ConversationCodec(path).save([{"role": "user\x07", "content": "a\x1b[2Jb\rc\x9bd\ud800e\tf"}])
    result = run("show", path)
    assert result.status == 0
    assert "\x1b" not in result.out and "\r" not in result.out and "\x9b" not in result.out
    assert "a\\x1b[2Jb\\x0dc\\x9bd\\ud800e" in result.out  # shown, escaped; a lone surrogate too
    assert "[1] user\\x07" in result.out


def test_show_a_torn_tail_is_one_warning_line(run: Any, tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, **options)
    codec.save([message(0)])
    codec.append_turn([message(1), message(2)])
    os.truncate(path, path.stat().st_size - 3)
    for argv in (["show", path], ["show", "--last", 1, path], ["show", "--json", path]):
        result = run(*argv, key=key_of(options))
        assert result.status == 0
        assert result.err.startswith("conversation-codec: warning: ") and result.err.count("\n") == 1, result.err
        assert "did not complete" in result.err
        assert "message 2" not in result.out and "message 0" in result.out


# ==================================================================================================== stats


def stats_rows(out: str) -> dict[str, str]:
    rows = [line.split("  ", 1) for line in out.splitlines()]
    return {label: value.strip() for label, value in rows}


def test_stats_of_each_format(run: Any, rich: bool, tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / "c.jsonl"
    messages = [message(i) for i in range(30000)]  # several frames (of 128 KiB, 1 MiB gzip), and an index
    ConversationCodec(path, **options).save(messages)
    jsonl = len(b"".join(json.dumps(m, separators=(",", ":")).encode() + b"\n" for m in messages))
    result = run("stats", path, key=key_of(options))
    assert (result.status, result.err) == (0, "")
    rows = stats_rows(result.out)
    name = {(): "plain", ("compressed",): "gzip", ("fernet_key",): "fernet"}.get(tuple(sorted(options)), "gzip+fernet")
    on_disk = path.stat().st_size
    assert rows["file"] == str(path)
    assert rows["format"] == name
    assert rows["messages"] == rows["turns"] == "30000"  # each message of a save is a turn of its own
    index = Path(f"{path}.idx").stat().st_size  # a header, then one record per frame
    assert int(rows["frames"]) == (index - _core.INDEX_HEADER_LEN) // _core.INDEX_RECORD_LEN > 1
    assert rows["bytes on disk"].split()[0] == str(on_disk)
    assert rows["bytes uncompressed"].split()[0] == str(jsonl)
    assert rows["compression ratio"] == f"{jsonl / on_disk:.2f}"
    assert (rows["index"], rows["state"]) == ("sound", "sound")
    assert list(rows) == [
        "file",
        "format",
        "messages",
        "turns",
        "frames",
        "bytes on disk",
        "bytes uncompressed",
        "compression ratio",
        "index",
        "state",
    ]


def test_stats_of_a_torn_tail_and_of_damage(run: Any, tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, compressed=True)
    codec.save([message(0)])
    for i in range(1, 4):
        codec.append_turn(message(i))
    os.truncate(path, path.stat().st_size - 3)
    rows = stats_rows(run("stats", path).out)
    assert rows["messages"] == "3" and rows["state"].startswith("a torn tail: the last ")
    data = bytearray(path.read_bytes())
    data[40] ^= 0x10  # inside the first member's deflate data
    path.write_bytes(bytes(data))
    error = one_error_line(run("stats", path), 4)
    assert error.startswith(f"conversation-codec: error: {path}: ") and "(at byte 0): 1 problem;" in error


def test_stats_of_an_encrypted_file_with_gzip_frames_and_others(run: Any, tmp_path: Path) -> None:
    """Appends with other options mix frames inside an encrypted file: stats says how many are gzip, and convert
    writes it compressed, as its first frame is."""
    path = tmp_path / "c.jsonl"
    ConversationCodec(path, fernet_key=KEY, compressed=True).save([message(0)])
    ConversationCodec(path, fernet_key=KEY).append_turn(message(1))
    ConversationCodec(path, fernet_key=KEY, compressed=True).append_turn(message(2))
    assert stats_rows(run("stats", path, key=KEY).out)["format"] == "fernet (2 of 3 frames gzip)"
    converted = tmp_path / "d.jsonl"
    assert run("convert", path, converted, key=KEY).status == 0
    assert stats_rows(run("stats", converted, key=KEY).out)["format"] == "gzip+fernet"


def test_stats_of_an_empty_file(run: Any, tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"")
    rows = stats_rows(run("stats", path).out)
    assert (rows["format"], rows["messages"], rows["frames"], rows["compression ratio"]) == ("empty", "0", "0", "-")


# ==================================================================================================== verify, repair


def test_verify_and_repair_a_sound_file(run: Any, tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path, **options).save([message(i) for i in range(5)])
    before = path.read_bytes()
    for name in ("verify", "repair"):
        result = run(name, path, key=key_of(options))
        assert result == (0, f"{path}: sound (5 messages; index none)\n", "")
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["c.jsonl"]


def test_a_torn_tail_fails_verify_until_repaired(run: Any, tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, **options)
    codec.save([message(0)])
    start = path.stat().st_size
    codec.append_turn([message(1), message(2)])
    os.truncate(path, path.stat().st_size - 3)
    result = run("verify", path, key=key_of(options))
    assert result.status == 1 and result.out.startswith(f"{path}: not sound\n  torn tail: the last ")
    result = run("repair", path, key=key_of(options))
    assert result.status == 0, result
    assert f"  kept {path}.torn-{start}\n" in result.out
    assert result.out.endswith(f"{path}: sound (1 message; index none)\n")
    assert run("verify", path, key=key_of(options)).status == 0


def test_damage_fails_verify_and_repair_keeps_every_intact_frame(
    run: Any, tmp_path: Path, options: dict[str, Any]
) -> None:
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, **options)
    starts = []
    for i in range(4):
        starts.append(path.stat().st_size if path.exists() else 0)
        codec.append_turn([message(2 * i), message(2 * i + 1)])
    data = bytearray(path.read_bytes())
    data[starts[1] + (1 if not options else 30)] ^= 0x04
    path.write_bytes(bytes(data))
    result = run("verify", path, key=key_of(options))
    assert result.status == 1 and result.out.startswith(f"{path}: not sound\n  damage: ")
    [(offset, _)] = ConversationCodec(path, **options).verify().errors
    assert starts[1] <= offset < starts[2] and f"byte {offset}" in result.out
    result = run("repair", path, key=key_of(options))
    assert result.status == 0 and f"  kept {path}.damaged\n" in result.out
    assert Path(f"{path}.damaged").read_bytes() == bytes(data)
    assert codec.load() == [message(i) for i in (0, 1, 4, 5, 6, 7)]
    assert ConversationCodec(path, **options).verify().ok


def test_repair_keeps_an_encrypted_file_compressed(run: Any, tmp_path: Path) -> None:
    """The rewrite of a damaged gzip+fernet file is gzip+fernet again, not plain inside the tokens."""
    path = tmp_path / "c.jsonl"
    codec = ConversationCodec(path, fernet_key=KEY, compressed=True)
    for i in range(3):
        codec.append_turn(message(i))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[2])  # a frame dropped: damage
    assert run("repair", path, key=KEY).status == 0
    assert stats_rows(run("stats", path, key=KEY).out)["format"] == "gzip+fernet"


def test_verify_wrong_key_missing_key_missing_file(run: Any, tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path, fernet_key=KEY).save([message(0)])
    for name in ("show", "stats", "verify", "repair"):
        assert "wrong key" in one_error_line(run(name, path, key=Fernet.generate_key()), 3)
        assert "is encrypted: give the key in CONVERSATION_CODEC_KEY" in one_error_line(run(name, path), 3)
        error = one_error_line(run(name, tmp_path / "none.jsonl"), 5)
        assert error == f"conversation-codec: error: {tmp_path / 'none.jsonl'}: No such file or directory\n"
        assert "Is a directory" in one_error_line(run(name, tmp_path), 5)


# ==================================================================================================== convert

FLAGS = {
    "plain": ["--decompress", "--decrypt"],
    "gzip": ["--compress", "--decrypt"],
    "fernet": ["--decompress", "--encrypt"],
    "gzip+fernet": ["--compress", "--encrypt"],
}


@pytest.mark.parametrize("src_format", sorted(FORMATS))
@pytest.mark.parametrize("dst_format", sorted(FORMATS))
def test_convert_between_every_pair_of_formats(
    run: Any, tmp_path: Path, src_format: str, dst_format: str, conversation: list[Any]
) -> None:
    src, dst = tmp_path / "src.jsonl", tmp_path / "out" / "dst.jsonl"
    messages = conversation + [message(i) for i in range(2000)]
    source = ConversationCodec(src, **FORMATS[src_format])
    source.save(messages)
    turns = [[message(-1), message(-2)], [message(-3)], [message(-4), message(-5), message(-6)]]
    for turn in turns:
        source.append_turn(turn)
    messages += [m for turn in turns for m in turn]
    result = run("convert", src, dst, *FLAGS[dst_format], key=KEY)
    assert result == (0, f"{src} -> {dst}: {len(messages)} messages, {dst_format}\n", "")
    rows = stats_rows(run("stats", dst, key=KEY).out)
    assert rows["format"] == dst_format
    assert rows["turns"] == str(len(messages) - 3)  # the turns of 2 and 3 messages are kept whole
    target = ConversationCodec(dst, **FORMATS[dst_format])
    assert_same(target.load(), reference(messages))
    assert list(target.iter_turns())[-3:] == turns
    assert target.load(last=2, whole_turns=True) == turns[-1]
    # without a flag, DST keeps SRC's format
    same = tmp_path / "same.jsonl"
    assert run("convert", src, same, key=KEY).status == 0
    assert stats_rows(run("stats", same, key=KEY).out)["format"] == src_format


def test_convert_rekey(run: Any, tmp_path: Path) -> None:
    src, dst = tmp_path / "src.jsonl", tmp_path / "dst.jsonl"
    ConversationCodec(src, fernet_key=KEY, compressed=True).save([message(i) for i in range(5)])
    new = Fernet.generate_key()
    assert run("convert", "--rekey", src, dst, key=KEY, new_key=new).status == 0
    assert ConversationCodec(dst, fernet_key=new).load() == [message(i) for i in range(5)]
    with pytest.raises(DecryptionError):
        ConversationCodec(dst, fernet_key=KEY).load()
    assert "wrong key" in one_error_line(run("show", dst, key=KEY), 3)
    assert stats_rows(run("stats", dst, key=new).out)["format"] == "gzip+fernet"
    # the new key from a file; a plain file encrypted under it
    (tmp_path / "new.key").write_bytes(new + b"\n")
    plain = tmp_path / "plain.jsonl"
    ConversationCodec(plain).save([message(0)])
    assert run("convert", "--rekey", "--new-key-file", tmp_path / "new.key", plain, tmp_path / "p.jsonl").status == 0
    assert ConversationCodec(tmp_path / "p.jsonl", fernet_key=new).load() == [message(0)]


def test_convert_rekey_refusals(run: Any, tmp_path: Path) -> None:
    src, dst = tmp_path / "src.jsonl", tmp_path / "dst.jsonl"
    ConversationCodec(src, fernet_key=KEY).save([message(0)])
    assert "needs the new key" in one_error_line(run("convert", "--rekey", src, dst, key=KEY), 3)
    assert "one of the old keys" in one_error_line(run("convert", "--rekey", src, dst, key=KEY, new_key=KEY), 3)
    other = Fernet.generate_key()
    two = KEY + b"," + other  # the new key is the second old one: it would still open DST
    assert "one of the old keys" in one_error_line(run("convert", "--rekey", src, dst, key=two, new_key=other), 3)
    assert "--decrypt" in one_error_line(run("convert", "--rekey", "--decrypt", src, dst, key=KEY, new_key=other), 2)
    assert not dst.exists()


def test_convert_refuses_same_file_and_existing_destination(run: Any, tmp_path: Path) -> None:
    src, dst = tmp_path / "src.jsonl", tmp_path / "dst.jsonl"
    ConversationCodec(src).save([message(0)])
    assert "same file" in one_error_line(run("convert", src, src), 2)
    (tmp_path / "link.jsonl").symlink_to(src)
    assert "same file" in one_error_line(run("convert", src, tmp_path / "link.jsonl"), 2)
    ConversationCodec(dst).save([message(1)])
    assert "pass --force" in one_error_line(run("convert", src, dst), 5)
    assert ConversationCodec(dst).load() == [message(1)]
    assert run("convert", "--force", src, dst).status == 0
    assert ConversationCodec(dst).load() == [message(0)]


def test_convert_needs_keys(run: Any, tmp_path: Path) -> None:
    src, dst = tmp_path / "src.jsonl", tmp_path / "dst.jsonl"
    ConversationCodec(src).save([message(0)])
    assert "--encrypt needs a key" in one_error_line(run("convert", "--encrypt", src, dst), 3)
    ConversationCodec(tmp_path / "enc.jsonl", fernet_key=KEY).save([message(0)])
    assert "is encrypted" in one_error_line(run("convert", tmp_path / "enc.jsonl", dst), 3)
    assert "wrong key" in one_error_line(run("convert", tmp_path / "enc.jsonl", dst, key=Fernet.generate_key()), 3)
    assert not dst.exists()


def without_root_override() -> None:
    """In a child about to run the command as root: drop the capabilities that let root write anywhere (from the
    bounding set, so that the exec'd process does not get them back), so that permission bits apply to it."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_convert_into_a_read_only_folder(tmp_path: Path) -> None:
    src = tmp_path / "src.jsonl"
    ConversationCodec(src).save([message(0)])
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        preexec = without_root_override if os.geteuid() == 0 else None
        error = one_error_line(command("convert", src, folder / "dst.jsonl", preexec_fn=preexec), 5)
    finally:
        folder.chmod(0o700)
    assert error == f"conversation-codec: error: {folder / 'dst.jsonl'}: Permission denied\n"
    assert os.listdir(folder) == []


def test_convert_of_a_damaged_file_writes_nothing(run: Any, tmp_path: Path) -> None:
    """The damage is found half-way (the second frame): DST is not created, or an existing DST is unchanged."""
    src, dst = tmp_path / "src.jsonl", tmp_path / "dst.jsonl"
    codec = ConversationCodec(src, compressed=True)
    codec.save([message(i) for i in range(20000)])
    data = bytearray(src.read_bytes())
    second = data.index(b"\x1f\x8b\x08", 1)  # the second gzip member
    data[second + 40] ^= 0x10
    src.write_bytes(bytes(data))
    assert "corrupt deflate" in one_error_line(run("convert", src, dst), 4)
    assert not dst.exists() and sorted(os.listdir(tmp_path)) == ["src.jsonl", "src.jsonl.idx"]
    ConversationCodec(dst).save([message(0)])
    before = dst.read_bytes()
    assert run("convert", "--force", src, dst).status == 4
    assert dst.read_bytes() == before


def test_convert_streams_in_bounded_memory(run: Any, tmp_path: Path) -> None:
    """Messages go from SRC to DST a read block at a time (4 MiB of SRC): the Python heap peaks far below what the
    whole conversation takes as objects (about 120 MB here; a conversion takes about 35 MB, whatever the size)."""
    src, dst = tmp_path / "src.jsonl", tmp_path / "dst.jsonl"
    ConversationCodec(src).save({"role": "user", "content": f"message {i}", "i": i} for i in range(400_000))

    def peak_of(call: Any) -> int:
        tracemalloc.start()
        try:
            call()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    whole = peak_of(ConversationCodec(src).load)
    converted = peak_of(lambda: run("convert", "--compress", src, dst))
    assert len(ConversationCodec(dst)) == 400_000
    assert converted < whole / 3, (converted, whole)


def test_convert_progress_bar(run: Any, tmp_path: Path) -> None:
    src = tmp_path / "src.jsonl"
    ConversationCodec(src).save([message(i) for i in range(3000)])
    result = run("convert", "--progress", src, tmp_path / "a.jsonl")
    assert result.status == 0 and "src.jsonl" in result.err and "3000/3000 messages" in result.err
    assert run("convert", src, tmp_path / "b.jsonl").err == ""  # stderr is not a terminal: no bar by default
    assert run("convert", "--no-progress", src, tmp_path / "c.jsonl").err == ""


def test_convert_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """By default the bar is drawn when stderr is a terminal."""
    src = tmp_path / "src.jsonl"
    ConversationCodec(src).save([message(i) for i in range(3000)])
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "conversation_codec", "convert", str(src), str(tmp_path / "dst.jsonl")],
            stdout=subprocess.PIPE,
            stderr=terminal,
            env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
            timeout=120,
        )
        os.close(terminal)
        drawn = b""
        while True:
            try:
                chunk = os.read(controller, 1 << 16)
            except OSError:  # EIO: the other side is closed and drained
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(controller)
    assert done.returncode == 0
    assert b"3000/3000" in drawn and b"\x1b[" in drawn


# ==================================================================================================== keys


def test_key_file_and_several_keys(run: Any, tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path, fernet_key=KEY).save([message(0)])
    other = Fernet.generate_key()
    key_file = tmp_path / "keys"
    key_file.write_bytes(other + b"\n" + KEY + b"\n")  # one a line; the second opens the file
    assert run("show", "--key-file", key_file, path).status == 0
    assert run("show", path, key=other + b", " + KEY).status == 0
    # --key-file comes before the environment
    assert run("show", "--key-file", key_file, path, key=b"not a key").status == 0
    assert "wrong key" in one_error_line(run("show", path, key=other), 3)


def test_bad_keys_are_one_line_without_the_key(run: Any, tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path, fernet_key=KEY).save([message(0)])
    secret = b"s3cret-but-not-a-fernet-key"
    error = one_error_line(run("show", path, key=KEY + b"," + secret), 3)
    assert error.endswith(
        ": error: CONVERSATION_CODEC_KEY: key 2 of 2 is not a Fernet key (32 url-safe base64-encoded"
        " bytes, as Fernet.generate_key() gives)\n"
    )
    assert secret.decode() not in error
    (tmp_path / "empty").write_bytes(b"\n")
    assert "holds no key" in one_error_line(run("show", "--key-file", tmp_path / "empty", path), 3)
    error = one_error_line(run("show", "--key-file", tmp_path / "none", path), 3)
    assert "cannot read the key file" in error and "No such file" in error


def test_a_plain_file_is_read_whatever_the_key(run: Any, tmp_path: Path) -> None:
    """A key is read only for an encrypted file: a plain one is shown and converted with any key set, or none."""
    path = tmp_path / "c.jsonl"
    ConversationCodec(path).save([message(0)])
    assert run("show", path, key=KEY).status == 0
    assert run("show", path, key=b"not a key").status == 0
    assert run("convert", "--compress", path, tmp_path / "d.jsonl", key=b"not a key").status == 0


def test_the_key_is_never_printed(tmp_path: Path) -> None:
    """Every command, success and failure, with the key in the environment, in a key file, or typed by mistake on
    the command line: neither the key nor its raw bytes appear in stdout or stderr."""
    raw = base64.urlsafe_b64decode(KEY)
    enc, plain = tmp_path / "enc.jsonl", tmp_path / "plain.jsonl"
    ConversationCodec(enc, fernet_key=KEY).save([message(i) for i in range(3)])
    ConversationCodec(plain).save([message(0)])
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    env = {cli.KEY_ENV: KEY.decode()}
    new = {cli.NEW_KEY_ENV: Fernet.generate_key().decode()}
    runs = [
        command("show", enc, env=env),
        command("show", "--json", enc, env=env),
        command("stats", enc, env=env),
        command("verify", enc, env=env),
        command("repair", enc, env=env),
        command("convert", enc, tmp_path / "1.jsonl", env=env),
        command("convert", "--rekey", enc, tmp_path / "2.jsonl", env={**env, **new}),
        command("convert", "--decrypt", enc, tmp_path / "3.jsonl", "--key-file", key_file),
        command("convert", "--rekey", enc, tmp_path / "4.jsonl", env={**env, cli.NEW_KEY_ENV: KEY.decode()}),
        command("show", plain, env={cli.KEY_ENV: KEY.decode() + ",x"}),
        command("show", enc, "--key", KEY.decode()),
        command("show", enc, f"--key={KEY.decode()}"),
        command("show", enc, KEY.decode()),
        command("show", "--key-file", KEY.decode(), enc),
        command("--key", KEY.decode(), "show", enc),
    ]
    for result in runs:
        for stream in (result.out, result.err):
            assert KEY.decode() not in stream
            assert raw not in stream.encode("utf-8", "surrogateescape")
            assert base64.b64encode(raw).decode() not in stream and raw.hex() not in stream
    assert [r.status for r in runs] == [0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 2, 2, 2, 3, 2]


# ==================================================================================================== the command line


@pytest.mark.parametrize("name", COMMANDS)
def test_help_of_each_command(run: Any, name: str) -> None:
    result = run(name, "--help")
    assert result.status == 0 and result.err == ""
    assert result.out.startswith(f"usage: conversation-codec {name} ")
    assert "CONVERSATION_CODEC_KEY" in result.out and "exit status:" in result.out


def test_help_and_version(tmp_path: Path) -> None:
    result = command("--help")
    assert result.status == 0 and all(f"\n    {name} " in result.out for name in COMMANDS), result.out
    assert command("--version") == (0, f"conversation-codec {__version__}\n", "")
    script = Path(sys.executable).parent / "conversation-codec"  # the [project.scripts] entry point
    done = subprocess.run([script, "--version"], capture_output=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, f"conversation-codec {__version__}\n".encode())


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["show"],
        ["show", "a", "b"],
        ["show", "--last", "-1", "x"],
        ["show", "--lst", "1", "x"],  # no abbreviations: --k would be read as --key-file
        ["convert", "a"],
        ["convert", "--compress", "--decompress", "a", "b"],
        ["convert", "--encrypt", "--decrypt", "a", "b"],
    ],
)
def test_usage_errors_are_one_line(run: Any, argv: list[str]) -> None:
    assert "see `conversation-codec" in one_error_line(run(*argv), 2)


def test_without_rich_everything_works_in_plain_text(tmp_path: Path, conversation: list[Any]) -> None:
    """rich made unimportable in a real process: show, stats and convert print the same text; no bar."""
    path = tmp_path / "c.jsonl"
    ConversationCodec(path, fernet_key=KEY, compressed=True).save(conversation)
    env = {cli.KEY_ENV: KEY.decode()}
    for argv in (["show", path], ["stats", path], ["verify", path]):
        plain, fancy = command(*argv, env=env, rich=False), command(*argv, env=env)
        assert plain.status == 0 and plain.err == ""
        assert plain.out == fancy.out
    result = command("convert", "--progress", path, tmp_path / "d.jsonl", env=env, rich=False)
    assert result.status == 0 and result.err == ""
    assert "wrong key" in one_error_line(command("show", path, rich=False, env={cli.KEY_ENV: "x" * 43 + "="}), 3)


@pytest.mark.parametrize("argv", [["show"], ["show", "--json"]])
def test_a_closed_pipe_is_not_an_error(tmp_path: Path, argv: list[str]) -> None:
    """`show | head`: the reader goes away; the command stops with 141 (as a shell reports SIGPIPE), silently."""
    path = tmp_path / "c.jsonl"
    ConversationCodec(path).save([message(i) for i in range(20000)])
    process = subprocess.Popen(
        [sys.executable, "-m", "conversation_codec", *argv, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.read(100)
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=60) == 141
    assert err == b""


def test_python_dash_m_runs_the_command(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    ConversationCodec(path).save([message(0)])
    assert command("show", "--json", path).out == json.dumps(message(0), separators=(",", ":")) + "\n"


KEPT_IN = "a conversation is kept in a regular file"


def test_a_pipe_or_a_device_is_refused_never_read_as_empty_or_replaced(tmp_path: Path) -> None:
    """`show /dev/stdin` fed by a pipe printed nothing and succeeded (a pipe's size is 0), and `convert --force`
    onto /dev/null would have put a file in its place (as root). Both are one line and exit status 5."""
    src = tmp_path / "src.jsonl"
    ConversationCodec(src).save([message(0)])
    shown = command("show", "/dev/stdin", input=src.read_bytes())
    error = one_error_line(shown, 5)
    assert error == "conversation-codec: error: /dev/stdin: not a regular file (a pipe): " + KEPT_IN + "\n"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "not a regular file (a pipe)" in one_error_line(command("convert", src, fifo, "--force"), 5)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
