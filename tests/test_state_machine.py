"""The Python API as a state machine, in every format: random runs of saves, appends (single and multi-message
turns), reads, verify() and repair(), by two codec objects on the same path (each with what it cached of the file),
a codec reopened, and a crash's leftovers at the end of the file, checked after every step against a model: a
plain list of the acknowledged messages.

After every step, every reader agrees with the model: load() == model, len() == len(model), load(last=n) ==
model[-n:], list(iter) == model, and verify() is ok; while a torn tail is at the end, each reader emits a
TornTailWarning and verify() reports its bytes, and the next writer (save, append, repair) moves them to
`<name>.torn-<offset>`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, ClassVar

from _helpers import any_text, assert_same, reference, scalars
from conversation_codec import ConversationCodec, TornTailWarning
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

# Messages as agents write them: dicts with a role and content (text, a scalar, or content blocks). A cut dict line
# is never valid JSON, so a plain turn cut short is always seen (docs/FORMAT.md 1.2; a cut number could be read as
# a whole, smaller number: that limit is the format's, not what this machine tests).
messages = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "user", "assistant", "tool"]),
        "content": st.one_of(
            any_text,
            scalars,
            st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": any_text}), max_size=3),
        ),
    },
    optional={"name": st.text(max_size=8), "n": st.integers()},
)
turns = st.lists(messages, min_size=2, max_size=4)


class Torn:
    """Bytes at the end of the file that no writer acknowledged: where they start, and what they are."""

    def __init__(self, offset: int, data: bytes) -> None:
        self.offset = offset
        self.data = data


class ConversationMachine(RuleBasedStateMachine):
    """Two codecs on one path and a model of what they acknowledged."""

    options: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="state-machine-"))
        self.path = self.dir / "c.jsonl"
        self.codecs = [self.new_codec(), self.new_codec()]
        self.model: list[Any] = []
        self.last_frame: tuple[int, int, int] | None = None  # (start, end, messages) of an append: to cut short
        self.torn: Torn | None = None
        self.side_files: set[str] = set()
        self.set_aside = ""  # the side file the last writer moved a torn tail to

    def new_codec(self) -> ConversationCodec:
        # No flush to disk: what is modelled here does not depend on it, and it keeps the runs fast.
        return ConversationCodec(self.path, durable=False, **self.options)

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    # ---- writers

    def written(self, write: Callable[[], Any], name: str) -> Any:
        """Runs a writer; a torn tail that was at the end must now be in its side file, and nothing else new."""
        event(f"{name}, with a torn tail to set aside" if self.torn is not None else name)
        result = write()
        names = set(os.listdir(self.dir)) - {self.path.name, self.path.name + ".idx"}
        new = names - self.side_files
        if self.torn is None:
            assert not new, f"a writer wrote {new} with no torn tail to set aside"
        else:
            assert len(new) == 1, f"the torn tail from byte {self.torn.offset} went to {new}"
            (side,) = new
            # <name>.torn-<offset>, or .torn-<offset>.<n> when a torn tail at that offset was set aside before
            assert side.split(".torn-")[1].split(".")[0] == str(self.torn.offset), side
            assert (self.dir / side).read_bytes() == self.torn.data
            self.torn = None
            self.set_aside = side
        self.side_files = names
        return result

    @rule(by=st.integers(0, 1), batch=st.lists(messages, max_size=6))
    def save(self, by: int, batch: list[Any]) -> None:
        self.written(lambda: self.codecs[by].save(iter(batch)), "save")
        self.model = [reference(m) for m in batch]
        self.last_frame = None

    @rule(by=st.integers(0, 1), message=messages)
    def append_message(self, by: int, message: Any) -> None:
        self.append(by, message, 1)

    @rule(by=st.integers(0, 1), turn=turns)
    def append_turn(self, by: int, turn: list[Any]) -> None:
        self.append(by, turn, len(turn))

    def append(self, by: int, turn: Any, count: int) -> None:
        start = self.torn.offset if self.torn is not None else self.size()  # a torn tail is cut off first
        self.written(lambda: self.codecs[by].append_turn(turn), "append")
        self.model += [reference(m) for m in (turn if isinstance(turn, list) else [turn])]
        self.last_frame = (start, self.size(), count)

    @rule(by=st.integers(0, 1))
    def repair(self, by: int) -> None:
        before = self.path.read_bytes() if self.path.exists() else None
        torn = self.torn
        written = self.written(self.codecs[by].repair, "repair")
        if torn is None:
            assert written == []
            assert (self.path.read_bytes() if self.path.exists() else None) == before, "repair() changed a sound file"
        else:
            assert [Path(name).name for name in written] == [self.set_aside]
            self.last_frame = None

    # ---- codecs

    @rule(which=st.integers(0, 1))
    def reopen(self, which: int) -> None:
        self.codecs[which] = self.new_codec()

    # ---- what a crash leaves

    def may_cut_at(self, offset: int) -> bool:
        """Whether a frame of this format may be left cut short at `offset`. An encrypted file's first frame may
        not: writers write it whole (as a save does), and cut there it cannot be told from the original design's
        one token under a wrong key (docs/FORMAT.md 3)."""
        return offset > 0 or "fernet_key" not in self.options

    @precondition(lambda self: self.torn is None and self.may_cut_at(self.size()))
    @rule(turn=st.one_of(messages.map(lambda m: [m]), turns), data=st.data())
    def crash_during_an_append(self, turn: list[Any], data: st.DataObject) -> None:
        """The start of a frame that a writer (of this very format) was killed in the middle of writing."""
        scratch = ConversationCodec(self.dir / "scratch" / "s.jsonl", durable=False, **self.options)
        scratch.save([])
        start = scratch.path.stat().st_size
        scratch.append_turn(turn if len(turn) > 1 else turn[0])
        frame = scratch.path.read_bytes()[start:]
        shutil.rmtree(scratch.path.parent)
        offset = self.size()
        cut = data.draw(st.integers(self.shortest_cut(frame, offset), self.longest_cut(frame, len(turn))), label="cut")
        with open(self.path, "ab") as f:
            f.write(frame[:cut])
        self.torn = Torn(offset, frame[:cut])
        self.last_frame = None

    @precondition(
        lambda self: self.torn is None and self.last_frame is not None and self.may_cut_at(self.last_frame[0])
    )
    @rule(data=st.data())
    def cut_the_last_append_short(self, data: st.DataObject) -> None:
        """The last append, cut short (a crash of a file system that lost the end of the write): it is no longer
        in the file, and readers return the conversation without it."""
        assert self.last_frame is not None
        start, end, count = self.last_frame
        assert end == self.size()
        frame = self.path.read_bytes()[start:end]
        cut = data.draw(st.integers(self.shortest_cut(frame, start), self.longest_cut(frame, count)), label="cut")
        os.truncate(self.path, start + cut)
        del self.model[len(self.model) - count :]
        self.torn = Torn(start, frame[:cut])
        self.last_frame = None

    @staticmethod
    def shortest_cut(frame: bytes, offset: int) -> int:
        # A file that holds only whitespace is blank (docs/FORMAT.md 1.2): a turn cut after its leading TAB, at
        # byte 0, leaves nothing to tell, and nothing to lose.
        return 1 if offset else len(frame) - len(frame.lstrip()) + 1

    def longest_cut(self, frame: bytes, count: int) -> int:
        # A plain single-message turn cut just before its line break is a whole line: the one cut no reader can
        # see (docs/FORMAT.md 1.2), so not one that this machine makes.
        plain_single = not self.options and count == 1
        return len(frame) - (2 if plain_single else 1)

    # ---- readers

    @rule(n=st.integers(0, 12))
    def load_last(self, n: int) -> None:
        # load(last=0) reads nothing, so it has nothing to warn of
        got = self.read(lambda: self.codecs[0].load(last=n), reads=n > 0)
        assert_same(got, self.model[-n:] if n else [])

    def read(self, call: Callable[[], Any], *, reads: bool = True) -> Any:
        """What a reader returns; it warns of a torn tail exactly when there is one (and it reads the file)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = call()
        torn = [w for w in caught if issubclass(w.category, TornTailWarning)]
        assert len(torn) == len(caught), [str(w.message) for w in caught]
        # (list(codec) warns twice: it calls len() first, for the list's size)
        assert bool(torn) == (self.torn is not None and reads), f"torn={self.torn is not None}, warnings {len(torn)}"
        return result

    @invariant()
    def every_reader_agrees_with_the_model(self) -> None:
        for codec in (self.codecs[0], self.new_codec()):
            assert_same(self.read(codec.load), self.model)
            assert self.read(lambda codec=codec: len(codec)) == len(self.model)
            for n in (1, 3, len(self.model) + 1):
                assert_same(self.read(lambda codec=codec, n=n: codec.load(last=n)), self.model[-n:])
            assert_same(self.read(lambda codec=codec: list(codec)), self.model)
        report = self.codecs[1].verify()
        torn_bytes = len(self.torn.data) if self.torn is not None else 0
        assert (report.ok, report.messages, report.torn_tail_bytes, report.errors) == (
            self.torn is None,
            len(self.model),
            torn_bytes,
            [],
        ), report

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


MACHINE_SETTINGS = settings(
    max_examples=20,
    stateful_step_count=20,
    deadline=None,
    derandomize=True,  # the same runs every time: CI fails only on a change of behaviour
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_the_api_against_a_model(options: dict[str, Any]) -> None:
    machine = type("Machine", (ConversationMachine,), {"options": options})
    run_state_machine_as_test(machine, settings=MACHINE_SETTINGS)
