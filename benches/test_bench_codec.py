"""Save and load throughput: this package against the original design and the orjson equivalent, in one run.

Run by `make bench` (pytest-benchmark; ../shared/BENCH.md); `benches/report.py` turns the JSON into the table.
Every bench records `extra_info` = {corpus, op, impl, bytes, messages, ...}: `bytes` is the corpus as the
original's JSONL, the same number for every implementation, so MB/s ratios are time ratios.

Implementations (`impl`):
- `ours`: `ConversationCodec` with its default settings (atomic, durable: two fsyncs per save);
- `ours-nodurable`: `durable=False`, still atomic, to show what the fsyncs cost (save only: load is the same);
- `original`, `orjson`: `benches/baselines.py`;
- `orjson-durable` (save only): orjson written the way our default save writes (temp file, fsync, rename, folder
  fsync), the like-with-like reference for `ours`, as `orjson` is for `ours-nodurable`;
- `msgspec`: `msgspec.json` `encode_lines` / `decode_lines`, the fastest Python-side JSONL we know;
- `jiter` (load only): `jiter.from_json` per line, the field's parser, against our own;
- `fernet` (encrypted ops only): bare `Fernet.encrypt` / `Fernet.decrypt` of the same JSONL bytes, in memory, the
  reference for the "overhead over Fernet" target;
- `fernet-file` (encrypted ops only): the same, plus writing the token with `Path.write_bytes` (no fsync) or reading
  it with `Path.read_bytes`: how much of the overhead is only moving the token to and from the page cache.

Operations (`op`): `save`, `load`, `save-enc` and `load-enc` (Fernet-encrypted files, sharegpt-long only).
Corpora: `sharegpt-long` (one file), `sharegpt-many` (17,671 files: one round saves or loads them all) and `agent`.
"""

from __future__ import annotations

import functools
import gc
import itertools
import os
from pathlib import Path
from typing import Any, Callable

import pytest

from . import corpus
from .baselines import Original, Orjson, OrjsonDurable

try:
    from conversation_codec import ConversationCodec
except ImportError:  # not built yet: the baselines still run
    ConversationCodec = None

# Rounds per bench: the big corpora take seconds a round, and the whole run must fit in about 15 minutes on 2 cores.
# BENCH_ROUNDS=1 (and BENCH_WARMUP=0) makes a quick smoke run of the harness itself; its figures mean nothing.
ROUNDS = {"sharegpt-long": 5, "sharegpt-many": 3, "agent": 5}
if os.environ.get("BENCH_ROUNDS"):
    ROUNDS = dict.fromkeys(ROUNDS, int(os.environ["BENCH_ROUNDS"]))
WARMUP_ROUNDS = int(os.environ.get("BENCH_WARMUP", "1"))

SAVE_IMPLS = ("ours", "ours-nodurable", "original", "orjson", "orjson-durable", "msgspec")
LOAD_IMPLS = ("ours", "original", "orjson", "jiter", "msgspec")
SAVE_ENC_IMPLS = ("ours", "ours-nodurable", "original", "orjson", "orjson-durable", "fernet", "fernet-file")
LOAD_ENC_IMPLS = ("ours", "original", "orjson", "fernet", "fernet-file")
ENC_CORPORA = ("sharegpt-long",)


class Msgspec:
    """JSONL with msgspec's own line encoder and decoder, written and read in one call each."""

    def __init__(self, path: Path) -> None:
        import msgspec

        self.path = path
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder()

    def save(self, messages: list[Any]) -> None:
        self.path.write_bytes(self._encoder.encode_lines(messages))

    def load(self) -> list[Any]:
        return self._decoder.decode_lines(self.path.read_bytes())  # type: ignore[no-any-return]


class Jiter:
    """Load only: `jiter.from_json` per line (pydantic's parser), as `Orjson.load` does with orjson."""

    def __init__(self, path: Path) -> None:
        import jiter

        self.path = path
        self._from_json = jiter.from_json

    def load(self) -> list[Any]:
        from_json = self._from_json
        return [from_json(line) for line in self.path.read_bytes().splitlines() if line.strip()]


