"""A session's record (SessionInfo) and the checks of what a caller may put in one; shared by the manager and
the stores, which is why it lives apart from both."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from deltamem.runtime.errors import InvalidRequest

CONTEXT_POLICIES = ("none", "full", "window")
MAX_WINDOW_TOKENS = 1 << 20
MAX_METADATA_ENTRIES = 64
MAX_METADATA_BYTES = 256
RECEIPTS_KEPT = 16  # request ids a session remembers (idempotent retries), the newest
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")
SESSION_ID_PATTERN = re.compile(r"[0-9a-f]{32}")  # matched whole (fullmatch): "$" would let a newline in
DEFAULT_TENANT = "default"  # the one tenant of a server without API keys


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    memory_version: int
    tokens_written: int
    parent_session_id: str
    parent_memory_version: int
    context_policy: str
    metadata: dict[str, str]
    created_at: float
    order: int  # creation sequence on this server: the paging key
    window_tokens: int = 0  # the window(n) policy's n; 0 for the other policies
    context_tokens: int = 0  # tokens kept as context right now
    tenant: str = DEFAULT_TENANT  # the owner: no other tenant can see or touch the session
    # request id -> what its call returned, opaque to the runtime (the service encodes it): committed with the
    # memory in one put, so a retried request finds its first result even after a restart or on a replica
    receipts: dict[str, str] = field(default_factory=dict)


def check_session_id(session_id: str) -> str:
    if not session_id:
        raise InvalidRequest("session_id is required")
    if not SESSION_ID_PATTERN.fullmatch(session_id):
        raise InvalidRequest(f"session_id {session_id[:64]!r} is malformed: expected 32 lowercase hex characters")
    return session_id


def check_metadata(metadata: dict[str, str]) -> dict[str, str]:
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise InvalidRequest(f"metadata has {len(metadata)} entries, at most {MAX_METADATA_ENTRIES} are allowed")
    for key, value in metadata.items():
        if not key or len(key.encode()) > MAX_METADATA_BYTES or len(value.encode()) > MAX_METADATA_BYTES:
            raise InvalidRequest(
                f"metadata key {key[:32]!r}: keys must be 1-{MAX_METADATA_BYTES} bytes, "
                f"values at most {MAX_METADATA_BYTES}"
            )
    return dict(metadata)


def check_request_id(request_id: str) -> str:
    if not REQUEST_ID_PATTERN.fullmatch(request_id):
        raise InvalidRequest(
            f"request_id {request_id[:64]!r} must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'"
        )
    return request_id


def with_receipt(receipts: dict[str, str], request_id: str, receipt: str) -> dict[str, str]:
    """`receipts` plus this one, keeping the newest RECEIPTS_KEPT (dicts keep insertion order)."""
    kept = {k: v for k, v in receipts.items() if k != request_id}
    kept[request_id] = receipt
    return dict(list(kept.items())[-RECEIPTS_KEPT:])
