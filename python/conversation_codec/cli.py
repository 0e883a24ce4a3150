"""The `conversation-codec` command: show, stats, verify, repair and convert conversation files (docs/CLI.md).

It drives the public `ConversationCodec`, and reads the storage layer's internals (FileStore, Framing) only to
describe a file: its kind, whether its frames are compressed, their JSONL size. Keys come from the environment or
a key file, never from the command line, and are never printed. Every failure is one line on stderr and an exit
status of its own (EXIT_CODES). The terminal output uses `rich` when it is installed (the `cli` extra: colours, a
progress bar); without it the same text comes out plain.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from . import __version__, _core, crypto, files
from .codec import ConversationCodec
from .errors import CodecError, DecryptionError
from .frames import FERNET, GZIP, PLAIN, Framing, kind_of
from .storage import FileStore, Report

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["EXIT_CODES", "KEY_ENV", "NEW_KEY_ENV", "main"]

PROG = "conversation-codec"
KEY_ENV = "CONVERSATION_CODEC_KEY"
NEW_KEY_ENV = "CONVERSATION_CODEC_NEW_KEY"

OK, UNSOUND, USAGE, KEY, DAMAGED, IO_ERROR = 0, 1, 2, 3, 4, 5
INTERRUPTED, BROKEN_PIPE = 130, 141  # 128 + SIGINT, 128 + SIGPIPE: what a shell reports for a tool killed so
EXIT_CODES = {
    OK: "success; for verify and repair: the file is sound",
    UNSOUND: "verify or repair: the file is not sound (torn tail, damage, wrong index)",
    USAGE: "the command line is wrong (unknown option, SRC and DST the same file, ...)",
    KEY: "a key is missing, malformed or wrong, or cryptography is not installed",
    DAMAGED: "the file is damaged or is not a conversation file",
    IO_ERROR: "a file cannot be read or written (missing, permissions, disk full, DST exists)",
    INTERRUPTED: "interrupted (Ctrl-C)",
    BROKEN_PIPE: "the reader of the output went away (`show | head`): not an error, nothing is printed",
}

_WHITESPACE = b" \t\r\n"
# What a terminal would act on rather than show (ESC starts a control sequence): shown as \xNN instead.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# The shape of a Fernet key: a command line word of that shape is never repeated in an error message.
_KEY_SHAPED = re.compile(r"[A-Za-z0-9_-]{43}=")
_LONG = 200  # strings longer than this, inside content blocks that are not text (images...), are shortened
_PROGRESS_STEP = 1024  # messages between two updates of the progress bar


class Failure(Exception):
    """A failure of a command: its exit status and one line saying what and where."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ==================================================================================================== keys


@dataclass
class Keys:
    """Keys from one source: the raw keys (the first encrypts, all decrypt) and their ciphers."""

    raw: list[bytes]
    ciphers: list[crypto.Cipher]


def _keys(key_file: str | None, env: str, option: str) -> Keys | None:
    """The keys of `key_file` if given, else of the environment variable `env`; None if neither is set.

    Keys are separated by commas or whitespace (no Fernet key holds either), so a file may hold one key a line."""
    if key_file is not None:
        source = f"{option} {key_file}"
        try:
            with open(key_file, "rb") as f:
                text = f.read()
        except OSError as exc:
            raise Failure(KEY, f"cannot read the key file {key_file}: {exc.strerror or exc}") from None
    else:
        source = env
        value = os.environ.get(env, "")
        if not value.strip():
            return None
        text = os.fsencode(value)
    raw = [k for k in re.split(rb"[\s,]+", text) if k]
    if not raw:
        raise Failure(KEY, f"{source} holds no key")
    ciphers = []
    for i, key in enumerate(raw):
        try:
            ciphers.append(crypto.make_cipher(key))
        except ImportError:
            raise Failure(
                KEY, 'encrypted files need the cryptography package: pip install "conversation-codec[crypto]"'
            ) from None
        except ValueError:
            raise Failure(
                KEY,
                f"{source}: key {i + 1} of {len(raw)} is not a Fernet key (32 url-safe base64-encoded bytes, as "
                "Fernet.generate_key() gives)",
            ) from None
    return Keys(raw, ciphers)


