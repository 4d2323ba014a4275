"""The one place where domain errors become gRPC status codes, for unary and server-streaming handlers."""

from __future__ import annotations

import functools
import inspect
import logging

import grpc

from deltamem.runtime.errors import (
    CallCancelled,
    CommitTooLate,
    Draining,
    InvalidRequest,
    LimitExceeded,
    NonFiniteOutput,
    SessionBusy,
    SessionNotFound,
    StateMismatch,
    StoreFull,
    StoreUnavailable,
)
from deltamem.service.auth import Unauthenticated

log = logging.getLogger(__name__)

_STATUS = (
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (SessionNotFound, grpc.StatusCode.NOT_FOUND),
    (SessionBusy, grpc.StatusCode.FAILED_PRECONDITION),
    (Draining, grpc.StatusCode.UNAVAILABLE),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (CommitTooLate, grpc.StatusCode.DEADLINE_EXCEEDED),
    (CallCancelled, grpc.StatusCode.CANCELLED),
    (StoreFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StateMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (NonFiniteOutput, grpc.StatusCode.FAILED_PRECONDITION),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
)


def _abort(context: grpc.ServicerContext, exc: Exception, method: str):
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            context.abort(code, str(exc))
    log.exception("%s failed", method)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}: {type(exc).__name__}")


def map_errors(handler):
    """Wrap a servicer method so that domain errors abort the RPC with their status and message."""
    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def streaming(self, request, context):
            try:
                yield from handler(self, request, context)
            except Exception as exc:  # noqa: BLE001 - mapped to a status, internal ones logged
                if isinstance(exc, grpc.RpcError) or context.code() is not None:
                    raise
                _abort(context, exc, handler.__name__)

        return streaming

    @functools.wraps(handler)
    def unary(self, request, context):
        try:
            return handler(self, request, context)
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, grpc.RpcError) or context.code() is not None:
                raise
            _abort(context, exc, handler.__name__)

    return unary
