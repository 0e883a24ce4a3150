"""Deterministic conversations for the torture suites: "turn i of writer w", and the check that a loaded list of
messages is a valid history made of such turns.

Every message says which turn it belongs to (`w` the writer, `t` the turn's number, `k` its place in the turn,
`n` the turn's size), and the rest of it is drawn from a seed derived from (seed, w, t): a checker that knows the
seed regenerates any turn and compares messages exactly, so a message that is cut, altered, duplicated, moved or
foreign is seen, and so is a turn of which only some messages are visible. Suites identify turns by `TurnId`
pairs (w, t) and compare histories as lists of them.

Texts mix escapes (quotes, backslashes, line breaks, TABs), multi-byte UTF-8 and random base64 (incompressible,
so that gzip frames are as large as plain ones); they avoid the few characters that FORMAT.md 1.1 escapes beyond
what `json.dumps` does, so that `stored_plain` is exactly what a writer appends to a plain file.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

TurnId = tuple[int, int]  # (writer, turn number)

# Characters whose JSON form differs somehow: escapes, 2-, 3- and 4-byte UTF-8.
_ALPHABET = 'abcdefghijklmnopqrstuvwxyz ABC"\\\n\t/é日本語😀ß€'
_ROLES = ("user", "assistant", "tool")


class HistoryError(ValueError):
    """The messages are not a sequence of whole, unaltered turns. `kind` is "partial" (a turn of which only some
    messages are there, or whose messages are out of place), "altered" (a message that is not the one its turn
    holds) or "foreign" (not a message of this workload); `at` is the message's position."""

    def __init__(self, kind: str, at: int, detail: str) -> None:
        super().__init__(f"{kind} at message {at}: {detail}")
        self.kind = kind
        self.at = at


@dataclass(frozen=True)
class Shape:
    """How turns are drawn: the share of turns of several messages, and of medium and big messages."""

    multi: float = 0.4  # turns of 2..max_messages messages
    max_messages: int = 5
    medium: float = 0.15  # messages of 2-20 KB
    big: float = 0.0  # messages of 100-600 KB
    small_bytes: tuple[int, int] = (30, 500)
    medium_bytes: tuple[int, int] = (2_000, 20_000)
    big_bytes: tuple[int, int] = (100_000, 600_000)