def _key_needed(keys: Keys | None, why: str) -> Keys:
    if keys is None:
        raise Failure(KEY, f"{why}: give the key in {KEY_ENV} or --key-file")
    return keys


# ==================================================================================================== files


def _kind(path: str) -> str | None:
    """The kind of the conversation file at `path` (PLAIN, GZIP or FERNET; None for an empty one), told from its
    first byte that is not whitespace. OSError if it cannot be read (a missing file is an error here: a typo)."""
    with open(path, "rb") as f:
        while block := f.read(1 << 16):
            stripped = block.lstrip(_WHITESPACE)
            if stripped:
                return kind_of(stripped[0])
    return None


def _frames_compressed(path: str, kind: str | None, keys: Keys | None) -> bool:
    """Whether the conversation's frames are gzip: the file's kind, or inside an encrypted file, its first frame's
    (an encrypted file may mix both; a rewrite of it takes the first's)."""
    if kind != FERNET:
        return kind == GZIP
    store = FileStore(path, Framing(None if keys is None else keys.ciphers[0]), durable=False)
    with store.reading() as view:  # judges a frame the key does not open: wrong key, or altered
        if view is None:
            return False
        first = bytearray()
        while b"\n" not in first and len(first) < view.size - view.start:
            first += os.pread(view.fd, 1 << 16, view.start + len(first))
        line = bytes(first[: first.find(b"\n") + 1 or len(first)])
        return store.framing.open(line, path, view.start, body=False).jsonl[:2] == b"\x1f\x8b"


class Opened(NamedTuple):
    codec: ConversationCodec
    kind: str | None
    keys: Keys | None


def _open(path: str, key_file: str | None, *, framed: bool = False) -> Opened:
    """A codec that reads (and, `framed`, rewrites in its own format) the conversation at `path`. The key is used
    only for an encrypted file: a plain one is read as it is."""
    kind = _kind(path)
    keys = None
    if kind == FERNET:
        keys = _key_needed(_keys(key_file, KEY_ENV, "--key-file"), f"{path} is encrypted")
    compressed = framed and _frames_compressed(path, kind, keys)
    codec = ConversationCodec(path, fernet_key=None if keys is None else keys.ciphers, compressed=compressed)
    return Opened(codec, kind, keys)


def _format_name(kind: str | None, compressed: int, frames: int) -> str:
    """plain, gzip, fernet, gzip+fernet; an encrypted file that mixes gzip frames and others says how many."""
    if kind is None:
        return "empty"
    if kind != FERNET or compressed == 0:
        return kind
    return "gzip+fernet" if compressed == frames else f"fernet ({compressed} of {frames} frames gzip)"


class Walk(NamedTuple):
    frames: int
    compressed: int  # frames holding a gzip member
    jsonl_bytes: int


def _walk(path: str, keys: Keys | None) -> Walk:
    """Every whole frame opened (decrypted, inflated): their number and the size of their JSONL."""
    store = FileStore(path, Framing(None if keys is None else keys.ciphers[0]), durable=False)
    frames = compressed = size = 0
    with store.reading() as view:
        if view is None:
            return Walk(0, 0, 0)
        data = files.read_at(view.fd, view.size - view.start, view.start)
        for offset, length, _ in store.framing.scan(view.kind, data, view.start).frames:
            stored = data[offset - view.start : offset - view.start + length]
            frames += 1
            if view.kind == PLAIN:
                size += length
                continue
            jsonl = store.framing.open(stored, path, offset, body=False).jsonl  # a gzip file's is inflated
            if view.kind == GZIP or jsonl[:2] == b"\x1f\x8b":
                compressed += 1
                if view.kind == FERNET:
                    jsonl = _core.gunzip(jsonl, base=0, source=f"{path} (frame at byte {offset})")
            size += len(jsonl)
    return Walk(frames, compressed, size)


# ==================================================================================================== output


