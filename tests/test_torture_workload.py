"""The torture suites' workload (torture/workload.py): turns are the same in every process, the checker catches
what it is meant to catch, and a turn's bytes are what the codec writes (the kill suite compares torn tails with
them)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest
from conversation_codec import ConversationCodec

from torture.workload import HistoryError, Shape, Workload, describe, duplicates, out_of_order

SHAPE = Shape(multi=0.5, medium=0.2, big=0.05, big_bytes=(20_000, 40_000))


def test_turns_are_the_same_for_the_same_seed_and_differ_otherwise() -> None:
    a, b, c = Workload(7, SHAPE), Workload(7, SHAPE), Workload(8, SHAPE)
    assert [a.turn(3, t) for t in range(50)] == [b.turn(3, t) for t in range(50)]
    assert [a.turn(3, t) for t in range(50)] != [c.turn(3, t) for t in range(50)]
    assert a.turn(3, 0) != a.turn(4, 0)
    sizes = {len(a.turn(1, t)) for t in range(200)}
    assert sizes == {1, 2, 3, 4, 5}


def test_parse_gives_the_turns_back() -> None:
    w = Workload(1, SHAPE)
    turns = [(1, 0), (2, 0), (1, 1), (2, 1), (0, 5)]
    assert w.parse(w.messages(turns)) == turns
    assert w.parse([]) == []


def _multi(w: Workload) -> tuple[int, int]:
    return next((1, t) for t in range(100) if len(w.turn(1, t)) >= 3)


@pytest.mark.parametrize(
    ("damage", "kind"),
    [
        (lambda m, i: m[:i] + m[i + 1 :], "partial"),  # a message of a turn missing
        (lambda m, i: m[: i + 1], "partial"),  # the turn cut short at the end
        (lambda m, i: [*m[:i], m[i + 1], m[i], *m[i + 2 :]], "partial"),  # two messages swapped
        (lambda m, i: [*m[:i], {**m[i], "content": "x"}, *m[i + 1 :]], "altered"),
        (lambda m, i: [*m[:i], {"role": "user"}, *m[i:]], "foreign"),
        (lambda m, i: [*m[:i], "text", *m[i:]], "foreign"),
    ],
)
def test_parse_catches_damage(damage: Any, kind: str) -> None:
    w = Workload(2, SHAPE)
    turns = [(2, 0), _multi(w), (2, 1)]
    messages = w.messages(turns)
    i = len(w.turn(2, 0))  # the first message of the turn of several
    with pytest.raises(HistoryError) as caught:
        w.parse(damage(messages, i))
    assert caught.value.kind == kind


def test_parse_with_head_cut_accepts_the_end_of_a_turn_only_first() -> None:
    w = Workload(3, SHAPE)
    turn = _multi(w)
    messages = w.messages([turn, (3, 0)])
    assert w.parse(messages[1:], head_cut=True) == [turn, (3, 0)]
    with pytest.raises(HistoryError):
        w.parse(messages[1:])
    with pytest.raises(HistoryError):
        w.parse(messages[:-1] + messages[1:2], head_cut=True)


def test_the_helpers_name_what_is_wrong() -> None:
    assert duplicates([(1, 0), (1, 1), (1, 0)]) == [(1, 0)]
    assert out_of_order([(1, 0), (2, 5), (1, 2), (2, 4)]) == ["writer 2: turn 4 after turn 5"]
    assert "missing [(1, 1)]" in describe([(1, 0), (1, 1)], [(1, 0)])


def test_stored_bytes_are_what_the_codec_appends(tmp_path: Path) -> None:
    w = Workload(4, SHAPE)
    turns = [(5, t) for t in range(40)]
    plain, compressed = tmp_path / "p.jsonl", tmp_path / "g.jsonl.gz"
    for turn in turns:
        ConversationCodec(plain).append_turn(w.turn(*turn))
        ConversationCodec(compressed, compressed=True).append_turn(w.turn(*turn))
    assert plain.read_bytes() == b"".join(w.stored_plain(*turn) for turn in turns)
    assert gzip.decompress(compressed.read_bytes()) == b"".join(w.jsonl(*turn) for turn in turns)
    assert all(w.size(*turn) == len(w.jsonl(*turn)) for turn in turns)
