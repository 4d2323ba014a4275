"""A Generate or UpdateMemory call within a session: choosing the context, encoding the input, running the
engine and committing the result, with the memory, its version and the kept context published together.

The servicer only translates protobuf to these calls and their events back; the engine only computes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from deltamem.runtime.engine.inputs import UserInput
from deltamem.runtime.engine.protocol import Engine
from deltamem.runtime.engine.requests import GenerationOptions, GenerationOutcome, GenerationRequest, TokenEvent
from deltamem.runtime.errors import CallCancelled
from deltamem.runtime.sessions.kept_context import SessionContext, extend_context
from deltamem.runtime.sessions.manager import Mutation
from deltamem.runtime.sessions.records import SessionInfo


@dataclass(frozen=True)
class TurnResult:
    outcome: GenerationOutcome
    session: SessionInfo  # after the commit


def current_context(engine: Engine, mutation: Mutation) -> SessionContext | None:
    """The session's kept context, re-encoded read-only under the current memory if the memory changed since
    its KV was computed, so that no KV from another memory is ever attended to."""
    kept = mutation.context
    if kept is None or kept.memory_version == mutation.info.memory_version:
        return kept
    kv = engine.encode_context(mutation.state, kept.tokens, kept.start_position)
    return dataclasses.replace(kept, kv=kv, memory_version=mutation.info.memory_version)


def generate_in_session(
    engine: Engine,
    mutation: Mutation,
    given: UserInput,
    options: GenerationOptions,
    still_wanted: Callable[[], bool],
    receipt: tuple[str, Callable[[GenerationOutcome, list[int], SessionInfo], str]] | None = None,
) -> Iterator[TokenEvent | TurnResult]:
    """Stream a generation for the input `given`. Commits only if `still_wanted()` holds when the generation
    ends; closing early commits nothing. `receipt`: (request id, what a retry of it returns, given the outcome,
    the generated token ids and the committed session), stored with the commit."""
    keeps = mutation.info.context_policy != "none"
    kept = current_context(engine, mutation) if keeps else None
    prompt = engine.inputs.encode(given, add_generation_prompt=True, after=kept)
    request = GenerationRequest.of(prompt, options, keep_context=keeps)
    events = engine.generate(mutation.state, request, kept.kv.clone() if kept else None)
    generated: list[int] = []
    try:
        for event in events:
            if not isinstance(event, GenerationOutcome):
                generated.extend(event.token_ids)
                yield event
                continue
            if not still_wanted():
                return
            written = event.written_tokens
            new_context = None
            if keeps:
                turn = given.messages or ()
                reply = (("assistant", event.text),) if turn else ()
                new_context = extend_context(
                    kept,
                    event.context,
                    prompt.ids + tuple(generated),
                    turn + reply,
                    mutation.info.memory_version + (1 if written else 0),
                    mutation.info.window_tokens or None,
                )
            stored = None
            if receipt is not None:
                request_id, make = receipt
                stored = (request_id, lambda info, outcome=event, make=make: make(outcome, generated, info))
            info = mutation.commit(event.state if written else None, written, new_context, stored)
            yield TurnResult(event, info)
    finally:
        events.close()


def write_in_session(
    engine: Engine,
    mutation: Mutation,
    given: UserInput,
    still_wanted: Callable[[], bool],
    receipt: tuple[str, Callable[[int, SessionInfo], str]] | None = None,
) -> tuple[SessionInfo, int] | None:
    """UpdateMemory: write the input into memory only; returns the session after the commit and the tokens
    written, or None (nothing committed) if the call stopped being wanted. The kept context stays; its KV is
    re-encoded under the new memory at the next Generate. `receipt`: (request id, what a retry of it returns,
    given the tokens written and the committed session)."""
    encoded = engine.inputs.encode(given, add_generation_prompt=False)
    try:
        new_state, written = engine.write(mutation.state, encoded, still_wanted)
    except CallCancelled:
        return None
    if not still_wanted():
        return None
    stored = None
    if receipt is not None:
        request_id, make = receipt
        stored = (request_id, lambda info: make(written, info))
    return mutation.commit(new_state, written, mutation.context, stored), written
