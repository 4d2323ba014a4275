"""What the server's interceptors share: running code around every call, unary or server-streaming alike."""

from __future__ import annotations

import grpc


def wrap_handler(
    handler: grpc.RpcMethodHandler | None, around, request_deserializer=None
) -> grpc.RpcMethodHandler | None:
    """`handler` with each call run inside `around(request, context)`, a context manager that lasts until the
    response (for a stream, its last message, or the moment the stream is abandoned) and sees any exception;
    `request_deserializer`, if given, replaces the handler's."""
    if handler is None:
        return None
    deserializer = request_deserializer or handler.request_deserializer
    if handler.unary_unary:
        inner = handler.unary_unary

        def unary(request, context):
            with around(request, context):
                return inner(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, deserializer, handler.response_serializer)
    if handler.unary_stream:
        inner_stream = handler.unary_stream

        def stream(request, context):
            with around(request, context):
                yield from inner_stream(request, context)

        return grpc.unary_stream_rpc_method_handler(stream, deserializer, handler.response_serializer)
    return handler


def status_code(context) -> grpc.StatusCode | None:
    """The status the handler set (None when it set none)."""
    return context.code() if hasattr(context, "code") else None
