"""A short, seeded workout of every entry point of the native core, for a memory checker to watch (the sanitizers
suite runs it under valgrind): pytest's start-up alone costs a minute under valgrind, this costs seconds.

    python -m torture._probe [--seed N] [--rounds R] [--plant]

Each call's result is checked (against the stdlib's json, or a round trip), so a run that returns wrong values
fails too. --plant reads freed memory and loses a reference to a str the extension made, on purpose, through
ctypes, to show that the checker reports both.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gzip
import json
import math
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from conversation_codec import ConversationCodec, CorruptFileError, DecodeError, EncodeError, _core

from .common import FORMATS, ROOT

SUITE = ROOT / "tests" / "jsontestsuite" / "test_parsing"


def same(a: Any, b: Any) -> bool:
    """Equal, of the same types, NaN equal to NaN, the sign of zero compared; no recursion (values nest 1024 deep)."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, float):
            if not ((math.isnan(x) and math.isnan(y)) or (x == y and math.copysign(1, x) == math.copysign(1, y))):
                return False
        elif isinstance(x, list):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y))
        elif isinstance(x, dict):
            if list(x) != list(y):
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif x != y:
            return False
    return True


class Reentrant(dict):  # type: ignore[type-arg]
    """A dict whose items() changes it and the list that holds it (Python code in the middle of an encode)."""

    def __init__(self, victim: list[Any]) -> None:
        super().__init__(a=1, b=[1, 2])
        self.victim = victim

    def items(self) -> Any:
        self.victim.clear()
        self.clear()
        return [("x", "y")]


