"""The engine's vocabulary: encoded input, a generation request, and the events and outcome it streams back."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deltamem.runtime.engine.sampling import SamplingParams
from deltamem.runtime.errors import InvalidRequest

MAX_NEW_TOKENS = 4096


@dataclass(frozen=True)
class EncodedInput:
    """Token ids, and for message_mean adapters the message each token belongs to (-1: never written)."""

    ids: tuple[int, ...]
    message_ids: tuple[int, ...]

    @property
    def num_written(self) -> int:
        return sum(1 for m in self.message_ids if m >= 0)

    def tokens_written(self, writes_messages: bool) -> int:
        """Tokens a write of this input puts into memory: all of them, or only messages' under message_mean."""
        return self.num_written if writes_messages else len(self.ids)


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: tuple[int, ...]
    sampling: SamplingParams = SamplingParams()
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    write_input: bool = True
    write_output: bool = True
    ignore_end_of_turn: bool = False
    keep_context: bool = False  # return the KV of prompt + output (batched engine only)
    prompt_message_ids: tuple[int, ...] | None = None  # message_mean adapters: None = one message

    def tokens_written(self, num_generated: int, writes_messages: bool) -> int:
        """Tokens this generation writes: the prompt's (only its messages' under message_mean) and the output."""
        prompt = len(self.prompt_ids)
        if writes_messages and self.prompt_message_ids is not None:
            prompt = sum(1 for m in self.prompt_message_ids if m >= 0)
        return (prompt if self.write_input else 0) + (num_generated if self.write_output else 0)

    def __post_init__(self) -> None:
        if self.prompt_message_ids is not None and len(self.prompt_message_ids) != len(self.prompt_ids):
            raise InvalidRequest("prompt_message_ids must give one message id per prompt token")
        if not self.prompt_ids:
            raise InvalidRequest("the input is empty: give at least one token")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise InvalidRequest(f"max_new_tokens must be in [1, {MAX_NEW_TOKENS}], got {self.max_new_tokens}")
        if self.write_output and not self.write_input:
            raise InvalidRequest("writing the output without the input is not a supported write mode")


@dataclass(frozen=True)
class TokenEvent:
    token_ids: tuple[int, ...]
    text: str


def token_events(detok, token: int, end_of_turn_ids, request: GenerationRequest, generated: int):
    """(events, finish reason) for one sampled token, the `generated`-th: the reason is None while generation goes
    on. A stop sequence or the end of the turn ends it with the rest of the text in this token's event; reaching
    max_new_tokens ends it after this token, the detokenizer's held-back tail following as an event of its own.
    Every engine streams by this one rule."""
    text = detok.add(token)
    if detok.stopped:
        return [TokenEvent((token,), text + detok.flush())], "stop_sequence"
    if token in end_of_turn_ids and not request.ignore_end_of_turn:
        return [TokenEvent((token,), text + detok.flush())], "end_of_turn"
    if generated >= request.max_new_tokens:
        tail = detok.flush()
        return [TokenEvent((token,), text), *([TokenEvent((), tail)] if tail else [])], "length"
    return [TokenEvent((token,), text)], None


@dataclass(frozen=True)
class GenerationOutcome:
    state: torch.Tensor  # [L, N, r, r], the memory after the call
    finish_reason: str  # "end_of_turn" | "stop_sequence" | "length"
    prompt_tokens: int
    generated_tokens: int
    written_tokens: int
    text: str
    # the request's KV with every prompt and generated token in it, when the request asked to keep it
    context: object | None = None