class Workload:
    """Turn `t` of writer `w` under `seed`, the same in every process; and the checks of loaded histories."""

    def __init__(self, seed: int | str, shape: Shape | None = None) -> None:
        self.seed = seed
        self.shape = shape or Shape()
        self._turns: dict[TurnId, list[dict[str, Any]]] = {}
        self._sizes: dict[TurnId, int] = {}

    # ---------------------------------------------------------------------------------------------- generating

    def turn(self, writer: int, t: int) -> list[dict[str, Any]]:
        """The messages of turn (writer, t): a fresh list each time, of shared message dicts (do not mutate)."""
        key = (writer, t)
        found = self._turns.get(key)
        if found is None:
            found = self._turns[key] = self._draw(writer, t)
        return list(found)

    def _draw(self, writer: int, t: int) -> list[dict[str, Any]]:
        shape = self.shape
        rng = random.Random(f"turn:{self.seed}:{writer}:{t}")
        n = rng.randint(2, shape.max_messages) if rng.random() < shape.multi else 1
        messages = []
        for k in range(n):
            roll = rng.random()
            if roll < shape.big:
                size = rng.randint(*shape.big_bytes)
            elif roll < shape.big + shape.medium:
                size = rng.randint(*shape.medium_bytes)
            else:
                size = rng.randint(*shape.small_bytes)
            message: dict[str, Any] = {"w": writer, "t": t, "k": k, "n": n, "role": rng.choice(_ROLES)}
            text = _text(rng, size)
            if rng.random() < 0.3:
                message["content"] = [{"type": "text", "text": text}, {"type": "meta", "i": rng.randrange(1 << 40)}]
            else:
                message["content"] = text
            messages.append(message)
        return messages

    def messages(self, turns: Iterable[TurnId]) -> list[dict[str, Any]]:
        """The messages of a history given as turn ids."""
        out: list[dict[str, Any]] = []
        for w, t in turns:
            out += self.turn(w, t)
        return out

    def jsonl(self, writer: int, t: int) -> bytes:
        """The turn's JSONL as a writer encodes it (compact, UTF-8: FORMAT.md 1.1), without turn marks."""
        return b"".join(_line(m) + b"\n" for m in self.turn(writer, t))

    def stored_plain(self, writer: int, t: int) -> bytes:
        """The turn as `append_turn` writes it to a plain file (FORMAT.md 1.2: a turn of several messages is
        marked with TABs)."""
        lines = [_line(m) for m in self.turn(writer, t)]
        if len(lines) == 1:
            return lines[0] + b"\n"
        return b"\t" + b"\t\n".join(lines) + b"\n"

    def size(self, writer: int, t: int) -> int:
        """The turn's JSONL size in bytes (what a history budget counts)."""
        key = (writer, t)
        found = self._sizes.get(key)
        if found is None:
            found = self._sizes[key] = len(self.jsonl(writer, t))
        return found

    def forget(self, keep: Iterable[TurnId] = ()) -> None:
        """Drops cached turns but those in `keep` (long runs generate more than they need to remember)."""
        keep = set(keep)
        self._turns = {k: v for k, v in self._turns.items() if k in keep}
        self._sizes = {k: v for k, v in self._sizes.items() if k in keep}

    # ---------------------------------------------------------------------------------------------- checking

    def parse(self, messages: Sequence[Any], *, head_cut: bool = False) -> list[TurnId]:
        """The turns that `messages` consist of, in order, each whole and exactly as generated; else
        HistoryError. With `head_cut` (the result of `load(last=n)`), the first turn may be only its last
        messages."""
        turns: list[TurnId] = []
        i, total = 0, len(messages)
        while i < total:
            first = messages[i]
            if not (isinstance(first, dict) and {"w", "t", "k", "n"} <= first.keys()):
                raise HistoryError("foreign", i, f"not a workload message: {_short(first)}")
            w, t, k, n = first["w"], first["t"], first["k"], first["n"]
            if not all(isinstance(v, int) for v in (w, t, k, n)):
                raise HistoryError("foreign", i, f"not a workload message: {_short(first)}")
            expected = self.turn(w, t)
            if len(expected) != n:
                raise HistoryError("altered", i, f"turn {(w, t)} has {len(expected)} messages, the message says {n}")
            if k != 0 and not (head_cut and i == 0):
                raise HistoryError("partial", i, f"turn {(w, t)} starts at its message {k} of {n}")
            if total - i < n - k:
                raise HistoryError("partial", i, f"turn {(w, t)}: only {total - i} of its {n - k} messages follow")
            for j in range(k, n):
                got = messages[i + j - k]
                if got != expected[j]:
                    kind = "partial" if isinstance(got, dict) and (got.get("w"), got.get("t")) != (w, t) else "altered"
                    raise HistoryError(kind, i + j - k, f"turn {(w, t)} message {j}: found {_short(got)}")
            turns.append((w, t))
            i += n - k
        return turns

    def counts(self, turns: Sequence[TurnId]) -> list[int]:
        """The message counts at which a history of `turns` can be cut between whole turns: 0, then after each."""
        out = [0]
        for w, t in turns:
            out.append(out[-1] + len(self.turn(w, t)))
        return out


# -------------------------------------------------------------------------------------------- comparing histories


def duplicates(turns: Sequence[TurnId]) -> list[TurnId]:
    """The turns that occur more than once."""
    seen: set[TurnId] = set()
    twice = []
    for turn in turns:
        if turn in seen:
            twice.append(turn)
        seen.add(turn)
    return twice


def out_of_order(turns: Sequence[TurnId]) -> list[str]:
    """Each writer's turns must come in increasing order: what does not."""
    last: dict[int, int] = {}
    wrong = []
    for w, t in turns:
        if w in last and t <= last[w]:
            wrong.append(f"writer {w}: turn {t} after turn {last[w]}")
        last[w] = t
    return wrong


def describe(expected: Sequence[TurnId], actual: Sequence[TurnId]) -> str:
    """How `actual` differs from `expected`, short enough for a failure message."""
    common = 0
    for e, a in zip(expected, actual):
        if e != a:
            break
        common += 1
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    return (
        f"expected {len(expected)} turns, found {len(actual)}; same for the first {common}; "
        f"then expected {list(expected[common : common + 3])}, found {list(actual[common : common + 3])}; "
        f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
        f"extra {extra[:5]}{'...' if len(extra) > 5 else ''} ({len(extra)}), duplicates {duplicates(actual)[:5]}"
    )


def _line(message: Any) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


def _text(rng: random.Random, size: int) -> str:
    head = "".join(rng.choices(_ALPHABET, k=min(size, 24)))
    body = base64.b64encode(rng.randbytes(max(0, size - len(head)) * 3 // 4)).decode()
    return head + body


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
