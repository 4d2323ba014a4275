"""Requests decoded so that a failure can be answered: gRPC's own deserialisation turns undecodable bytes
(truncated messages, invalid UTF-8 in a string field) into INTERNAL; here they become INVALID_ARGUMENT with the
message type named (issue 17)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from deltamem.service.interceptors import wrap_handler

SERVICE_PREFIX = "/deltamem.v1.MemoryService/"


@dataclass(frozen=True)
class Undecodable:
    """What a request that could not be decoded arrives as (outer interceptors see no session_id on it)."""

    error: str


class DecodingInterceptor(grpc.ServerInterceptor):
    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.request_deserializer is None or not method.startswith(SERVICE_PREFIX):
            return handler
        return decoding(handler, method.removeprefix(SERVICE_PREFIX))


def decoding(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """`handler` whose deserialiser never raises, refusing before it runs what could not be decoded."""
    deserialize = handler.request_deserializer

    def safe_deserialize(raw: bytes):
        try:
            return deserialize(raw)
        except (DecodeError, UnicodeDecodeError) as exc:
            return Undecodable(str(exc))

    @contextmanager
    def refuse_undecodable(request, context):
        if isinstance(request, Undecodable):
            message = f"the {method} request could not be decoded: {request.error}"
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        yield

    return wrap_handler(handler, refuse_undecodable, request_deserializer=safe_deserialize)
