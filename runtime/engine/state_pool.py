"""The state pool: fixed-shape memory states addressed by slot, what a request in flight holds while it runs.

One tensor [capacity, layers, heads, r, r] fp32 on the model's device; the batching engine gathers its running
requests' slots for a forward and writes them back, and the SGLang backend keeps one in the mailbox it shares
with the model process. Allocation, free, fork (a slot copy: one state, whatever the history) and reset are the
whole interface; misuse (a double free, an unknown slot, a state of another shape) is an error, never silent
corruption of another request's memory.
"""

from __future__ import annotations

import threading

import torch


class SlotError(ValueError):
    """A slot was used that is not allocated, or freed twice."""


class PoolExhausted(RuntimeError):
    """Every slot is taken."""


class StatePool:
    """`states` is [capacity, *state_shape] fp32; slots are indices into it. Thread-safe bookkeeping."""

    def __init__(
        self,
        capacity: int,
        state_shape: tuple[int, ...],
        storage: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
    ):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        shape = (capacity, *state_shape)
        if storage is None:
            storage = torch.zeros(shape, dtype=torch.float32, device=device)
        elif tuple(storage.shape) != shape or storage.dtype != torch.float32:
            raise ValueError(f"storage must be float32 {list(shape)}, got {storage.dtype} {list(storage.shape)}")
        self.states = storage
        self.capacity = capacity
        self.state_shape = tuple(state_shape)
        self._free = list(range(capacity))
        self._used: set[int] = set()
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        return len(self._used)

    @property
    def num_free(self) -> int:
        return self.capacity - len(self._used)

    def _check(self, slot: int) -> None:
        if slot not in self._used:
            raise SlotError(f"slot {slot} is not allocated (capacity {self.capacity})")

    def alloc(self, state: torch.Tensor | None = None) -> int:
        """A free slot holding `state` (or zeros)."""
        if state is not None and tuple(state.shape) != self.state_shape:
            raise ValueError(f"a state of shape {list(state.shape)} does not fit this pool's {list(self.state_shape)}")
        with self._lock:
            if not self._free:
                raise PoolExhausted(f"all {self.capacity} state slots are in use")
            slot = self._free.pop(0)
            self._used.add(slot)
        if state is None:
            self.states[slot].zero_()
        else:
            self.states[slot].copy_(state)
        return slot

    def free(self, slot: int) -> None:
        with self._lock:
            if slot in self._used:
                self._used.remove(slot)
                self._free.append(slot)
                return
        if 0 <= slot < self.capacity:
            raise SlotError(f"slot {slot} is already free (double free)")
        raise SlotError(f"slot {slot} does not exist (capacity {self.capacity})")

    def fork(self, slot: int) -> int:
        """A new slot whose state is a copy of `slot`'s; later writes to either never reach the other."""
        self._check(slot)
        return self.alloc(self.states[slot])

    def reset(self, slot: int) -> None:
        """Back to the empty memory (zeros)."""
        self._check(slot)
        self.states[slot].zero_()

    def read(self, slot: int) -> torch.Tensor:
        """A copy of the slot's state, which the caller owns."""
        self._check(slot)
        return self.states[slot].clone()

    def write(self, slot: int, state: torch.Tensor) -> None:
        self._check(slot)
        self.states[slot].copy_(state)
