"""Page tokens are opaque, authenticated and scoped to one tenant (service/page_tokens.py)."""

from __future__ import annotations

import pytest

from deltamem.runtime.errors import InvalidRequest
from deltamem.service.page_tokens import PageTokens

SECRET = bytes(range(32))


def test_a_token_reads_back_only_for_its_tenant_and_only_as_issued():
    tokens = PageTokens(SECRET)
    token = tokens.issue("alpha", 41)
    assert tokens.read("alpha", token) == 41 and tokens.read("alpha", "") is None
    for tenant, text in (
        ("bravo", token),  # another tenant
        ("alpha", token[:-1] + ("A" if token[-1] != "A" else "B")),  # a hand edit
        ("alpha", PageTokens(bytes(32)).issue("alpha", 41)),  # another store's secret
        ("alpha", "41"),  # the old plain counter
        ("alpha", token + "A"),
        ("alpha", "²" * 48),
    ):
        with pytest.raises(InvalidRequest, match="not a token this server issued"):
            tokens.read(tenant, text)


def test_tokens_reveal_nothing_about_the_counter_they_carry():
    """The order is encrypted under a fresh nonce: the same order gives different tokens, neighbouring orders
    share no more of their text than chance."""
    tokens = PageTokens(SECRET)
    same = {tokens.issue("alpha", 7) for _ in range(20)}
    assert len(same) == 20 and all(tokens.read("alpha", t) == 7 for t in same)
    a, b = tokens.issue("alpha", 1000), tokens.issue("alpha", 1001)
    assert len(a) == len(b) and sum(x == y for x, y in zip(a, b, strict=True)) < 12
