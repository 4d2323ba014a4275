"""Request builders shared by the sync and asyncio clients, so both send exactly the same messages."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

from deltamem.v1 import memory_service_pb2 as pb

try:  # optional: propagation only matters to applications that trace
    from opentelemetry import propagate as _propagate
except ImportError:
    _propagate = None

ChatTurn = Mapping[str, str] | tuple[str, str]
# a string is raw text, a sequence of turns is a chat, a sequence of ints is token ids
Prompt = str | Sequence[ChatTurn] | Sequence[int]


class WriteMode(enum.IntEnum):
    """Which tokens of a Generate call are written into memory."""

    INPUT_AND_OUTPUT = pb.WRITE_MODE_INPUT_AND_OUTPUT
    INPUT_ONLY = pb.WRITE_MODE_INPUT_ONLY
    NONE = pb.WRITE_MODE_NONE


def to_input(prompt: Prompt) -> pb.Input:
    if isinstance(prompt, str):
        return pb.Input(text=prompt)
    items = list(prompt)
    if items and all(isinstance(item, int) for item in items):
        return pb.Input(token_ids=pb.TokenIds(ids=items))
    messages = []
    for item in items:
        if isinstance(item, Mapping):
            messages.append(pb.ChatMessage(role=item["role"], content=item["content"]))
        elif isinstance(item, tuple) and len(item) == 2:
            messages.append(pb.ChatMessage(role=item[0], content=item[1]))
        else:
            raise TypeError(f"a prompt is a str, a sequence of chat turns or a sequence of token ids; got {item!r}")
    return pb.Input(messages=pb.ChatMessages(messages=messages))


def generate_request(
    session_id: str,
    prompt: Prompt,
    *,
    max_new_tokens: int = 0,
    temperature: float = 0.0,
    top_p: float = 0.0,
    top_k: int = 0,
    seed: int | None = None,
    stop: Sequence[str] = (),
    write_mode: WriteMode = WriteMode.INPUT_AND_OUTPUT,
    ignore_end_of_turn: bool = False,
) -> pb.GenerateRequest:
    sampling = pb.SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k)
    if seed is not None:
        sampling.seed = seed
    return pb.GenerateRequest(
        session_id=session_id,
        input=to_input(prompt),
        sampling=sampling,
        max_new_tokens=max_new_tokens,
        stop=list(stop),
        write_mode=int(write_mode),
        ignore_end_of_turn=ignore_end_of_turn,
    )


def auth_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying an API key, or none."""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def call_metadata(static: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """`static` metadata plus the caller's W3C trace context (traceparent, tracestate, baggage) when the
    application uses OpenTelemetry, so the server's spans join the caller's trace. The client itself needs only
    grpcio and protobuf: without opentelemetry installed, or outside any span, nothing is added."""
    if _propagate is None:
        return static
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    return static + tuple(carrier.items()) if carrier else static
