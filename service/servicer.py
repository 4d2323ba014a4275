"""MemoryService: translates requests into engine and session calls and results back into responses."""

from __future__ import annotations

import dataclasses
import logging

import grpc

from deltamem.runtime.batch_engine import BatchEngine
from deltamem.runtime.context import SessionContext, chat_continuation, extend_context
from deltamem.runtime.engine import GenerationOutcome, GenerationRequest
from deltamem.runtime.errors import InvalidRequest
from deltamem.runtime.sessions import SessionManager, check_session_id
from deltamem.service import convert
from deltamem.service.errors import map_errors
from deltamem.v1 import memory_service_pb2 as pb
from deltamem.v1 import memory_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

MAX_STOP_SEQUENCES = 8
MAX_STOP_BYTES = 256
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


class CallAbandoned(Exception):
    """The client cancelled or the deadline passed: the call ends without committing anything."""


class MemoryServicer(pb_grpc.MemoryServiceServicer):
    def __init__(self, engine: BatchEngine, sessions: SessionManager):
        self.engine = engine
        self.sessions = sessions

    @map_errors
    def CreateSession(self, request, context):
        info = self.sessions.create(
            dict(request.metadata), convert.context_policy(request.context_policy), request.window_tokens
        )
        return pb.CreateSessionResponse(session=convert.session(info))

    @map_errors
    def Generate(self, request, context):
        check_session_id(request.session_id)
        write_input, write_output = convert.write_mode(request.write_mode)
        stop = tuple(request.stop)
        if len(stop) > MAX_STOP_SEQUENCES:
            raise InvalidRequest(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed, got {len(stop)}")
        if any(not s or len(s.encode()) > MAX_STOP_BYTES for s in stop):
            raise InvalidRequest(f"each stop sequence must be 1 to {MAX_STOP_BYTES} bytes")
        sampling = convert.sampling(request.sampling)
        with self.sessions.mutation(request.session_id) as mutation:
            keeps = mutation.info.context_policy != "none"
            kept = self._current_context(mutation) if keeps else None
            turns = [(m.role, m.content) for m in request.input.messages.messages]
            if keeps and request.input.WhichOneof("kind") == "messages":
                self.engine.check_chat(turns)
                prompt = chat_continuation(self.engine.tokenizer, kept, turns)
            else:
                prompt = convert.encoded_input(self.engine, request.input, add_generation_prompt=True)
            generation = GenerationRequest(
                prompt_ids=prompt.ids,
                prompt_message_ids=prompt.message_ids,
                sampling=sampling,
                max_new_tokens=request.max_new_tokens or convert.DEFAULT_MAX_NEW_TOKENS,
                stop=stop,
                write_input=write_input,
                write_output=write_output,
                ignore_end_of_turn=request.ignore_end_of_turn,
                keep_context=keeps,
            )
            if keeps:
                events = self.engine.generate(mutation.state, generation, kept.kv.clone() if kept else None)
            else:
                events = self.engine.generate(mutation.state, generation)
            generated: list[int] = []
            try:
                for event in events:
                    if not context.is_active():
                        raise CallAbandoned()
                    if not isinstance(event, GenerationOutcome):
                        generated.extend(event.token_ids)
                        yield pb.GenerateResponse(delta=pb.TokenDelta(text=event.text, token_ids=event.token_ids))
                        continue
                    written = event.written_tokens
                    new_context = None
                    if keeps:
                        reply = [("assistant", event.text)] if turns else []
                        new_context = extend_context(
                            kept,
                            event.context,
                            prompt.ids + tuple(generated),
                            [*turns, *reply] if request.input.WhichOneof("kind") == "messages" else [],
                            mutation.info.memory_version + (1 if written else 0),
                            mutation.info.window_tokens or None,
                        )
                    info = mutation.commit(event.state if written else None, written, new_context)
                    yield pb.GenerateResponse(
                        result=pb.GenerateResult(
                            finish_reason=convert.FINISH_REASONS[event.finish_reason],
                            usage=pb.Usage(
                                prompt_tokens=event.prompt_tokens,
                                generated_tokens=event.generated_tokens,
                                written_tokens=written,
                            ),
                            memory_version=info.memory_version,
                            text=event.text,
                        )
                    )
            except CallAbandoned:
                log.info(
                    "Generate on %s abandoned by the client; memory left at version %d",
                    request.session_id,
                    mutation.info.memory_version,
                )
            finally:
                events.close()

    def _current_context(self, mutation) -> SessionContext | None:
        """The session's kept context, re-encoded read-only under the current memory if the memory changed since
        its KV was computed (so no KV from another memory is ever attended to)."""
        kept = mutation.context
        if kept is None or kept.memory_version == mutation.info.memory_version:
            return kept
        kv = self.engine.encode_context(mutation.state, kept.tokens, kept.start_position)
        return dataclasses.replace(kept, kv=kv, memory_version=mutation.info.memory_version)

    @map_errors
    def UpdateMemory(self, request, context):
        check_session_id(request.session_id)
        encoded = convert.encoded_input(self.engine, request.input, add_generation_prompt=False)
        with self.sessions.mutation(request.session_id) as mutation:
            new_state, written = self.engine.write(mutation.state, encoded)
            if not context.is_active():
                context.abort(grpc.StatusCode.CANCELLED, "the call was cancelled; nothing was written")
            # the kept context stays; its KV is re-encoded under the new memory at the next Generate
            info = mutation.commit(new_state, written, mutation.context)
        return pb.UpdateMemoryResponse(tokens_written=written, memory_version=info.memory_version)

    @map_errors
    def ReadState(self, request, context):
        info, state = self.sessions.snapshot(request.session_id)
        return pb.ReadStateResponse(
            session=convert.session(info),
            state=convert.memory_state(state, self.engine, request.summary_only),
        )

    @map_errors
    def ForkSession(self, request, context):
        info = self.sessions.fork(request.session_id, dict(request.metadata))
        return pb.ForkSessionResponse(session=convert.session(info))

    @map_errors
    def DeleteSession(self, request, context):
        self.sessions.delete(request.session_id)
        return pb.DeleteSessionResponse()

    @map_errors
    def ListSessions(self, request, context):
        if request.page_size > MAX_PAGE_SIZE:
            raise InvalidRequest(f"page_size must be at most {MAX_PAGE_SIZE}, got {request.page_size}")
        after = convert.page_key(request.page_token)
        page, has_more = self.sessions.list(after, request.page_size or DEFAULT_PAGE_SIZE)
        return pb.ListSessionsResponse(
            sessions=[convert.session(info) for info in page],
            next_page_token=convert.page_token(page[-1]) if has_more else "",
        )
