"""One request inside the batching engine: what it feeds, where it stands, and the queue its caller reads.

A job is fully described when it is made (its kind never changes afterwards), then handed to the scheduler; from
then on only the engine's loop thread touches it, except `events` (the caller reads it) and `cancelled` (the
caller sets it).
"""

from __future__ import annotations

import enum
import queue
import threading
from dataclasses import dataclass, field

import torch

from deltamem.runtime.engine.detokenizer import IncrementalDetokenizer
from deltamem.runtime.engine.job_trace import NO_TRACE, NoTrace
from deltamem.runtime.engine.kv import SequenceKV
from deltamem.runtime.engine.requests import GenerationRequest


class JobKind(enum.Enum):
    GENERATE = "generate"
    WRITE = "write"  # UpdateMemory: the result is the state
    REENCODE = "context"  # a read-only prefill whose result is the KV (a kept context rebuilt)


class Phase(enum.Enum):
    PREFILL = "prefill"  # feeding the input, chunk by chunk
    DECODE = "decode"  # one sampled token per step
    FEED_LAST = "feed_last"  # generation ended: the last token is fed so that it is written / kept
    OUTPUT_MESSAGE = "output_message"  # message_mean: the output is written as one more message
    DONE = "done"


@dataclass
class Decoding:
    """A generation's progress: what it sampled so far and how it samples and detokenises the next token."""

    detok: IncrementalDetokenizer
    generator: torch.Generator | None
    generated: list[int] = field(default_factory=list)
    next_token: int | None = None  # fed at the next decode step
    finish: str = ""  # the finish reason, once generation ended


@dataclass
class Job:
    kind: JobKind
    tokens: tuple[int, ...]
    message_ids: tuple[int, ...]
    write_input: bool
    initial_state: torch.Tensor  # [L, N, r, r] fp32 on the engine's device
    kv: SequenceKV
    request: GenerationRequest | None = None  # generations only
    decoding: Decoding | None = None  # generations only
    trace: NoTrace = NO_TRACE  # its spans, when tracing is on
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    slot: int = -1  # its state-pool slot while admitted
    phase: Phase = Phase.PREFILL
    fed: int = 0  # input tokens processed
    base: int = field(init=False)  # tokens already in `kv` when the job started (a kept context)

    def __post_init__(self) -> None:
        self.base = self.kv.length

    @property
    def is_finished(self) -> bool:
        return self.phase is Phase.DONE or self.cancelled.is_set()

    def deliver(self, event) -> None:
        """Hand the caller an event (a token, the outcome, the result of a write or re-encoding)."""
        self.events.put(event)

    def fail(self, error: BaseException) -> None:
        """End the job with `error`, which its caller raises."""
        self.trace.failed(error)
        self.events.put(error)
        self.phase = Phase.DONE

    def next_event(self, timeout: float | None = None):
        """The caller's side: the next event, raising the job's error if it failed (queue.Empty after `timeout`
        seconds without one)."""
        event = self.events.get(timeout=timeout)
        if isinstance(event, BaseException):
            raise event
        return event
