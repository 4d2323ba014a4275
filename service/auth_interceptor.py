"""API keys checked before anything else of a call is looked at: a call without a valid key is refused before its
request is even deserialised, so an unauthenticated caller cannot make the server parse or tokenise a 15 MiB
input (issue 17). Health checking and reflection need no key."""

from __future__ import annotations

import grpc

from deltamem.service.auth import ApiKeys, Unauthenticated

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
    """A handler of the same kind that aborts with UNAUTHENTICATED; it takes the request as raw bytes (no
    deserializer), so nothing of it is parsed."""

    def refuse(_request, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.unary_stream:

        def refuse_stream(request, context):
            refuse(request, context)
            yield from ()

        return grpc.unary_stream_rpc_method_handler(refuse_stream, None, handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(refuse, None, handler.response_serializer)
