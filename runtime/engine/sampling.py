"""User-facing sampling parameters, validated, and the choice of the next token from logits."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deltamem.runtime.errors import InvalidRequest, NonFiniteOutput

MAX_TEMPERATURE = 10.0
# below this a temperature is 0 in float32 (logits / t would be 0/0): sampling that cold is greedy
GREEDY_BELOW = torch.finfo(torch.float32).tiny


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= MAX_TEMPERATURE:
            raise InvalidRequest(f"temperature must be in [0, {MAX_TEMPERATURE}], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequest(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise InvalidRequest(f"top_k must be >= 0, got {self.top_k}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW or self.top_k == 1


def make_generator(params: SamplingParams) -> torch.Generator | None:
    if params.is_greedy:
        return None
    generator = torch.Generator()
    if params.seed is None:
        generator.seed()
    else:
        generator.manual_seed(params.seed)
    return generator


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """logits: [V] → the next token id. Safe for every accepted parameter: logits are shifted so their maximum is 0
    before the temperature divides them (a temperature of 1e-38 then sends the others to -inf, never the maximum
    to inf), and NaN logits are never chosen; logits with no finite value raise NonFiniteOutput."""
    lowest = float("-inf")
    logits = logits.float().nan_to_num(nan=lowest, posinf=lowest, neginf=lowest)  # NaN and +inf lose
    top = logits.max()
    if top == lowest:
        raise NonFiniteOutput("the model's output is not finite (NaN or infinite memory?): nothing can be sampled")
    if params.is_greedy:
        return int(torch.argmax(logits))
    logits = (logits - top) / params.temperature
    if params.top_k:
        kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the token that crosses it included)
        drop = sorted_probs.cumsum(0) - sorted_probs >= params.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))
