"""Shared fixtures: a conversation file in a fresh folder, a Fernet key, a realistic conversation."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
from _helpers import FORMATS
from hypothesis import settings

# No per-example deadline: how long an example takes is the benchmark harness's business, and on a loaded CI machine a
# file-writing example can pass 200 ms once and not the next time, which Hypothesis reports as a failure (Flaky).
settings.register_profile("conversation-codec", deadline=None)
settings.load_profile("conversation-codec")


@pytest.fixture(params=sorted(FORMATS))
def options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Codec options of each of the four formats (plain, gzip, Fernet, gzip+Fernet) in turn."""
    if "fernet_key" in FORMATS[request.param]:
        pytest.importorskip("cryptography.fernet")
    return dict(FORMATS[request.param])


@pytest.fixture
def conv_path(tmp_path: Path) -> Path:
    """Where a test's conversation lives: a file that does not exist yet, alone in its own folder."""
    return tmp_path / "conversation.jsonl"


@pytest.fixture
def fernet_key() -> bytes:
    fernet = pytest.importorskip("cryptography.fernet")
    return fernet.Fernet.generate_key()


@pytest.fixture
def other_fernet_key() -> bytes:
    fernet = pytest.importorskip("cryptography.fernet")
    return fernet.Fernet.generate_key()


@pytest.fixture
def umask_022():
    """Run the test under umask 0o022 (the usual default), whatever the caller's umask is."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# OpenAI- and Anthropic-shaped messages: tool calls, tool results, nested content blocks, unicode, nulls.
_CONVERSATION: list[Any] = [
    {"role": "system", "content": "You are a helpful assistant. Answer in the user's language."},
    {"role": "user", "content": "Quel temps fait-il à Zürich ? Réponds en 2 phrases. 天気は 🌦️"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_9pQx2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Z\\u00fcrich", "unit": "celsius"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_9pQx2", "content": '{"temp": -3.5, "sky": "snow"}'},
    {"role": "assistant", "content": "Il neige à Zürich, -3.5 °C.\nPrenez un manteau.", "refusal": None},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "And this picture?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        ],
    },
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "The user sent an image; describe it.", "signature": "EqQBCg=="},
            {
                "type": "tool_use",
                "id": "toolu_01A",
                "name": "describe",
                "input": {"detail": "high", "regions": [[0, 0, 10, 10], [5.5, 6.25, 1e-3, 2e10]], "ok": True},
            },
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1204, "output_tokens": 87, "cache_read_input_tokens": 0},
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A", "content": [{"type": "text", "text": "a cat"}]},
            {"type": "tool_result", "tool_use_id": "toolu_01B", "is_error": True, "content": "timeout\t(30 s)"},
        ],
    },
    {"role": "assistant", "content": 'It is a cat. Quote: "\\ is a backslash"', "metadata": {}},
]


@pytest.fixture
def conversation() -> list[Any]:
    """A fresh deep copy each time, so a test may mutate it."""
    return copy.deepcopy(_CONVERSATION)
