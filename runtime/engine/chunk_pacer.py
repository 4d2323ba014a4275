"""How many tokens a long prefill (a big UpdateMemory, a long prompt) feeds per engine step.

Alone, it feeds the whole prefill chunk (most tokens/s). While other requests are running or waiting, it feeds
as many as aim its step at STEP_BUDGET_S: a step's cost grows with the context its chunk attends to, and at
32k tokens of context one 512-token chunk once held every other session's next token for seconds (issue 17).
Measured limit (bench/fairness.py, docs/reliability.md): past ~10k tokens of context a forward costs about a
second whatever its chunk (attention reads the whole cache, and grouped-query keys are copied per head), so
the budget is not met there and short requests still wait about one such forward per step.
"""

from __future__ import annotations

STEP_BUDGET_S = 0.1
MIN_CHUNK = 16


class ChunkPacer:
    def __init__(self, max_chunk: int):
        self.max_chunk = max_chunk
        self.contended_chunk = max_chunk

    def size(self, contended: bool) -> int:
        return self.contended_chunk if contended else self.max_chunk

    def observe(self, tokens: int, seconds: float, contended: bool) -> None:
        """A long prefill step fed `tokens` in `seconds`: aim the next contended chunk at the budget (its cost is
        close to linear in the tokens at a given context)."""
        if not contended or seconds <= 0:
            return
        aimed = int(tokens * STEP_BUDGET_S / seconds)
        self.contended_chunk = max(MIN_CHUNK, min(self.max_chunk, aimed))
