"""Kept context (the `full` and `window(n)` policies): a session's recent tokens, their KV and chat turns (a new
turn's tokens continue them: engine/inputs.py).

A context is a cache; the memory is the durable record. Its KV was computed under the memory's evolution up to
`memory_version`, and it is reused only while the session's memory is still at that version: after anything
else changes the memory (UpdateMemory, say), the kept tokens are re-encoded, read-only, under the new memory.
So no request ever attends to KV computed under a memory other than its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from deltamem.runtime.engine.kv import SequenceKV


@dataclass(frozen=True)
class SessionContext:
    tokens: tuple[int, ...]  # the kept tokens, oldest first (window: only the newest n)
    messages: tuple[tuple[str, str], ...]  # the chat turns so far, to render continuations with the template
    total_tokens: int  # tokens fed over the context's life: the absolute position of the next one
    kv: SequenceKV  # never modified in place: requests continue from a clone
    memory_version: int  # the memory version this KV ends with

    @property
    def start_position(self) -> int:
        return self.total_tokens - len(self.tokens)


def extend_context(
    context: SessionContext | None,
    kv: SequenceKV,
    fed: Sequence[int],
    messages: Sequence[tuple[str, str]],
    memory_version: int,
    window: int | None,
) -> SessionContext:
    """The context after a request fed `fed` tokens (prompt and output) into `kv`; `window` keeps the newest n."""
    tokens = (context.tokens if context else ()) + tuple(fed)
    total = (context.total_tokens if context else 0) + len(fed)
    if window is not None and len(tokens) > window:
        tokens = tokens[-window:]
        kv.keep_last(window)
    history = (context.messages if context else ()) + tuple(messages)
    return SessionContext(tokens, history, total, kv, memory_version)
