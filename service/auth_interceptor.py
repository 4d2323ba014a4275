"""API keys checked before anything else of a call is looked at: a call without a valid key is refused before its
request is even deserialised, so an unauthenticated caller cannot make the server parse or tokenise a 15 MiB
input (issue 17). Health checking and reflection need no key."""

from __future__ import annotations

from contextlib import contextmanager

import grpc

from deltamem.service.auth import ApiKeys, Unauthenticated
from deltamem.service.interceptors import wrap_handler

OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, keys: ApiKeys):
        self.keys = keys

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_SERVICES):
            return handler
        try:
            self.keys.tenant(handler_call_details.invocation_metadata)
        except Unauthenticated as exc:
            return refusal(handler, str(exc))
        return handler


def refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """`handler` aborting with UNAUTHENTICATED before it runs; the request stays raw bytes, so nothing of it is
    parsed."""

    @contextmanager
    def refuse(_request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield

    return wrap_handler(handler, refuse, request_deserializer=raw_bytes)


def raw_bytes(data: bytes) -> bytes:
    return data
