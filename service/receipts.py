"""Idempotent retries: a Generate or UpdateMemory with a request_id stores, in the same put as its commit, what it
returned; a retry with that id on that session is answered from it and writes nothing again, across restarts
and replicas (the receipt lives in the store with the memory). A receipt is the request's fingerprint (its
bytes without the id) and the serialized response messages, so the same id with another request is refused
rather than answered with the wrong result.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

from deltamem.runtime.errors import InvalidRequest
from deltamem.runtime.sessions.records import SessionInfo, check_request_id
from deltamem.v1 import memory_service_pb2 as pb


def fingerprint(request) -> str:
    """The request without its id, hashed: two requests with equal fingerprints ask for the same thing."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.request_id = ""
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:32]


def encode(request, *messages) -> str:
    return ":".join([fingerprint(request), *(base64.b64encode(m.SerializeToString()).decode() for m in messages)])


def replay(info: SessionInfo, request) -> list[bytes] | None:
    """The messages the first call with this request's id returned on this session, or None (no id, or a new
    one). The same id with a different request is INVALID_ARGUMENT."""
    if not request.request_id:
        return None
    request_id = check_request_id(request.request_id)
    stored = info.receipts.get(request_id)
    if stored is None:
        return None
    first, *messages = stored.split(":")
    if first != fingerprint(request):
        raise InvalidRequest(
            f"request_id {request_id!r} was already used on session {info.session_id} for a different request;"
            " use a new id for a new request"
        )
    return [base64.b64decode(m) for m in messages]


def for_update(request) -> tuple[str, Callable[[int, SessionInfo], str]] | None:
    """What write_in_session stores for an UpdateMemory with a request id."""
    if not request.request_id:
        return None

    def make(written: int, info: SessionInfo) -> str:
        return encode(request, pb.UpdateMemoryResponse(tokens_written=written, memory_version=info.memory_version))

    return check_request_id(request.request_id), make


def for_generate(request, result_of) -> tuple[str, Callable] | None:
    """What generate_in_session stores for a Generate with a request id: the whole output as one delta and the
    result, built by `result_of(outcome, info)`."""
    if not request.request_id:
        return None

    def make(outcome, token_ids: list[int], info: SessionInfo) -> str:
        delta = pb.TokenDelta(text=outcome.text, token_ids=token_ids)
        return encode(request, delta, result_of(outcome, info))

    return check_request_id(request.request_id), make