def _needs_ours(impl: str) -> list[pytest.MarkDecorator]:
    if impl.startswith("ours") and ConversationCodec is None:
        return [pytest.mark.skip(reason="conversation_codec is not built (make build)")]
    return []


def make(impl: str, path: Path, key: bytes | None = None) -> Any:
    """A codec of implementation `impl` for the file at `path`, encrypting with `key` if given."""
    if impl == "ours":
        return ConversationCodec(path, fernet_key=key)
    if impl == "ours-nodurable":
        return ConversationCodec(path, fernet_key=key, durable=False)
    if impl == "original":
        return Original(path, fernet_key=key)
    if impl == "orjson":
        return Orjson(path, fernet_key=key)
    if impl == "orjson-durable":
        return OrjsonDurable(path, fernet_key=key)
    assert key is None, impl
    if impl == "msgspec":
        return Msgspec(path)
    if impl == "jiter":
        return Jiter(path)
    raise KeyError(impl)


def writer_of(impl: str) -> str:
    """Who writes the file a load bench reads: each codec its own; jiter reads orjson's (the same compact UTF-8)."""
    return "orjson" if impl == "jiter" else impl


def cases(corpora: tuple[str, ...], impls: tuple[str, ...]) -> list[Any]:
    """Corpus-major, implementation-minor: the implementations compared in one table row run back to back."""
    return [
        pytest.param(name, impl, id=f"{name}-{impl}", marks=_needs_ours(impl))
        for name, impl in itertools.product(corpora, impls)
    ]


@functools.cache
def frozen_corpus(name: str) -> Any:
    """The corpus, moved out of the garbage collector's sight (`gc.freeze`).

    The harness keeps every corpus alive for the whole run: millions of containers that a real process saving its
    conversation does not carry, and that each full collection during a timed load would walk again.
    """
    data = corpus.corpus(name)
    corpus.jsonl_size(name)
    gc.collect()
    gc.freeze()
    return data


def run(benchmark: Any, function: Callable[[], Any], name: str) -> Any:
    """Time `function` for the corpus's rounds; its last result is returned.

    Each round starts from a collected heap, with the previous round's result already freed (pytest-benchmark
    would keep it alive through the next round otherwise): freeing a loaded conversation is not timed. Dirty pages
    of earlier rounds are flushed first (`os.sync`), so the kernel's writeback of one round does not land in the
    next: an agent saves once per turn, not thousands of files back to back.
    """
    results: list[Any] = []

    def setup() -> None:
        results.clear()
        gc.collect()
        os.sync()

    def timed() -> None:
        results.append(function())

    benchmark.pedantic(timed, setup=setup, rounds=ROUNDS[name], warmup_rounds=WARMUP_ROUNDS, iterations=1)
    return results[0]


def describe(benchmark: Any, name: str, op: str, impl: str, **more: Any) -> None:
    benchmark.extra_info.update(
        corpus=name,
        op=op,
        impl=impl,
        bytes=corpus.jsonl_size(name),
        messages=corpus.message_count(name),
        **more,
    )


def files_for(name: str, directory: Path) -> tuple[list[Any], list[Path]]:
    """The corpus as a list of conversations and the path each is saved to (one for the single-file corpora)."""
    if name == "sharegpt-many":
        conversations = list(frozen_corpus(name))
        return conversations, [directory / f"{i:05d}.jsonl" for i in range(len(conversations))]
    return [frozen_corpus(name)], [directory / f"{name}.jsonl"]


