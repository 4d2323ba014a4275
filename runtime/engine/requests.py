"""The engine's vocabulary: encoded input, what a client asks of a generation, the request the engine runs, and
the events and outcome it streams back."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from deltamem.runtime.engine.sampling import SamplingParams
from deltamem.runtime.errors import InvalidRequest

MAX_NEW_TOKENS = 4096
DEFAULT_MAX_NEW_TOKENS = 256
MAX_STOP_SEQUENCES = 8
MAX_STOP_BYTES = 256


@dataclass(frozen=True)
class EncodedInput:
    """Token ids, and for message_mean adapters the message each token belongs to (-1: never written); never empty,
    so no engine checks again."""

    ids: tuple[int, ...]
    message_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.ids:
            raise InvalidRequest("the input is empty: it has no tokens")
        if len(self.message_ids) != len(self.ids):
            raise InvalidRequest("message_ids must give one message id per token")

    @property
    def num_written(self) -> int:
        return sum(1 for m in self.message_ids if m >= 0)

    def tokens_written(self, writes_messages: bool) -> int:
        """Tokens a write of this input puts into memory: all of them, or only messages' under message_mean."""
        return self.num_written if writes_messages else len(self.ids)


@dataclass(frozen=True, kw_only=True)
class GenerationOptions:
    """What a client asks of a generation, apart from its prompt: checked here, once, before any work."""

    sampling: SamplingParams = SamplingParams()
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    stop: tuple[str, ...] = ()
    write_input: bool = True
    write_output: bool = True
    ignore_end_of_turn: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise InvalidRequest(f"max_new_tokens must be in [1, {MAX_NEW_TOKENS}], got {self.max_new_tokens}")
        if self.write_output and not self.write_input:
            raise InvalidRequest("writing the output without the input is not a supported write mode")
        if len(self.stop) > MAX_STOP_SEQUENCES:
            raise InvalidRequest(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed, got {len(self.stop)}")
        if any(not s or len(s.encode()) > MAX_STOP_BYTES for s in self.stop):
            raise InvalidRequest(f"each stop sequence must be 1 to {MAX_STOP_BYTES} bytes")


@dataclass(frozen=True)
class GenerationRequest(GenerationOptions):
    """A prompt with the options to generate from it: what an engine runs. The option fields are keyword-only."""

    prompt_ids: tuple[int, ...]
    _: dataclasses.KW_ONLY
    prompt_message_ids: tuple[int, ...] | None = None  # message_mean adapters: None = one message
    keep_context: bool = False  # return the KV of prompt + output (engines that keep context)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.prompt_ids:
            raise InvalidRequest("the input is empty: give at least one token")
        if self.prompt_message_ids is not None and len(self.prompt_message_ids) != len(self.prompt_ids):
            raise InvalidRequest("prompt_message_ids must give one message id per prompt token")

    @classmethod
    def of(cls, prompt: EncodedInput, options: GenerationOptions, keep_context: bool = False) -> GenerationRequest:
        fields = {f.name: getattr(options, f.name) for f in dataclasses.fields(GenerationOptions)}
        return cls(prompt_ids=prompt.ids, prompt_message_ids=prompt.message_ids, keep_context=keep_context, **fields)

    def tokens_written(self, num_generated: int, writes_messages: bool) -> int:
        """Tokens this generation writes: the prompt's (only its messages' under message_mean) and the output."""
        prompt = len(self.prompt_ids)
        if writes_messages and self.prompt_message_ids is not None:
            prompt = sum(1 for m in self.prompt_message_ids if m >= 0)
        return (prompt if self.write_input else 0) + (num_generated if self.write_output else 0)


@dataclass(frozen=True)
class TokenEvent:
    token_ids: tuple[int, ...]
    text: str


@dataclass(frozen=True)
class GenerationOutcome:
    state: torch.Tensor  # [L, N, r, r], the memory after the call; the caller owns it (no other reference)
    finish_reason: str  # "end_of_turn" | "stop_sequence" | "length"
    prompt_tokens: int
    generated_tokens: int
    written_tokens: int
    text: str
    # the request's KV with every prompt and generated token in it, when the request asked to keep it
    context: object | None = None
