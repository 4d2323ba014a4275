"""The model runner: one batched forward over the running jobs' chunks, reading and writing their pool slots.

Job b feeds chunks[b] (a ragged batch, right-padded); padded positions neither write memory nor become visible keys
(BatchKV's mask). The memory of every row is gathered from the state pool, updated by the kernels, and written
back, so between forwards a job's memory is its slot.
"""

from __future__ import annotations

import torch

from deltamem.runtime.engine.job import Job
from deltamem.runtime.engine.kv import BatchKV
from deltamem.runtime.engine.state_pool import StatePool
from deltamem.runtime.model.memory_model import MemoryModel


class ModelRunner:
    def __init__(self, model: MemoryModel, pool: StatePool, device: torch.device):
        self.model = model
        self.pool = pool
        self.device = device
        self.steps = 0  # forwards run, for tests and metrics
        self.max_batch_seen = 0

    def forward(
        self, jobs: list[Job], chunks: list[list[int]], writes: list[bool], messages: list[list[int]]
    ) -> torch.Tensor:
        """Feed chunks[b] to job b (writing when writes[b]; message ids for message_mean adapters); returns the
        logits at each job's last fed token, [B, V]."""
        lengths = [len(c) for c in chunks]
        width = max(lengths)
        ids = torch.zeros(len(jobs), width, dtype=torch.long, device=self.device)
        write_mask = torch.zeros(len(jobs), width, dtype=torch.bool, device=self.device)
        message_ids = torch.full((len(jobs), width), -1, dtype=torch.long, device=self.device)
        for b, (chunk, write, owners) in enumerate(zip(chunks, writes, messages, strict=True)):
            ids[b, : len(chunk)] = torch.tensor(chunk, device=self.device)
            write_mask[b, : len(chunk)] = write
            if write:
                message_ids[b, : len(chunk)] = torch.tensor(owners, device=self.device)
        kv = BatchKV([job.kv for job in jobs], lengths)
        slots = torch.tensor([job.slot for job in jobs], device=self.device)
        states = self.pool.states
        with torch.inference_mode():
            out = self.model(
                ids,
                states[slots],
                write=True,
                write_mask=None if self.model.writes_messages else write_mask,
                message_ids=message_ids if self.model.writes_messages else None,
                past_key_values=kv,
                use_cache=True,
                attention_mask=kv.attention_mask(width, self.device),
                position_ids=kv.position_ids(width, self.device),
                logits_at=torch.tensor([n - 1 for n in lengths], device=self.device),
            )
            states[slots] = out.state
        kv.commit()
        for job in jobs:
            job.trace.step(len(jobs))
        self.steps += 1
        self.max_batch_seen = max(self.max_batch_seen, len(jobs))
        return out.logits
