"""The model process's memory of every request in flight: a pool indexed by SGLang's request-pool row
(`req_pool_indices`), filled from the mailbox when a request starts and copied back after each forward that
wrote. No SGLang import: models.py translates a ForwardBatch into these calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deltamem.runtime.sglang_backend.batch_memory import BatchPlan
from deltamem.runtime.sglang_backend.mailbox import Mailbox, decode_rid


class RequestStates:
    """pool: [rows, L, N, r, r] fp32 on the model's device, grown to the largest request-pool row seen."""

    def __init__(self, state_shape: tuple[int, ...], device: torch.device | str, mailbox: Mailbox | None):
        self.state_shape = tuple(state_shape)
        self.device = torch.device(device)
        self.mailbox = mailbox
        self.pool = torch.zeros(0, *self.state_shape, dtype=torch.float32, device=self.device)

    def _ensure_rows(self, needed: int) -> None:
        if needed > self.pool.shape[0]:
            grown = torch.zeros(max(needed, 2 * self.pool.shape[0]), *self.state_shape, device=self.device)
            grown[: self.pool.shape[0]] = self.pool
            self.pool = grown

    def begin(
        self,
        rids: Sequence[str | None],
        rows: torch.Tensor,
        lengths: Sequence[int],
        prefix_lengths: Sequence[int] | None,
        decode: bool,
    ) -> BatchPlan:
        """Plan one forward. A request feeding its first tokens (prefix length 0) starts from its mailbox state,
        or from the empty memory if it is not ours; prompt tokens write if the request says so, decode tokens
        likewise."""
        flags = [decode_rid(rid) for rid in rids]
        rows = rows.to(self.device, torch.long)
        self._ensure_rows(int(rows.max()) + 1 if rows.numel() else 0)
        if not decode:
            for index, flag in enumerate(flags):
                if prefix_lengths is not None and prefix_lengths[index] != 0:
                    continue  # a later chunk of a prefill: the state is already in the pool
                row = int(rows[index])
                if flag is None or self.mailbox is None:
                    self.pool[row].zero_()
                else:
                    self.pool[row].copy_(self.mailbox.initial.states[flag.slot])
        writes = [
            flag is not None and (flag.write_decode if decode else flag.write_prompt) and self.mailbox is not None
            for flag in flags
        ]
        slots = [flag.slot if flag is not None else -1 for flag in flags]
        return BatchPlan(rows, list(lengths), torch.tensor(writes, device=self.device), decode, slots)

    def end(self, plan: BatchPlan) -> None:
        """Publish the states of the requests that wrote in this forward."""
        if self.mailbox is None:
            return
        writers = [i for i, slot in enumerate(plan.mailbox_slots) if slot >= 0 and bool(plan.writes[i])]
        if not writers:
            return
        states = self.pool[plan.rows[writers]].cpu()  # one device-to-host copy for the whole batch
        for state, index in zip(states, writers, strict=True):
            self.mailbox.result[plan.mailbox_slots[index]].copy_(state)