def _printable(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _rich_console(stderr: bool = False) -> Console | None:
    """A rich console on stdout (or stderr), or None when rich is not installed: the output is then plain."""
    try:
        from rich.console import Console
    except ImportError:
        return None

    class Quiet(Console):
        def on_broken_pipe(self) -> None:  # rich would exit with status 1: main() stops quietly instead
            raise BrokenPipeError

    return Quiet(stderr=stderr, highlight=False, emoji=False, markup=False)


class Printer:
    """Lines on stdout, styled through rich when it is there. Only message text is wrapped (to the terminal's
    width): lines that hold paths are not, so that they can be copied."""

    def __init__(self) -> None:
        if isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(errors="backslashreplace")  # a lone surrogate in a message must not fail
        self.console = _rich_console()
        self.width = self.console.width if self.console is not None else shutil.get_terminal_size().columns

    def line(self, pieces: str | Sequence[tuple[str, str]], indent: int = 0) -> None:
        """One line of text, or of (text, style) pieces."""
        if isinstance(pieces, str):
            pieces = [(pieces, "")]
        pieces = [(" " * indent, ""), *((_printable(text), style) for text, style in pieces)]
        if self.console is None:
            sys.stdout.write("".join(text for text, _ in pieces) + "\n")
            return
        from rich.text import Text

        self.console.print(Text.assemble(*pieces), soft_wrap=True)

    def wrapped(self, text: str, style: str, indent: int) -> None:
        """`text` (maybe several lines), each line wrapped to the width, indented by `indent` spaces."""
        text = _printable(text)
        width = max(20, self.width - indent)
        if self.console is None:
            for line in text.split("\n"):
                for piece in textwrap.wrap(line, width, break_on_hyphens=False, replace_whitespace=False) or [""]:
                    sys.stdout.write(" " * indent + piece + "\n")
            return
        from rich.text import Text

        for wrapped_line in Text(text, style=style).wrap(self.console, width):
            wrapped_line.rstrip()
            self.console.print(Text(" " * indent) + wrapped_line, soft_wrap=True)

    def table(self, rows: Sequence[tuple[str, str]]) -> None:
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            self.line([(label.ljust(width + 2), "bold"), (value, "")])


def _warn_line(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    text = _one_line(str(message))
    if text not in _warned:
        _warned.add(text)
        sys.stderr.write(f"{PROG}: warning: {text}\n")


_warned: set[str] = set()


def _one_line(text: str) -> str:
    return _printable(_KEY_SHAPED.sub("<key-shaped argument hidden>", " ".join(text.split("\n"))))


# ==================================================================================================== show


class Part(NamedTuple):
    """A piece of a message as shown: a head line (a tool call's name, empty for text) and a body."""

    head: str
    body: str
    style: str  # "text", "call", "thinking", "error" or "json"


class Shown(NamedTuple):
    role: str
    note: str  # what the role line adds: a tool call's id, a name
    parts: list[Part]


_LANGCHAIN = {
    "human": "user",
    "ai": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "function",
    "chat": "",
}
_TEXT_BLOCKS = {"text", "input_text", "output_text", "summary_text", "reasoning_text"}
_ROLE_STYLES = {"user": "bold green", "assistant": "bold cyan", "tool": "bold yellow", "function": "bold yellow"}
_PART_STYLES = {"text": "", "call": "yellow", "thinking": "dim italic", "error": "red", "json": "dim"}


def shown(message: Any) -> Shown:
    """What to show of a message in any of the usual shapes: OpenAI chat messages, Anthropic content blocks,
    OpenAI Responses items, LangChain's `message_to_dict`; anything else is shown as JSON."""
    if isinstance(message, dict):
        role, kind, data = message.get("role"), message.get("type"), message.get("data")
        if isinstance(role, str):
            return _chat(role, message)
        if isinstance(kind, str) and kind in _LANGCHAIN and isinstance(data, dict):
            return _chat(_LANGCHAIN[kind] or str(data.get("role", kind)), data)
        if kind == "function_call":
            return Shown(
                "assistant", "", [_call(message.get("name"), message.get("arguments"), message.get("call_id"))]
            )
        if kind == "function_call_output":
            return Shown("tool", _str(message.get("call_id")), _content(message.get("output")))
        if kind == "reasoning":
            return Shown("assistant", "", [Part("reasoning", _joined(_content(message.get("summary"))), "thinking")])
    return Shown("json", "", [Part("", _json(message, indent=2), "json")])


def _chat(role: str, message: dict[str, Any]) -> Shown:
    note = _str(message.get("tool_call_id")) or _str(message.get("name"))
    parts = _content(message.get("content"))
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        if isinstance(call, dict):
            function = call.get("function")
            if isinstance(function, dict):  # OpenAI: {"id", "function": {"name", "arguments"}}
                parts.append(_call(function.get("name"), function.get("arguments"), call.get("id")))
            else:  # LangChain: {"name", "args", "id"}
                parts.append(_call(call.get("name"), call.get("args"), call.get("id")))
        else:
            parts.append(Part("tool call", _json(call), "call"))
    legacy = message.get("function_call")  # OpenAI's deprecated single call
    if isinstance(legacy, dict):
        parts.append(_call(legacy.get("name"), legacy.get("arguments"), None))
    return Shown(role, note, parts)


def _content(content: Any) -> list[Part]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [Part("", content, "text")]
    if isinstance(content, list):
        return [part for block in content for part in _block(block)]
    return [Part("", _json(content), "json")]


def _block(block: Any) -> list[Part]:
    if not isinstance(block, dict):
        return _content(block) if isinstance(block, str) else [Part("", _json(block), "json")]
    kind = block.get("type")
    if kind in _TEXT_BLOCKS and isinstance(block.get("text"), str):
        return [Part("", block["text"], "text")]
    if kind == "tool_use":
        return [_call(block.get("name"), block.get("input"), block.get("id"))]
    if kind == "tool_result":
        head = "tool result" + (f" ({block['tool_use_id']})" if _str(block.get("tool_use_id")) else "")
        error = block.get("is_error") is True
        return [
            Part(
                head + (" error" if error else ""),
                _joined(_content(block.get("content"))),
                "error" if error else "call",
            )
        ]
    if kind == "thinking":
        return [Part("thinking", _str(block.get("thinking")), "thinking")]
    if kind == "redacted_thinking":
        return [Part("thinking (redacted)", "", "thinking")]
    if kind == "refusal":
        return [Part("refusal", _str(block.get("refusal")), "error")]
    return [Part(f"[{kind}]" if isinstance(kind, str) else "", _json(_shortened(block, 32)), "json")]


def _call(name: Any, arguments: Any, call_id: Any) -> Part:
    head = f"tool call {name if isinstance(name, str) else _json(name)}"
    if _str(call_id):
        head += f" ({call_id})"
    return Part(head, arguments if isinstance(arguments, str) else _json(arguments), "call")


def _joined(parts: list[Part]) -> str:
    return "\n".join(filter(None, (f"{p.head}: {p.body}" if p.head else p.body for p in parts)))


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _json(value: Any, indent: int | None = None) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, indent=indent)
    except RecursionError:  # nesting deeper than the interpreter allows: the Rust encoder goes to 1024 levels
        return bytes(_core.encode_lines([value])).decode("utf-8", "surrogateescape").rstrip("\n")


def _shortened(value: Any, depth: int) -> Any:
    """`value` with its long strings cut (base64 images are not for reading), `depth` levels down."""
    if isinstance(value, str) and len(value) > _LONG:
        return f"{value[:60]}... ({len(value)} characters)"
    if depth == 0:
        return value
    if isinstance(value, dict):
        return {k: _shortened(v, depth - 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_shortened(v, depth - 1) for v in value]
    return value


def _show(args: argparse.Namespace) -> int:
    codec = _open(args.path, args.key_file).codec
    first = 1
    if args.last is None:
        messages: Iterable[Any] = codec.iter()
    else:
        total = len(codec)
        messages = codec.load(last=args.last)
        first = total - len(messages) + 1
    if args.json:
        out = sys.stdout.buffer
        for block in _core.encode_chunks(messages, chunk_size=64 << 10):
            out.write(block)
        return OK
    printer = Printer()
    for number, message in enumerate(messages, first):
        if number > first:
            printer.line("")
        _render(printer, number, shown(message))
    return OK


def _render(printer: Printer, number: int, message: Shown) -> None:
    note = f" ({message.note})" if message.note else ""
    printer.line([(f"[{number}] ", "dim"), (message.role, _ROLE_STYLES.get(message.role, "bold")), (note, "dim")])
    if not message.parts:
        printer.wrapped("(empty)", "dim", 2)
    for part in message.parts:
        style = _PART_STYLES[part.style]
        if part.head:
            printer.wrapped(part.head, style, 2)
        if part.body:
            printer.wrapped(part.body, "dim" if part.style == "thinking" else "", 4 if part.head else 2)


# ==================================================================================================== stats


def _size(n: int) -> str:
    """`n` bytes, and in KiB, MiB... from 1 KiB up."""
    if n < 1024:
        return str(n)
    scaled, units = n / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while scaled >= 1024 and len(units) > 1:
        scaled /= 1024
        units.pop(0)
    return f"{n} ({scaled:.1f} {units[0]})"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _stats(args: argparse.Namespace) -> int:
    codec, kind, keys = _open(args.path, args.key_file)
    report = codec.verify()
    if report.errors:
        offset, what = report.errors[0]
        where = "" if f"byte {offset}" in what else f" (at byte {offset})"
        problems = _plural(len(report.errors), "problem")
        what = what if what.startswith(args.path) else f"{args.path}: {what}"
        raise Failure(DAMAGED, f"{what}{where}: {problems}; `verify` lists them, `repair` mends the file")
    walk = _walk(args.path, keys)
    on_disk = os.stat(args.path).st_size
    rows = [
        ("file", args.path),
        ("format", _format_name(kind, walk.compressed, walk.frames)),
        ("messages", str(report.messages)),
        ("turns", str(report.turns)),
        ("frames", str(walk.frames)),
        ("bytes on disk", _size(on_disk)),
        ("bytes uncompressed", _size(walk.jsonl_bytes)),
        ("compression ratio", f"{walk.jsonl_bytes / on_disk:.2f}" if on_disk else "-"),
        ("index", report.index),
        ("state", _state(report)),
    ]
    Printer().table(rows)
    return OK


def _state(report: Report) -> str:
    if report.torn_tail_bytes:
        return (
            f"a torn tail: the last {report.torn_tail_bytes} bytes are a write that did not complete "
            "(left out; `repair` sets them aside)"
        )
    return "sound" if report.ok else "not sound (`verify` says why)"


# ==================================================================================================== verify, repair


def _problems(printer: Printer, report: Report) -> None:
    if report.torn_tail_bytes:
        torn = f"torn tail: the last {report.torn_tail_bytes} bytes are a write that did not complete"
        printer.line([(torn, "yellow")], 2)
    for offset, what in report.errors:
        printer.line([(f"damage: {what}" + ("" if f"byte {offset}" in what else f" (at byte {offset})"), "red")], 2)
    if report.index.startswith("wrong"):
        printer.line([(f"index: {report.index}", "red")], 2)


def _verdict(printer: Printer, path: str, report: Report) -> int:
    if report.ok:
        counts = f" ({_plural(report.messages, 'message')}; index {report.index})"
        printer.line([(f"{path}: ", ""), ("sound", "bold green"), (counts, "")])
        return OK
    printer.line([(f"{path}: ", ""), ("not sound", "bold red")])
    _problems(printer, report)
    return UNSOUND


def _verify(args: argparse.Namespace) -> int:
    report = _open(args.path, args.key_file).codec.verify()
    printer = Printer()
    status = _verdict(printer, args.path, report)
    if status != OK:
        printer.line(
            [("`repair` sets a torn tail aside and rewrites a damaged file with every intact frame", "dim")], 2
        )
    return status


def _repair(args: argparse.Namespace) -> int:
    codec = _open(args.path, args.key_file, framed=True).codec
    before = codec.verify()
    printer = Printer()
    if before.ok and not before.index.startswith("ignored"):
        return _verdict(printer, args.path, before)
    printer.line([(f"{args.path}: ", ""), ("repairing", "bold yellow")])
    _problems(printer, before)
    written = codec.repair()
    for name in written:
        printer.line(f"kept {name}", 2)
    if not written:
        printer.line("index written again", 2)
    return _verdict(printer, args.path, codec.verify())


# ==================================================================================================== convert


def _convert(args: argparse.Namespace) -> int:
    src, dst = args.src, args.dst
    if args.rekey and args.decrypt:
        raise Failure(USAGE, "--rekey writes DST encrypted under a new key: it cannot go with --decrypt")
    kind = _kind(src)
    if os.path.lexists(dst):
        if os.path.exists(dst) and os.path.samefile(src, dst):
            raise Failure(USAGE, f"SRC and DST are the same file ({dst}): convert writes a new file")
        if not args.force:
            raise Failure(IO_ERROR, f"{dst} exists: pass --force to replace it")
    encrypted = args.encrypt or args.rekey or (kind == FERNET and not args.decrypt)
    # The key is read for an encrypted SRC, and for DST when it is encrypted under it.
    old = _keys(args.key_file, KEY_ENV, "--key-file") if kind == FERNET or (encrypted and not args.rekey) else None
    if kind == FERNET:
        _key_needed(old, f"{src} is encrypted")
    compressed = args.compress or (not args.decompress and _frames_compressed(src, kind, old))
    new = None
    if encrypted and args.rekey:
        new = _keys(args.new_key_file, NEW_KEY_ENV, "--new-key-file")
        if new is None:
            raise Failure(KEY, f"--rekey needs the new key: give it in {NEW_KEY_ENV} or --new-key-file")
        if old is not None and new.raw[0] in old.raw:
            raise Failure(KEY, "--rekey: the new key is one of the old keys, which would still open DST")
    elif encrypted:
        new = _key_needed(old, "--encrypt needs a key") if kind != FERNET else old
    source = ConversationCodec(src, fernet_key=old.ciphers if kind == FERNET and old is not None else None)
    target = ConversationCodec(dst, fernet_key=None if new is None else new.ciphers, compressed=compressed)
    count = [0]
    with _progress(args.progress, source, src) as advance:
        target.save_turns(_counted(source.iter_turns(), count, advance))
    dst_format = ("gzip+fernet" if compressed else "fernet") if encrypted else ("gzip" if compressed else "plain")
    Printer().line(f"{src} -> {dst}: {_plural(count[0], 'message')}, {dst_format}")
    return OK


def _counted(
    turns: Iterator[list[Any]], count: list[int], advance: Callable[[int], None] | None
) -> Iterator[list[Any]]:
    """`turns`, their messages counted into `count[0]` and reported to `advance` every _PROGRESS_STEP or so."""
    step = 0
    for turn in turns:
        yield turn
        step += len(turn)
        if step >= _PROGRESS_STEP:
            count[0] += step
            if advance is not None:
                advance(step)
            step = 0
    count[0] += step
    if advance is not None:
        advance(step)


@contextmanager
def _progress(wanted: bool | None, source: ConversationCodec, name: str) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr, by messages of SRC: when asked for (`--progress`), or by default when stderr is
    a terminal; never without rich."""
    console = _rich_console(stderr=True) if wanted or (wanted is None and sys.stderr.isatty()) else None
    if console is None:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    total = len(source)  # through the index: cheap for a large file
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("messages"))
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(_printable(os.path.basename(name)), total=total)
        yield lambda n: progress.advance(task, n)


# ==================================================================================================== parsing


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise Failure(USAGE, f"{message} (see `{self.prog} --help`)")


class _RefuseKey(argparse.Action):
    """`--key`: refused without repeating its value (a key on the command line shows in `ps` and shell history)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        raise Failure(USAGE, f"keys are never taken from the command line: use {KEY_ENV} or --key-file")


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a number of messages (0 or more), not {text!r}")
    return int(text)


_KEYS_HELP = f"""\
keys:
  An encrypted file's key is read from --key-file FILE, else from the environment variable
  {KEY_ENV}; never from the command line. Several keys may be given, separated by commas or
  whitespace (one a line in a file): the first encrypts, every one decrypts. For `convert --rekey`, the
  new key comes from --new-key-file or {NEW_KEY_ENV}. A key is used only for an encrypted
  file, and never printed.

exit status:
""" + "\n".join(f"  {code:>3}  {what}" for code, what in EXIT_CODES.items())


def _parser() -> _Parser:
    parser = _Parser(
        prog=PROG,
        description="Read, check, mend and convert conversation files (JSONL; gzip; Fernet-encrypted).",
        epilog=_KEYS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    keyed = _Parser(add_help=False, allow_abbrev=False)
    keyed.add_argument("--key-file", metavar="FILE", help=f"read the key(s) from FILE rather than ${KEY_ENV}")
    keyed.add_argument("--key", nargs="?", action=_RefuseKey, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(name: str, run: Callable[[argparse.Namespace], int], summary: str) -> _Parser:
        sub: _Parser = commands.add_parser(
            name,
            parents=[keyed],
            help=summary,
            description=textwrap.fill(summary, 100),
            epilog=_KEYS_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            allow_abbrev=False,
        )
        sub.set_defaults(run=run)
        return sub

    show = command("show", _show, "Print the messages: readable on a terminal, or JSONL with --json.")
    show.add_argument("path", metavar="PATH")
    show.add_argument("--last", metavar="N", type=_count, help="only the last N messages")
    show.add_argument("--json", action="store_true", help="one JSON message a line (JSONL), for pipes")

    stats = command("stats", _stats, "Print what the file holds: messages, frames, sizes, format, index.")
    stats.add_argument("path", metavar="PATH")

    verify = command("verify", _verify, "Read every frame and check it; exit status 0 only for a sound file.")
    verify.add_argument("path", metavar="PATH")

    repair = command(
        "repair",
        _repair,
        "Make the file sound: set a torn tail aside, rewrite a damaged file with every intact frame (the damaged "
        "original is kept beside it). Exit status 0 only if the file is sound afterwards.",
    )
    repair.add_argument("path", metavar="PATH")

    convert = command(
        "convert",
        _convert,
        "Write SRC's messages to a new file DST, in SRC's format unless told otherwise; atomically, in bounded "
        "memory. DST holds the same messages and the same turns.",
    )
    convert.add_argument("src", metavar="SRC")
    convert.add_argument("dst", metavar="DST")
    gzip = convert.add_mutually_exclusive_group()
    gzip.add_argument("--compress", action="store_true", help="write DST as gzip")
    gzip.add_argument("--decompress", action="store_true", help="write DST uncompressed")
    fernet = convert.add_mutually_exclusive_group()
    fernet.add_argument("--encrypt", action="store_true", help="write DST encrypted (under the key)")
    fernet.add_argument("--decrypt", action="store_true", help="write DST unencrypted")
    convert.add_argument("--rekey", action="store_true", help=f"write DST encrypted under the new key (${NEW_KEY_ENV})")
    convert.add_argument(
        "--new-key-file", metavar="FILE", help=f"read the new key from FILE rather than ${NEW_KEY_ENV}"
    )
    convert.add_argument("--force", action="store_true", help="replace DST if it exists")
    convert.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="show a progress bar on stderr (default: when stderr is a terminal; needs rich)",
    )
    return parser


# ==================================================================================================== main


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line `argv` (default: sys.argv[1:]); returns the exit status."""
    _warned.clear()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _warn_line
            try:
                args = _parser().parse_args(argv)
            except SystemExit as exc:  # --help, --version
                return exc.code if isinstance(exc.code, int) else USAGE
            status: int = args.run(args)
            sys.stdout.flush()
            return status
    except BrokenPipeError:
        # The reader went away: stop quietly, and keep the interpreter's final flush from failing too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE
    except KeyboardInterrupt:
        return _fail(INTERRUPTED, "interrupted")
    except Failure as exc:
        return _fail(exc.status, str(exc))
    except DecryptionError as exc:
        return _fail(KEY, str(exc))
    except CodecError as exc:
        return _fail(DAMAGED, str(exc))
    except OSError as exc:
        return _fail(IO_ERROR, f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc))


def _fail(status: int, message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {_one_line(message)}\n")
    return status
