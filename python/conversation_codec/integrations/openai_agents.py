"""OpenAI Agents SDK memory: `CodecSession`, a `Session` whose items live in a conversation file.

Each `add_items()` call is appended as one turn, all or nothing, without rewriting the file; the Runner makes one
call per step of a run (the user's input, then each model response with its tool calls and their outputs together,
then the final answer), so a tool output is always in the turn of the call that produced it. `get_items(limit)`
keeps the protocol's exact count (the SDK itself compares the last `limit` items with what it wrote when it resumes
or rewinds a write); `history_limit` gives the Runner a window of whole turns instead (docs/INTEGRATIONS.md).
"""

from __future__ import annotations

import os
from typing import Any

from ..sessions import SessionCodec, SessionStore

try:
    from agents.memory import SessionSettings
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "conversation_codec.integrations.openai_agents needs the OpenAI Agents SDK: "
        'pip install "conversation-codec[openai-agents]"'
    ) from exc

__all__ = ["CodecSession"]

Item = Any  # the SDK's TResponseInputItem: a JSON dict, stored as given


class CodecSession:
    """A session of the OpenAI Agents SDK (`Runner.run(agent, input, session=...)`) kept in `store`, a
    `SessionStore` or the folder of one (with the codec's default options; pass a store for encryption or gzip).

    `get_items(limit)` returns the latest `limit` items exactly, as the SDK's own sessions do (`limit` defaults to
    `session_settings.limit`). With `history_limit=n` and no such limit, `get_items()` (what the Runner reads
    before each run) returns the last `n` items extended back to the start of their turn: never a tool output
    without its call. Several processes may share one session: appends take turns on the file's lock.
    """

    def __init__(
        self,
        session_id: str,
        store: SessionStore | str | os.PathLike[str],
        *,
        session_settings: SessionSettings | None = None,
        history_limit: int | None = None,
    ) -> None:
        if history_limit is not None and (isinstance(history_limit, bool) or not isinstance(history_limit, int)):
            raise TypeError(f"history_limit must be an int or None, not {type(history_limit).__name__}")
        self.session_id = session_id
        self.session_settings = session_settings if session_settings is not None else SessionSettings()
        self.history_limit = history_limit
        self.store = store if isinstance(store, SessionStore) else SessionStore(store)
        self.codec: SessionCodec = self.store.conversation(session_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.session_id!r}, {self.store!r})"

    async def get_items(self, limit: int | None = None) -> list[Item]:
        """The latest `limit` items in chronological order (all of them for None; [] for 0 or less)."""
        if limit is None:
            limit = self.session_settings.limit
        if limit is None:
            if self.history_limit is None:
                return await self.codec.aload()
            return await self.codec.aload(max(self.history_limit, 0), whole_turns=True)
        return await self.codec.aload(max(limit, 0))

    async def add_items(self, items: list[Item]) -> None:
        """Append `items` as one turn: written whole or not at all, without rewriting the file."""
        await self.codec.aappend_turn(list(items))

    async def pop_item(self) -> Item | None:
        """Remove and return the most recent item (None when the session is empty); the file is cut, not
        rewritten."""
        try:
            return await self.codec.apop()
        except IndexError:
            return None

    async def pop_turn(self) -> list[Item]:
        """Remove and return the items of the last `add_items()` call ([] when the session is empty)."""
        return await self.codec.apop_turn()

    async def clear_session(self) -> None:
        """Remove every item: the session's file and the files beside it are deleted."""
        await self.store.adelete(self.session_id, missing_ok=True)

    async def fork(self, session_id: str) -> CodecSession:
        """A new session `session_id` in the same store holding a copy of this one's items (FileExistsError if
        it exists): a branch of the conversation that goes on independently."""
        target = self.store.conversation(session_id)
        await self.codec.afork(target.path)
        return CodecSession(
            session_id, self.store, session_settings=self.session_settings, history_limit=self.history_limit
        )
