"""Python code that runs in the middle of an encode, and changes what the encoder is walking.

A dict subclass's items() and a list subclass's __iter__ run while the encoder is inside the enclosing
containers; they (or another thread, while they release the GIL) may clear or mutate those containers. The encoder
must never read freed memory, and must write what the stdlib's encoder writes: lists are re-read at every step,
dicts and items() lists as the stdlib iterates them. After orjson's test/test_reentrant.py; several of these
crashed (SIGSEGV) or read freed memory before the encoder held strong references and re-read sizes.
"""

from __future__ import annotations

import gc
import json
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conversation_codec import EncodeError, _core

# Up to 3.11 the stdlib's C encoder iterates a snapshot (PyMapping_Items) of every dict; from 3.12 it walks an
# exact dict live with PyDict_Next. We always snapshot, so compare with it only where it snapshots too.
STDLIB_SNAPSHOTS_DICTS = sys.version_info < (3, 12)


def encode(x: Any) -> str:
    data = bytes(_core.encode_lines([x]))
    assert data.endswith(b"\n")
    return data[:-1].decode()


def stdlib(x: Any) -> str:
    return json.dumps(x, ensure_ascii=False, separators=(",", ":"))


def test_items_clears_the_enclosing_list() -> None:
    def make() -> tuple[list[Any], list[Any]]:
        outer: list[Any] = []

        class ClearsOuter(dict):  # type: ignore[type-arg]
            def items(self) -> Any:
                outer.clear()
                return super().items()

        keep = [ClearsOuter(a=1), {"b": [2, "two"]}, [3], "four"]
        outer.extend(keep)
        return outer, keep

    outer, _keep = make()
    got = encode(outer)
    assert got == '[{"a":1}]'
    outer, _keep = make()
    assert got == stdlib(outer)


