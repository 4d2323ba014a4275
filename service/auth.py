"""API keys and tenants: every call names its tenant by key; every session belongs to one tenant.

Keys come from a file (one `tenant key` pair per line, `#` comments) and/or DELTAMEM_API_KEYS
(`tenant:key,tenant:key`, read in config.py). With no keys at all, authentication is off and every caller is
the one default tenant (a local, single-user server). A call presents its key as `authorization: Bearer KEY`
or `x-api-key: KEY` metadata; health checking and reflection need none.
"""

from __future__ import annotations

import hmac
import re
from pathlib import Path

from deltamem.runtime.sessions.records import DEFAULT_TENANT

_TENANT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Unauthenticated(Exception):
    """The call carries no API key, or one this server does not know."""


class ApiKeys:
    def __init__(self, keys: dict[str, str]):
        """`keys`: API key → tenant."""
        for key, tenant in keys.items():
            if not _TENANT.match(tenant):
                raise ValueError(f"tenant name {tenant!r} must be 1-64 letters, digits, '_', '.' or '-'")
            if len(key) < 16:
                raise ValueError(f"the API key of tenant {tenant!r} is shorter than 16 characters")
        self._keys = dict(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    @classmethod
    def load(cls, path: Path | None, pairs: str | None) -> ApiKeys:
        """From a `tenant key` file and/or a `tenant:key,...` string; a key given twice is an error."""
        entries: list[tuple[str, str]] = []
        if path is not None:
            for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                parts = line.split()
                if len(parts) != 2:
                    raise ValueError(f"{path}:{number}: expected 'tenant key', got {len(parts)} fields")
                entries.append((parts[0], parts[1]))
        for pair in (pairs or "").split(","):
            if pair.strip():
                tenant, sep, key = pair.strip().partition(":")
                if not sep:
                    raise ValueError("DELTAMEM_API_KEYS entries must look like tenant:key")
                entries.append((tenant, key))
        keys: dict[str, str] = {}
        for tenant, key in entries:
            if key in keys:
                raise ValueError(f"an API key is given twice (tenants {keys[key]!r} and {tenant!r})")
            keys[key] = tenant
        return cls(keys)

    def tenant(self, metadata) -> str:
        """The tenant a call's metadata ((key, value) pairs) authenticates as. Every configured key is compared in
        constant time (no early exit), and a call that presents two different keys is refused."""
        if not self.enabled:
            return DEFAULT_TENANT
        presented = set()
        for name, value in metadata or ():
            if name == "authorization" and value.lower().startswith("bearer "):
                presented.add(value[7:].strip())
            elif name == "x-api-key":
                presented.add(value.strip())
        if not presented:
            raise Unauthenticated("this server needs an API key: send 'authorization: Bearer KEY' metadata")
        if len(presented) > 1:
            raise Unauthenticated("the call presents more than one API key: send one")
        (key,) = presented
        tenant = None
        for known, owner in self._keys.items():
            if hmac.compare_digest(known.encode(), key.encode()):
                tenant = owner
        if tenant is None:
            raise Unauthenticated("the API key is not valid")
        return tenant