def size_on_disk(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


@pytest.mark.parametrize(("name", "impl"), cases(corpus.CORPORA, SAVE_IMPLS))
def test_save(benchmark: Any, bench_dir: Path, name: str, impl: str) -> None:
    conversations, paths = files_for(name, bench_dir)
    codecs = [make(impl, p) for p in paths]
    pairs = list(zip(codecs, conversations))

    def save_all() -> None:
        for codec, conversation in pairs:
            codec.save(conversation)

    run(benchmark, save_all, name)
    describe(benchmark, name, "save", impl, files=len(paths), file_bytes=size_on_disk(paths))


@pytest.mark.parametrize(("name", "impl"), cases(corpus.CORPORA, LOAD_IMPLS))
def test_load(benchmark: Any, bench_dir: Path, name: str, impl: str) -> None:
    conversations, paths = files_for(name, bench_dir)
    for path, conversation in zip(paths, conversations):
        make(writer_of(impl), path).save(conversation)
    codecs = [make(impl, p) for p in paths]

    def load_all() -> list[Any]:
        return [codec.load() for codec in codecs]

    loaded = run(benchmark, load_all, name)
    # Not an assert: a wrong result is reported next to its timing instead of hiding it.
    describe(
        benchmark, name, "load", impl, files=len(paths), file_bytes=size_on_disk(paths), equal=loaded == conversations
    )


def plain_jsonl(name: str) -> bytes:
    """The JSONL this package encrypts for the corpus, for bare Fernet to work on the very same bytes.

    orjson's output differs only where this package escapes U+2028/U+2029 (111 bytes on sharegpt-long); it stands
    in while the package is not built.
    """
    if ConversationCodec is None:
        return corpus.compact_jsonl(name)
    from conversation_codec import _core

    return bytes(_core.encode_lines(corpus.corpus(name)))


@pytest.fixture(scope="module")
def fernet_key() -> bytes:
    from cryptography.fernet import Fernet

    return Fernet.generate_key()


@pytest.mark.parametrize(("name", "impl"), cases(ENC_CORPORA, SAVE_ENC_IMPLS))
def test_save_encrypted(benchmark: Any, bench_dir: Path, fernet_key: bytes, name: str, impl: str) -> None:
    path = bench_dir / f"{name}.jsonl.enc"
    if impl.startswith("fernet"):
        from cryptography.fernet import Fernet

        plain = plain_jsonl(name)
        cipher = Fernet(fernet_key)
        if impl == "fernet":
            run(benchmark, lambda: cipher.encrypt(plain), name)
        else:  # fernet-file: and the token written to a file, as plainly as Python can
            run(benchmark, lambda: path.write_bytes(cipher.encrypt(plain)), name)
        describe(benchmark, name, "save-enc", impl, plain_bytes=len(plain))
        return
    messages = frozen_corpus(name)
    codec = make(impl, path, fernet_key)
    run(benchmark, lambda: codec.save(messages), name)
    describe(benchmark, name, "save-enc", impl, file_bytes=path.stat().st_size)


@pytest.mark.parametrize(("name", "impl"), cases(ENC_CORPORA, LOAD_ENC_IMPLS))
def test_load_encrypted(benchmark: Any, bench_dir: Path, fernet_key: bytes, name: str, impl: str) -> None:
    from cryptography.fernet import Fernet

    path = bench_dir / f"{name}.jsonl.enc"
    if impl.startswith("fernet"):
        plain = plain_jsonl(name)
        cipher = Fernet(fernet_key)
        token = cipher.encrypt(plain)
        if impl == "fernet":
            decrypted = run(benchmark, lambda: cipher.decrypt(token), name)
        else:  # fernet-file: the token read from a file first
            path.write_bytes(token)
            decrypted = run(benchmark, lambda: cipher.decrypt(path.read_bytes()), name)
        describe(benchmark, name, "load-enc", impl, plain_bytes=len(plain), equal=decrypted == plain)
        return
    messages = frozen_corpus(name)
    codec = make(impl, path, fernet_key)
    codec.save(messages)
    loaded = run(benchmark, codec.load, name)
    describe(benchmark, name, "load-enc", impl, file_bytes=path.stat().st_size, equal=loaded == messages)