def test_items_clears_the_enclosing_list_holding_the_only_references() -> None:
    # Nothing but the list holds the items: clearing it frees them, the dict subclass itself included.
    outer: list[Any] = []

    class ClearsOuter(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            outer.clear()
            gc.collect()
            return [("a", "x" * 100)]

    outer.extend([ClearsOuter(a=1), {"b": ["y" * 100] * 50}, ["z" * 100] * 50])
    assert encode(outer) == '[{"a":"' + "x" * 100 + '"}]'


def test_items_mutates_its_own_dict() -> None:
    class MutatesSelf(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            view = super().items()
            self["added"] = True
            self.pop("a", None)
            return view  # a live view, turned into a list only after these changes, as the stdlib does

    x = [MutatesSelf(a=1, b=2), MutatesSelf(c=3)]
    got = encode(x)
    assert got == '[{"b":2,"added":true},{"c":3,"added":true}]'
    assert got == stdlib([MutatesSelf(a=1, b=2), MutatesSelf(c=3)])


def make_parent_mutation() -> dict[str, Any]:
    parent: dict[str, Any] = {}

    class MutatesParent(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            # Move "a" (ourselves) to the end, drop "b", change "c", add enough keys to resize the table.
            parent["a"] = parent.pop("a")
            parent.pop("b", None)
            parent["c"] = "changed"
            for i in range(100):
                parent[f"new{i}"] = i
            return super().items()

    parent.update(z=0, a=MutatesParent(k="v"), b=[1, 2], c="orig", d={"e": None})
    return parent


def test_items_mutates_the_parent_dict() -> None:
    # The enclosing dict is written as it was when its walk began: no key twice, none added or lost.
    got = encode(make_parent_mutation())
    assert got == '{"z":0,"a":{"k":"v"},"b":[1,2],"c":"orig","d":{"e":null}}'
    if STDLIB_SNAPSHOTS_DICTS:
        assert got == stdlib(make_parent_mutation())


def test_items_mutates_a_grandparent_dict_through_a_list() -> None:
    top: dict[str, Any] = {}

    class Mutates(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            top.clear()
            top.update({f"k{i}": i for i in range(50)})
            return super().items()

    top.update(first=[{"inner": [Mutates(m=1)]}], second="two", third=[3])
    assert encode(top) == '{"first":[{"inner":[{"m":1}]}],"second":"two","third":[3]}'


def test_items_clears_an_enclosing_items_list() -> None:
    # The outer subclass's items() returns a list it keeps; the inner one clears it mid-walk. As the stdlib's
    # list iterator, the walk sees the list shrink and stops; the pair being written stays alive meanwhile.
    kept: list[list[Any]] = []

    class KeepsItems(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            entries = [(k, v) for k, v in super().items()]
            kept.append(entries)
            return entries

    class ClearsKept(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            kept.pop().clear()
            gc.collect()
            return [("big", "x" * 1000), ("n", 7)]

    x = KeepsItems(first=ClearsKept(), second=["lost"] * 100, third="lost")
    assert encode([x]) == '[{"first":{"big":"' + "x" * 1000 + '","n":7}}]'


def test_items_returns_a_list_it_mutates_later() -> None:
    shared: list[Any] = []

    class Appends(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            shared.append(("late", 1))
            return []

    class ReturnsShared(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            shared[:] = [("a", Appends(q=0)), ("b", 2)]
            return shared

    # The stdlib's list iterator sees the pair appended during the walk: so do we (it is the same list).
    x = ReturnsShared(z=1)
    assert encode(x) == '{"a":{},"b":2,"late":1}'
    assert stdlib(ReturnsShared(z=1)) == '{"a":{},"b":2,"late":1}'


def test_list_subclass_iter_clears_the_enclosing_list() -> None:
    def make() -> tuple[list[Any], list[Any]]:
        outer: list[Any] = []

        class ClearsOuter(list):  # type: ignore[type-arg]
            def __iter__(self) -> Iterator[Any]:
                outer.clear()
                return super().__iter__()

        keep = [ClearsOuter([1, 2]), "lost", {"lost": True}]
        outer.extend(keep)
        return outer, keep

    outer, _keep = make()
    got = encode(outer)
    assert got == "[[1,2]]"
    outer, _keep = make()
    assert got == stdlib(outer)


def test_list_subclass_iter_clears_itself() -> None:
    class ClearsSelf(list):  # type: ignore[type-arg]
        def __iter__(self) -> Iterator[Any]:
            items = list(super().__iter__())
            self.clear()
            return iter(items)

    assert encode([ClearsSelf(["a", "b"]), 1]) == '[["a","b"],1]'
    assert encode([ClearsSelf(["a", "b"]), 1]) == stdlib([ClearsSelf(["a", "b"]), 1])


@pytest.mark.parametrize("base", [list, tuple])
def test_sequence_subclass_is_written_as_its_iter_yields(base: type) -> None:
    class Doubled(base):  # type: ignore[misc, valid-type]
        def __iter__(self) -> Iterator[Any]:
            for item in super().__iter__():
                yield item
                yield item

    x = {"d": Doubled([1, {"k": Doubled(["v"])}])}
    assert encode(x) == '{"d":[1,1,{"k":["v","v"]},{"k":["v","v"]}]}'
    assert encode(x) == stdlib(x)


def test_sequence_subclass_iter_raising_propagates() -> None:
    class Broken(list):  # type: ignore[type-arg]
        def __iter__(self) -> Iterator[Any]:
            raise KeyError("from __iter__")

    with pytest.raises(KeyError, match="from __iter__"):
        _core.encode_lines([[Broken([1])]])


def test_another_thread_mutates_while_items_waits() -> None:
    # items() waits on another thread (releasing the GIL) which clears the list and the dict being walked.
    outer: list[Any] = []
    parent: dict[str, Any] = {}

    def vandal() -> None:
        outer.clear()
        parent.clear()
        parent.update({f"t{i}": i for i in range(64)})
        gc.collect()

    class Waits(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            t = threading.Thread(target=vandal)
            t.start()
            t.join()
            return [("w", 1)]

    parent.update(a=Waits(), b=["x" * 50] * 20, c="c")
    outer.extend([parent, ["y" * 50] * 20, "tail"])
    assert encode(outer) == '[{"a":{"w":1},"b":' + json.dumps(["x" * 50] * 20, separators=(",", ":")) + ',"c":"c"}]'


def test_thread_mutates_continuously_while_items_sleeps() -> None:
    # A free-running thread mutates the containers whenever items() lets go of the GIL (time.sleep(0)).
    outer: list[Any] = []
    parent: dict[str, Any] = {}
    stop = threading.Event()

    class Sleeps(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            time.sleep(0)
            return super().items()

    pieces = [Sleeps(s=i) for i in range(8)]

    def vandal() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            if i % 2:
                outer.clear()
                parent.clear()
            else:
                outer[:] = [parent, *pieces, ["x"] * (i % 7)]
                parent.update({f"k{j}": pieces[j % 8] for j in range(i % 40)})
            time.sleep(0)

    outer[:] = [parent, *pieces]
    t = threading.Thread(target=vandal)
    t.start()
    try:
        deadline = time.monotonic() + 1
        runs = 0
        while time.monotonic() < deadline or runs < 50:
            runs += 1
            value = json.loads(encode(outer))
            assert isinstance(value, list)
    finally:
        stop.set()
        t.join()


def test_deep_recursion_through_items_is_refused() -> None:
    class Deeper(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            return [("next", Deeper(x=1))]

    with pytest.raises(EncodeError, match="deeper than 1024"):
        _core.encode_lines([[Deeper(x=1)]])


def test_items_returning_itself_is_circular() -> None:
    class Loop(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            return [("me", self)]

    with pytest.raises(EncodeError, match="circular"):
        _core.encode_lines([Loop(a=1)])


def test_items_that_is_not_pairs_raises_like_the_stdlib() -> None:
    class Bad(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            return [("a", 1), ("b", 2, 3)]

    with pytest.raises(ValueError, match="2-tuples"):
        json.dumps(Bad(a=1))
    with pytest.raises(ValueError, match="2-tuples"):
        _core.encode_lines([Bad(a=1)])


def test_a_finalizer_cannot_change_a_buffer_while_it_is_fed() -> None:
    # Up to 3.11 building a dict or list can start a garbage collection, which runs finalizers: one that writes
    # into the buffer being decoded must not run until feed() has finished reading it.
    buf = bytearray(b'{"a": [1, 2]}\n' * 50)

    class Vandal:
        def __del__(self) -> None:
            buf[:] = b"x" * len(buf)  # same size: allowed while the buffer is exported

    def make_garbage() -> None:
        v = Vandal()
        v.cycle = v  # type: ignore[attr-defined]

    feed = _core.LineDecoder().feed
    old = gc.get_threshold()
    gc.collect()
    gc.set_threshold(1)
    try:
        make_garbage()
        got = feed(buf)
    finally:
        gc.set_threshold(*old)
    gc.collect()
    assert got == [{"a": [1, 2]}] * 50
    assert buf == b"x" * len(buf)  # the finalizer did run, afterwards


def test_a_collection_due_at_the_very_call_of_feed_waits_until_it_returns() -> None:
    # The deterministic form of the test above: the collection is due at the next allocation, the first one feed()
    # makes. On 3.9 the GC pause itself allocated (it imported gc) and so started the collection it was there to
    # hold off, while the buffer was already borrowed (found by the cp39 wheel's run).
    buf = bytearray(b'{"a": [1, 2]}\n' * 50)

    class Vandal:
        def __del__(self) -> None:
            buf[:] = b"x" * len(buf)

    feed = _core.LineDecoder().feed
    old = gc.get_threshold()
    gc.collect()
    try:
        v = Vandal()
        v.cycle = v  # type: ignore[attr-defined]
        del v
        gc.set_threshold(max(gc.get_count()[0], 1))
        got = feed(buf)
    finally:
        gc.set_threshold(*old)
    gc.collect()
    assert got == [{"a": [1, 2]}] * 50
    assert buf == b"x" * len(buf)
