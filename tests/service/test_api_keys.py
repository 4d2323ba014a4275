"""Loading API keys: file and environment forms, and clear errors."""

from __future__ import annotations

import pytest

from deltamem.service.auth import ApiKeys, Unauthenticated

KEY = "k" * 20


def test_file_and_pairs_combine(tmp_path):
    (tmp_path / "keys").write_text(f"# comment\nalpha {KEY}1  # trailing\n\nbravo {KEY}2\n")
    keys = ApiKeys.load(tmp_path / "keys", f"charlie:{KEY}3")
    assert keys.tenant([("authorization", f"Bearer {KEY}1")]) == "alpha"
    assert keys.tenant([("x-api-key", f"{KEY}2")]) == "bravo"
    assert keys.tenant([("authorization", f"bearer {KEY}3")]) == "charlie"
    with pytest.raises(Unauthenticated, match="needs an API key"):
        keys.tenant([("other", "x")])
    with pytest.raises(Unauthenticated, match="not valid"):
        keys.tenant([("x-api-key", "nope")])


def test_no_keys_means_one_default_tenant():
    keys = ApiKeys.load(None, "")
    assert not keys.enabled and keys.tenant([]) == "default"


@pytest.mark.parametrize(
    "text,pairs,message",
    [
        (f"alpha {KEY} extra\n", "", "expected 'tenant key'"),
        ("", f"alpha:{KEY},bravo:{KEY}", "given twice"),
        ("", "alpha:short", "shorter than 16"),
        ("", f"bad tenant!:{KEY}", "tenant name"),
        ("", "alpha", "tenant:key"),
    ],
)
def test_bad_key_sources_are_rejected_with_reasons(tmp_path, text, pairs, message):
    (tmp_path / "keys").write_text(text)
    with pytest.raises(ValueError, match=message):
        ApiKeys.load(tmp_path / "keys", pairs)
