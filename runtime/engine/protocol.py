"""The interface every engine implements and the service is typed against: the batching engine, its sequential
twin and the SGLang engine. Engines compute on explicit states and never own a session: the caller commits a
returned state only when the whole call succeeded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import torch

from deltamem.runtime.engine.inputs import InputEncoder
from deltamem.runtime.engine.requests import EncodedInput, GenerationOutcome, GenerationRequest, TokenEvent


@runtime_checkable
class Engine(Protocol):
    inputs: InputEncoder  # the one place input is tokenised and checked
    backbone_fingerprint: str
    adapter_fingerprint: str
    keeps_context: bool  # whether generate can continue and return KV (the full and window context policies)
    max_batch: int  # requests run together at most
    state_bound: torch.Tensor  # [layers, heads, r]: the largest row norm a write can reach (model/state_bound.py)

    @property
    def slots_in_use(self) -> int:
        """Requests holding a state slot right now (metrics)."""

    def empty_state(self) -> torch.Tensor:
        """One session's empty memory, [layers, state heads, r, r] fp32."""

    def write(
        self, state: torch.Tensor, encoded: EncodedInput, still_wanted: Callable[[], bool] | None = None
    ) -> tuple[torch.Tensor, int]:
        """Write `encoded` into a copy of `state`; return the new state and the tokens written. Once
        `still_wanted()` is false the write stops within a chunk and raises CallCancelled."""

    def generate(
        self, state: torch.Tensor, request: GenerationRequest, context: object | None = None
    ) -> Iterator[TokenEvent | GenerationOutcome]:
        """A TokenEvent per generated token, then one GenerationOutcome; closing the iterator early abandons the
        call. `context` is KV to continue after (owned by the call from then on; engines that keep context)."""

    def encode_context(self, state: torch.Tensor, tokens: tuple[int, ...], position: int) -> object:
        """The KV of `tokens` read (not written) under `state` from absolute `position` (engines that keep
        context): how a kept context is rebuilt after the memory changed."""

    def close(self) -> None:
        """Stop; calls still in flight get an error."""
