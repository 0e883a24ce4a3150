"""Helpers shared by the test modules (imported as `_helpers`; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

try:
    from cryptography.fernet import Fernet
except ImportError:  # the crypto extra is not installed: the encrypted formats are not tested
    Fernet = None

# The four ways a conversation is stored, as codec options; the `options` fixture (conftest.py) runs a test in each.
KEY: bytes = Fernet.generate_key() if Fernet is not None else b""
FORMATS: dict[str, dict[str, Any]] = {
    "plain": {},
    "gzip": {"compressed": True},
    "fernet": {"fernet_key": KEY},
    "gzip+fernet": {"compressed": True, "fernet_key": KEY},
}


def reference(x: Any) -> Any:
    """What the original design (stdlib json) gives back for `x` after a save and a load."""
    return json.loads(json.dumps(x))


def _where(chain: Any) -> str:
    parts = []
    while chain is not None:
        chain, part = chain
        parts.append(part)
    return "x" + "".join(reversed(parts))


def assert_same(actual: Any, expected: Any) -> None:
    """`actual` equals `expected` with the same types at every level (bool stays bool, int stays int, float
    stays float, dict keys in the same order); floats compare by repr, so -0.0 != 0.0 and nan == nan.

    Iterative, so that it works on nesting deeper than the interpreter's recursion limit (where `==` on
    lists raises RecursionError).
    """
    stack: list[tuple[Any, Any, Any]] = [(actual, expected, None)]
    while stack:
        a, e, chain = stack.pop()
        if type(a) is not type(e):
            raise AssertionError(f"{_where(chain)}: {type(a).__name__} {a!r:.80} != {type(e).__name__} {e!r:.80}")
        if type(e) is float:
            if not ((math.isnan(a) and math.isnan(e)) or repr(a) == repr(e)):
                raise AssertionError(f"{_where(chain)}: {a!r} != {e!r}")
        elif type(e) is list:
            if len(a) != len(e):
                raise AssertionError(f"{_where(chain)}: list of {len(a)} != list of {len(e)}")
            stack.extend((ai, ei, (chain, f"[{i}]")) for i, (ai, ei) in enumerate(zip(a, e)))
        elif type(e) is dict:
            if list(a) != list(e):
                raise AssertionError(f"{_where(chain)}: keys {list(a)!r:.200} != {list(e)!r:.200}")
            stack.extend((a[k], e[k], (chain, f"[{k!r}]")) for k in e)
        elif a != e:
            raise AssertionError(f"{_where(chain)}: {a!r:.200} != {e!r:.200}")


def nested_lists(depth: int) -> list[Any]:
    """`depth` lists, each holding the next one; the innermost is empty."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def nested_dicts(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def folder_listing(path: Path) -> list[str]:
    """Every entry of the folder holding `path`, but the conversation's index (`<name>.idx`, a cache that a save
    of more than one frame writes): shows a leftover temporary file."""
    return sorted(name for name in os.listdir(path.parent) if name != path.name + ".idx")


# ---------------------------------------------------------------------------- hypothesis strategies

# Every code point, lone surrogates included (the stdlib writes them as \udXXX escapes and reads them back).
any_text = st.text(alphabet=st.characters(exclude_categories=()))
ints = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**100), max_value=10**100),
    st.sampled_from([0, -1, 2**53, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**100, -(10**100)]),
)
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, sys.float_info.max, 1e16, 1e-7, 0.1]),
)
scalars = st.one_of(st.none(), st.booleans(), ints, floats, any_text)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=8), st.dictionaries(any_text, children, max_size=8)),
    max_leaves=40,
)
