"""ListSessions page tokens that are opaque, authenticated and scoped to one tenant.

A token carries the creation order of the last session on its page, which is a counter shared by every tenant:
in the clear it would tell a tenant how many sessions others made between its pages. So the order is
encrypted (XOR with an HMAC-SHA256 keystream under a random nonce) and the whole token is MACed with the
tenant bound in; a token another tenant, another store or a hand edit produced is INVALID_ARGUMENT. The key
is the store's shared secret, so any replica accepts any replica's tokens and a restart keeps them valid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from deltamem.runtime.errors import InvalidRequest

SECRET_NAME = "page-tokens"
NONCE_BYTES, ORDER_BYTES, TAG_BYTES = 12, 8, 16
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{48}")  # base64url of nonce + order + tag, 36 bytes, unpadded


class PageTokens:
    def __init__(self, secret: bytes):
        self._secret = secret

    def _mac(self, purpose: bytes, tenant: str, *parts: bytes) -> bytes:
        scope = tenant.encode()
        message = b"".join([purpose, len(scope).to_bytes(4, "big"), scope, *parts])
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def issue(self, tenant: str, order: int) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        pad = self._mac(b"pad", tenant, nonce)[:ORDER_BYTES]
        body = bytes(a ^ b for a, b in zip(order.to_bytes(ORDER_BYTES, "big", signed=True), pad, strict=True))
        tag = self._mac(b"tag", tenant, nonce, body)[:TAG_BYTES]
        return base64.urlsafe_b64encode(nonce + body + tag).decode().rstrip("=")

    def read(self, tenant: str, token: str) -> int | None:
        """The order a token of `tenant` carries (None for the empty token: the first page)."""
        if not token:
            return None
        refused = InvalidRequest(f"page_token {token[:64]!r} is not a token this server issued to this caller")
        if not TOKEN_PATTERN.fullmatch(token):
            raise refused
        raw = base64.urlsafe_b64decode(token)
        nonce, body, tag = raw[:NONCE_BYTES], raw[NONCE_BYTES:-TAG_BYTES], raw[-TAG_BYTES:]
        if not hmac.compare_digest(tag, self._mac(b"tag", tenant, nonce, body)[:TAG_BYTES]):
            raise refused
        pad = self._mac(b"pad", tenant, nonce)[:ORDER_BYTES]
        return int.from_bytes(bytes(a ^ b for a, b in zip(body, pad, strict=True)), "big", signed=True)
