"""Deep nesting on small thread stacks: refused with an error, never a crash.

1024 levels (the limit) fit on an ordinary main thread, but not on a thread with a 256 KiB stack, nor on musl's
default 128 KiB. The encoder and decoder watch the stack they have left and raise EncodeError / DecodeError
before it runs out. Each case runs in a subprocess, so that a crash fails the test instead of killing pytest.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys, threading
    from conversation_codec import DecodeError, EncodeError, _core

    kind, make, depth, stack_kib = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    class Items(dict):
        pass

    def nested(depth):
        x = [] if make == "list" else {}
        for _ in range(depth - 1):
            x = [x] if make == "list" else (Items(a=x) if make == "items" else {"a": x})
        return x

    def text(depth):
        if make == "list":
            return b"[" * depth + b"]" * depth + b"\\n"
        return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1) + b"\\n"

    # Made (and freed) on the main thread: CPython 3.13.0 itself crashes freeing 1000 nested dict subclasses on a
    # 128 KiB thread, with this library not involved. Only the encoding runs on the small stack.
    value = nested(depth) if kind == "encode" else None

    def run():
        try:
            if kind == "encode":
                data = bytes(_core.encode_lines([value]))
                print("ok", len(data))
            else:
                print("ok", len(_core.decode_lines(text(depth), source="deep.jsonl")))
        except (EncodeError, DecodeError) as exc:
            print("refused", type(exc).__name__, exc)

    if stack_kib:
        threading.stack_size(stack_kib * 1024)
        t = threading.Thread(target=run)
        t.start()
        t.join()
    else:
        run()
    """
)


def run(kind: str, make: str, depth: int, stack_kib: int) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, kind, make, str(depth), str(stack_kib)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"crashed with {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout.strip()


@pytest.mark.parametrize("stack_kib", [128, 256])
@pytest.mark.parametrize(
    ("kind", "make"),
    [("encode", "list"), ("encode", "dict"), ("encode", "items"), ("decode", "list"), ("decode", "dict")],
)
def test_deep_nesting_on_a_small_thread_stack_is_refused_not_a_crash(kind: str, make: str, stack_kib: int) -> None:
    out = run(kind, make, 1000, stack_kib)
    expected = "refused EncodeError" if kind == "encode" else "refused DecodeError"
    assert out.startswith(expected), out
    assert "stack" in out, out
    if kind == "decode":
        assert "deep.jsonl: line 1" in out, out


@pytest.mark.parametrize("stack_kib", [128, 256])
@pytest.mark.parametrize("kind", ["encode", "decode"])
def test_moderate_nesting_still_works_on_a_small_thread_stack(kind: str, stack_kib: int) -> None:
    # Realistic nesting (tool calls inside content blocks...) is a dozen levels or so: well within even 128 KiB
    # of stack, in a debug build too.
    assert run(kind, "list", 20, stack_kib).startswith("ok"), kind


@pytest.mark.parametrize(
    ("kind", "make"), [("encode", "list"), ("encode", "dict"), ("decode", "list"), ("decode", "dict")]
)
def test_the_1024_level_limit_still_holds_on_the_main_thread(kind: str, make: str) -> None:
    assert run(kind, make, 1024, 0).startswith("ok")
    out = run(kind, make, 1025, 0)
    assert out.startswith("refused") and "1024" in out, out
