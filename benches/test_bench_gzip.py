"""Compressed saves and loads (issue 3) on the ShareGPT long conversation: this package against what a careful user
would write (orjson + `gzip.compress` level 6, `gzip.decompress` + orjson) and the original design's proposal (stdlib
json + `gzip.compress` level 6), in one run; saves also against `orjson-durable` (the same, written durably as our
default save is: temp file, fsync, rename, folder fsync). `extra_info["compressed_bytes"]` is each file's size, for
the ratio.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from . import corpus
from .baselines import Original, Orjson, OrjsonDurable

try:
    from conversation_codec import ConversationCodec
except ImportError:  # not built yet
    ConversationCodec = None

IMPLS = ("ours", "orjson", "original")
SAVE_IMPLS = ("ours", "orjson", "orjson-durable", "original")


def make(impl: str, path: Path) -> Any:
    if impl == "ours":
        return ConversationCodec(path, compressed=True)
    return {"orjson": Orjson, "orjson-durable": OrjsonDurable, "original": Original}[impl](path, compressed=True)


@pytest.mark.parametrize("impl", SAVE_IMPLS)
def test_save_gzip(benchmark: Any, bench_dir: Path, impl: str) -> None:
    if impl == "ours" and ConversationCodec is None:
        pytest.skip("the package is not built")
    messages = corpus.sharegpt_long()
    codec = make(impl, bench_dir / "c.jsonl.gz")
    gc.collect()
    benchmark.pedantic(codec.save, args=(messages,), rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(
        corpus="sharegpt-long",
        op="save-gz",
        impl=impl,
        bytes=corpus.jsonl_size("sharegpt-long"),
        messages=len(messages),
        compressed_bytes=codec.path.stat().st_size,
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_load_gzip(benchmark: Any, bench_dir: Path, impl: str) -> None:
    if impl == "ours" and ConversationCodec is None:
        pytest.skip("the package is not built")
    messages = corpus.sharegpt_long()
    codec = make(impl, bench_dir / "c.jsonl.gz")
    codec.save(messages)
    gc.collect()
    result = benchmark.pedantic(codec.load, rounds=3, iterations=1, warmup_rounds=1)
    assert len(result) == len(messages)
    benchmark.extra_info.update(
        corpus="sharegpt-long",
        op="load-gz",
        impl=impl,
        bytes=corpus.jsonl_size("sharegpt-long"),
        messages=len(messages),
    )