def values(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value the stdlib writes and reads back (NaN, big ints, surrogates, U+2028 included)."""
    kind = rng.randrange(10 if depth < 6 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 2**63, -(2**64) - 1, 10**40, rng.randrange(-(10**6), 10**6)])
    if kind == 2:
        return rng.choice([0.0, -0.0, 1e300, 5e-324, math.inf, -math.inf, math.nan, rng.uniform(-1e9, 1e9)])
    if kind in (3, 4, 5):
        alphabet = 'ab"\\\n\t\x00\x1f\x7f\x85é€\u2028\u2029\ud800\udfff😀 '
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))
    if kind in (6, 7):
        return [values(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {f"k{rng.randrange(9)}": values(rng, depth + 1) for _ in range(rng.randrange(5))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m torture._probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=200, help="random values encoded and decoded")
    p.add_argument("--plant", action="store_true", help="read freed memory, leak a str (the checker must report both)")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    checks = 0

    def check(ok: bool, what: str) -> None:
        nonlocal checks
        checks += 1
        if not ok:
            raise AssertionError(f"{what} (seed {args.seed})")

    if args.plant:
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        block = libc.malloc(64)
        libc.free(block)
        ctypes.string_at(block, 8)  # a read of freed memory
        # A str the extension made, with a reference that is never released: a block lost at exit.
        leaked = _core.decode_lines('"lost é"\n'.encode())[0]
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(leaked))
        del leaked

    # The decoder on every JSONTestSuite file, whole and fed in random pieces; the stdlib's verdict where it is one.
    for path in sorted(SUITE.glob("*.json")):
        data = path.read_bytes()
        try:
            whole: Any = _core.decode_lines(data, source=path.name)
        except DecodeError:
            whole = DecodeError
        decoder = _core.LineDecoder(source=path.name)
        pieces: Any = []
        try:
            at = 0
            while at < len(data):
                n = rng.randrange(1, 64)
                pieces += decoder.feed(data[at : at + n])
                at += n
            pieces += decoder.finish()
        except DecodeError:
            pieces = DecodeError
        check(same(whole, pieces) or whole is pieces, f"{path.name}: whole {whole!r} != pieces {pieces!r}")
        if whole is not DecodeError and len(whole) == 1 and b"\n" not in data.strip():
            # The stdlib may refuse what we read (deep nesting, a BOM): the value is compared where it reads one.
            with contextlib.suppress(ValueError, RecursionError):
                check(same(whole[0], json.loads(data)), f"{path.name}: not the stdlib's value")

    # Encoder and decoder on random values, with mutations of the encoding.
    for _ in range(args.rounds):
        messages = [values(rng) for _ in range(rng.randrange(1, 6))]
        encoded = _core.encode_lines(messages)
        data = bytes(encoded)
        check(encoded.count == len(messages), "Encoded.count")
        back = _core.decode_lines(data)
        check(same(back, json.loads(json.dumps(messages))), f"round trip of {messages!r}")
        chunks = b"".join(bytes(c) for c in _core.encode_chunks(messages, chunk_size=rng.randrange(1, 64)))
        check(chunks == data, "encode_chunks == encode_lines")
        damaged = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        with contextlib.suppress(DecodeError):
            check(isinstance(_core.decode_lines(bytes(damaged)), list), "decode of damaged data")

    # Nesting at the limit and past it, both ways; Python code that mutates what is being encoded.
    deep: Any = []
    for _ in range(1023):
        deep = [deep]
    check(same(_core.decode_lines(bytes(_core.encode_lines([deep]))), [deep]), "1024 levels")
    for text in (b"[" * 1025 + b"]" * 1025, b'{"a":' * 1025 + b"1" + b"}" * 1025):
        try:
            _core.decode_lines(text)
            check(False, "1025 levels decoded")
        except DecodeError:
            checks += 1
    try:
        _core.encode_lines([[deep]])
        check(False, "1025 levels encoded")
    except EncodeError:
        checks += 1
    victim: list[Any] = []
    victim += [Reentrant(victim), "tail", {"k": [1.5]}]
    check(bytes(_core.encode_lines([victim])) == b'[{"x":"y"}]\n', "a mutating items()")

    # Gzip members, damaged streams, plain frames, index records.
    jsonl = bytes(_core.encode_lines([values(rng) for _ in range(50)]))
    lines = jsonl.splitlines(keepends=True)
    frames = [b"".join(lines[i : i + 7]) for i in range(0, len(lines), 7)]
    members = _core.gzip_members(frames, [len(f.splitlines()) for f in frames], level=rng.randrange(13))
    stream = b"".join(members) + gzip.compress(jsonl)
    check(_core.gunzip(stream) == jsonl + jsonl, "gunzip")
    found, stop = _core.scan_gzip(stream)
    check(stop is None and sum(m[2] for m in found) == 2 * len(lines), "scan_gzip")
    for _ in range(50):
        damaged = bytearray(stream)
        damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        # A flip in a foreign member's MTIME is not detectable (no header CRC): the data is then the same.
        with contextlib.suppress(CorruptFileError):
            check(_core.gunzip(bytes(damaged)) == jsonl + jsonl, "a flipped bit inflated to other data")
        _core.scan_gzip(bytes(damaged))
    plain, end, error = _core.scan_plain(jsonl + b'\t{"torn"', target=rng.randrange(1, 4096))
    check(end == len(jsonl) and error is None and sum(f[2] for f in plain) == len(lines), "scan_plain")
    records = [(f[0], f[1], f[2], sum(x[2] for x in plain[:i]), f[3]) for i, f in enumerate(plain)]
    packed = _core.pack_records(records)
    check(_core.unpack_records(packed) == records, "index records")
    check(_core.parse_index_header(_core.index_header(7, 9)) == (7, 9), "index header")
    check(_core.crc32(memoryview(packed)) == _core.crc32(packed), "crc32")

    # The whole stack (the block writer thread, the index, every format) on real files.
    with tempfile.TemporaryDirectory(prefix="torture-probe-") as tmp:
        for name, options in FORMATS.items():
            codec = ConversationCodec(Path(tmp) / f"{name}.jsonl".replace("+", "-"), **options)
            messages = [{"role": "user", "content": "x" * rng.randrange(200_000)} for _ in range(3)]
            codec.save(messages)
            codec.append_turn([{"a": 1}, {"b": 2}])
            check(codec.load() == [*messages, {"a": 1}, {"b": 2}], f"{name}: load")
            check(len(codec) == 5 and codec.load(last=2) == [{"a": 1}, {"b": 2}], f"{name}: len, last")
            check(codec.verify().ok, f"{name}: verify")
        with _core.BlockWriter(os.open(Path(tmp) / "w", os.O_WRONLY | os.O_CREAT, 0o600), durable=True) as w:
            w.put(_core.encode_lines([1, 2]))
            w.put(b"3\n")
        check((Path(tmp) / "w").read_bytes() == b"1\n2\n3\n", "BlockWriter")

    print(f"probe: {checks} checks passed (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
