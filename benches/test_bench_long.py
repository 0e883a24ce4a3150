"""Very long conversations (issue 3): appends whose cost does not grow, and the end of a file read in milliseconds.

The scale corpus of ../shared/BENCH.md: a generated conversation of 1,000,000 short messages, saved once per format
into bench-results/scratch/long/ (kept between runs; regenerated when missing). The cached files' names carry the
on-disk format's version (`FORMAT_VERSION`): a file written by an older format is never measured, it is simply not
found, and made again. Bump it whenever docs/FORMAT.md changes what a writer produces. Every bench records
`extra_info` = {section: "long", corpus, op, impl (the format), messages}; `report.py` prints them as their own table
with issue 3's targets.

- `append@10`, `append@1M`: `append_turn` of one typical message (a ShareGPT-median 433-character content),
  `durable=False`, to a file of 10 and of 1,000,000 messages;
- `grow@10-2000` (same codec for every append) and `grow-fresh@10-2000` (a fresh `ConversationCodec` per append,
  as a web server handling one request per turn would; its construction is timed too): a small conversation, saved
  as 10 messages, grows to 2,000 by `append_turn` of the typical message, `durable=False`; one round per append;
- `tail20`: `load(last=20)` on a fresh codec; `len`: `len()` on a fresh codec;
- `iter-1GB`: iterating a 1 GB plain file in a child process; `extra_info["peak_growth_mib"]` is the growth of its
  peak resident memory (ru_maxrss) over the iteration.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import SCRATCH

try:
    from conversation_codec import ConversationCodec
except ImportError:  # not built yet
    ConversationCodec = None

LONG = SCRATCH / "long"
# Version 2: gzip member headers carry a header CRC, encrypted frames a binding header, the index names the data
# file by device and inode (docs/FORMAT.md). Part of every cached file's name, so a stale cache is never used.
FORMAT_VERSION = 2
MESSAGES = 1_000_000
KEY = b"J0mTqgTnTEm3CzC3aDQTR4E7q-rr4ad9q_gNcMiyEQY="  # fixed: the cached files must stay readable
FORMATS: dict[str, dict[str, Any]] = {
    "plain": {},
    "gzip": {"compressed": True},
    "fernet": {"fernet_key": KEY},
    "gzip+fernet": {"compressed": True, "fernet_key": KEY},
}
TYPICAL = {"role": "user", "content": ("Could you explain how this works, step by step? " * 9)[:433]}
ITER_BYTES = 1 << 30

pytestmark = pytest.mark.skipif(ConversationCodec is None, reason="the package is not built")


def short(i: int) -> dict[str, Any]:
    return {"role": ("user", "assistant")[i % 2], "content": f"short message number {i}"}


def scale_file(fmt: str) -> Path:
    """The 1,000,000-message conversation in format `fmt`, made once."""
    path = LONG / f"scale-v{FORMAT_VERSION}-{fmt}.jsonl"
    if not path.exists():
        LONG.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("building-" + path.name)
        ConversationCodec(tmp, durable=False, **FORMATS[fmt]).save(short(i) for i in range(MESSAGES))
        shutil.move(str(tmp) + ".idx", str(path) + ".idx")  # the index names the inode, which a rename keeps
        tmp.rename(path)
    return path


def info(benchmark: Any, op: str, fmt: str, messages: int, **extra: Any) -> None:
    benchmark.extra_info.update(section="long", corpus="scale", op=op, impl=fmt, messages=messages, **extra)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("size", [10, MESSAGES], ids=["10", "1M"])
def test_append(benchmark: Any, bench_dir: Path, fmt: str, size: int) -> None:
    path = bench_dir / "c.jsonl"
    if size == MESSAGES:
        source = scale_file(fmt)
        shutil.copyfile(source, path)
        shutil.copyfile(str(source) + ".idx", str(path) + ".idx")
        # A copy has another inode: the copied index is (rightly) not trusted, so let one append rebuild it.
    else:
        ConversationCodec(path, **FORMATS[fmt]).save(short(i) for i in range(size))
    codec = ConversationCodec(path, durable=False, **FORMATS[fmt])
    codec.append_turn(TYPICAL)
    info(benchmark, f"append@{'1M' if size == MESSAGES else size}", fmt, size)
    benchmark.pedantic(codec.append_turn, args=(TYPICAL,), rounds=3000, iterations=1, warmup_rounds=200)
    assert len(codec) == size + 1 + 3200


GROW_FROM, GROW_TO = 10, 2_000


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("fresh", [False, True], ids=["same-codec", "fresh-codec"])
def test_append_growing(benchmark: Any, bench_dir: Path, fmt: str, fresh: bool) -> None:
    """A small conversation's appends (issue 6): 10 -> 2,000 messages, one timed `append_turn` per round."""
    path = bench_dir / "small.jsonl"
    ConversationCodec(path, **FORMATS[fmt]).save(short(i) for i in range(GROW_FROM))
    options = {"durable": False, **FORMATS[fmt]}
    if fresh:

        def append() -> None:
            ConversationCodec(path, **options).append_turn(TYPICAL)

    else:
        codec = ConversationCodec(path, **options)

        def append() -> None:
            codec.append_turn(TYPICAL)

    info(benchmark, "grow-fresh@10-2000" if fresh else "grow@10-2000", fmt, GROW_TO)
    benchmark.pedantic(append, rounds=GROW_TO - GROW_FROM, iterations=1, warmup_rounds=0)
    assert len(ConversationCodec(path, **FORMATS[fmt])) == GROW_TO


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_tail20(benchmark: Any, fmt: str) -> None:
    path = scale_file(fmt)
    info(benchmark, "tail20", fmt, MESSAGES)
    result = benchmark.pedantic(
        lambda: ConversationCodec(path, **FORMATS[fmt]).load(last=20), rounds=200, iterations=1, warmup_rounds=5
    )
    assert result == [short(i) for i in range(MESSAGES - 20, MESSAGES)]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_len(benchmark: Any, fmt: str) -> None:
    path = scale_file(fmt)
    info(benchmark, "len", fmt, MESSAGES)
    result = benchmark.pedantic(
        lambda: len(ConversationCodec(path, **FORMATS[fmt])), rounds=200, iterations=1, warmup_rounds=5
    )
    assert result == MESSAGES


