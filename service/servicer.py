"""MemoryService: translates requests into engine and session calls and results back into responses."""

from __future__ import annotations

import logging
import time

import grpc

from deltamem.runtime import tracing
from deltamem.runtime.engine.protocol import Engine
from deltamem.runtime.errors import Draining, InvalidRequest
from deltamem.runtime.sessions.calls import TurnResult, generate_in_session, write_in_session
from deltamem.runtime.sessions.manager import SessionManager
from deltamem.runtime.sessions.state_codec import StateIdentity, import_state
from deltamem.service import convert, receipts
from deltamem.service.auth import ApiKeys
from deltamem.service.errors import map_errors
from deltamem.service.page_tokens import SECRET_NAME, PageTokens
from deltamem.v1 import memory_service_pb2 as pb
from deltamem.v1 import memory_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


class CallAbandoned(Exception):
    """The client cancelled or the deadline passed: the call ends without committing anything."""


def call_deadline(context) -> float | None:
    """The client's deadline as Unix time (None without one): no commit may land after it, since the client has
    been told DEADLINE_EXCEEDED by then (issue 17: writes once committed after their calls had failed)."""
    remaining = context.time_remaining()
    return None if remaining is None else time.time() + remaining


class MemoryServicer(pb_grpc.MemoryServiceServicer):
    def __init__(self, engine: Engine, sessions: SessionManager, keys: ApiKeys | None = None, metrics=None):
        self.engine = engine
        self.identity = StateIdentity.of(engine)
        self.sessions = sessions
        self.page_tokens = PageTokens(sessions.shared_secret(SECRET_NAME))
        self.keys = keys or ApiKeys({})
        self.metrics = metrics
        self.draining = False  # set at shutdown: calls that change sessions are refused, reads still served

    def _count_tokens(self, generated: int, written: int) -> None:
        if self.metrics is not None:
            self.metrics.generated_tokens.inc(generated)
            self.metrics.written_tokens.inc(written)

    def _tenant(self, context) -> str:
        return self.keys.tenant(context.invocation_metadata())

    def _accepting(self) -> None:
        if self.draining:
            raise Draining("the server is shutting down and takes no new calls that change sessions; retry elsewhere")

    @map_errors
    def CreateSession(self, request, context):
        self._accepting()
        policy = convert.context_policy(request.context_policy)
        if policy != "none" and not self.engine.keeps_context:
            raise InvalidRequest(f"this server's engine keeps no context: use context policy none, not {policy}")
        info = self.sessions.create(
            dict(request.metadata),
            policy,
            request.window_tokens,
            tenant=self._tenant(context),
        )
        tracing.annotate(session_id=info.session_id, memory_version=info.memory_version)
        return pb.CreateSessionResponse(session=convert.session(info))

    @map_errors
    def Generate(self, request, context):
        self._accepting()
        options = convert.generation_options(request)
        given = convert.user_input(request.input)
        with self.sessions.mutation(request.session_id, self._tenant(context), call_deadline(context)) as mutation:
            if (earlier := receipts.replay(mutation.info, request)) is not None:  # a retry: its first answer
                delta, result = earlier
                yield pb.GenerateResponse(delta=pb.TokenDelta.FromString(delta))
                yield pb.GenerateResponse(result=pb.GenerateResult.FromString(result))
                return
            receipt = receipts.for_generate(
                request, lambda outcome, info: convert.generate_result(TurnResult(outcome, info))
            )
            calls = generate_in_session(self.engine, mutation, given, options, context.is_active, receipt)
            try:
                for event in calls:
                    if not context.is_active():
                        raise CallAbandoned()
                    if isinstance(event, TurnResult):
                        self._count_tokens(event.outcome.generated_tokens, event.outcome.written_tokens)
                        tracing.annotate(
                            memory_version=event.session.memory_version,
                            prompt_tokens=event.outcome.prompt_tokens,
                            generated_tokens=event.outcome.generated_tokens,
                            written_tokens=event.outcome.written_tokens,
                        )
                        yield pb.GenerateResponse(result=convert.generate_result(event))
                    else:
                        yield pb.GenerateResponse(delta=pb.TokenDelta(text=event.text, token_ids=event.token_ids))
            except CallAbandoned:
                log.info(
                    "Generate on %s abandoned by the client; memory left at version %d",
                    request.session_id,
                    mutation.info.memory_version,
                )
            finally:
                calls.close()

    @map_errors
    def UpdateMemory(self, request, context):
        self._accepting()
        given = convert.user_input(request.input)
        with self.sessions.mutation(request.session_id, self._tenant(context), call_deadline(context)) as mutation:
            if (earlier := receipts.replay(mutation.info, request)) is not None:  # a retry: its first answer
                return pb.UpdateMemoryResponse.FromString(earlier[0])
            receipt = receipts.for_update(request)
            committed = write_in_session(self.engine, mutation, given, context.is_active, receipt)
        if committed is None:
            context.abort(grpc.StatusCode.CANCELLED, "the call was cancelled; nothing was written")
        info, written = committed
        self._count_tokens(0, written)
        tracing.annotate(memory_version=info.memory_version, written_tokens=written)
        return pb.UpdateMemoryResponse(tokens_written=written, memory_version=info.memory_version)

    @map_errors
    def ReadState(self, request, context):
        info, state = self.sessions.snapshot(request.session_id, self._tenant(context))
        tracing.annotate(memory_version=info.memory_version)
        return pb.ReadStateResponse(
            session=convert.session(info),
            state=convert.memory_state(state, self.identity, request.summary_only),
        )

    @map_errors
    def ForkSession(self, request, context):
        self._accepting()
        info = self.sessions.fork(request.session_id, dict(request.metadata), self._tenant(context))
        tracing.annotate(forked_session_id=info.session_id, memory_version=info.memory_version)
        return pb.ForkSessionResponse(session=convert.session(info))

    @map_errors
    def DeleteSession(self, request, context):
        self._accepting()
        self.sessions.delete(request.session_id, self._tenant(context))
        return pb.DeleteSessionResponse()

    @map_errors
    def ImportState(self, request, context):
        self._accepting()
        tenant = self._tenant(context)
        state = import_state(convert.exported_state(request.state), self.identity, self.engine.state_bound)
        created = None
        if not request.session_id:
            created = self.sessions.create(dict(request.metadata), tenant=tenant).session_id
        try:
            with self.sessions.mutation(request.session_id or created, tenant, call_deadline(context)) as mutation:
                info = mutation.commit(state.to(mutation.state.device), 0, None)
        except Exception:
            if created is not None:  # no half-made session is left behind
                self.sessions.delete(created, tenant)
            raise
        tracing.annotate(session_id=info.session_id, memory_version=info.memory_version)
        return pb.ImportStateResponse(session=convert.session(info))

    @map_errors
    def ListSessions(self, request, context):
        if request.page_size > MAX_PAGE_SIZE:
            raise InvalidRequest(f"page_size must be at most {MAX_PAGE_SIZE}, got {request.page_size}")
        tenant = self._tenant(context)
        after = self.page_tokens.read(tenant, request.page_token)
        page, has_more = self.sessions.list(after, request.page_size or DEFAULT_PAGE_SIZE, tenant)
        return pb.ListSessionsResponse(
            sessions=[convert.session(info) for info in page],
            next_page_token=self.page_tokens.issue(tenant, page[-1].order) if has_more else "",
        )