# Growth = the peak resident size during the iteration (VmHWM, reset first where the kernel allows) over the
# resident size just before it (VmRSS): ru_maxrss alone would hide the growth under the interpreter's start-up peak.
ITER_SCRIPT = """
import json, sys, time
from conversation_codec import ConversationCodec

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

codec = ConversationCodec(sys.argv[1])
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current size
except OSError:
    pass
before = status("VmRSS")
start = time.perf_counter()
count = sum(1 for _ in codec.iter())
seconds = time.perf_counter() - start
print(json.dumps({"count": count, "seconds": seconds, "growth_kib": status("VmHWM") - before}))
"""


def test_iter_1gb_memory(benchmark: Any) -> None:
    path = LONG / f"iter-1GB-v{FORMAT_VERSION}.jsonl"
    pad = "x" * 480
    messages = ITER_BYTES // (len(pad) + 40)
    if not path.exists():
        LONG.mkdir(parents=True, exist_ok=True)
        ConversationCodec(path, durable=False).save({"i": i, "content": pad} for i in range(messages))
    runs: list[dict[str, Any]] = []

    def run() -> None:
        out = subprocess.run([sys.executable, "-c", ITER_SCRIPT, str(path)], capture_output=True, check=True)
        runs.append(json.loads(out.stdout))

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert runs[-1]["count"] == messages
    info(
        benchmark,
        "iter-1GB",
        "plain",
        messages,
        bytes=path.stat().st_size,
        peak_growth_mib=runs[-1]["growth_kib"] / 1024,
        iter_seconds=runs[-1]["seconds"],
    )
