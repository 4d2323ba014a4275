"""A session store wrapped so that each call is a store-I/O span; used only when tracing is on."""

from __future__ import annotations

from deltamem.runtime import tracing

TRACED_CALLS = ("get", "put", "delete", "list_page", "count_tenant", "next_order", "count")
TENANT_CALLS = ("list_page", "count_tenant")


class TracedStore:
    """Delegates to `inner`; each of TRACED_CALLS runs inside a deltamem.store.* span."""

    def __init__(self, inner):
        self.inner = inner
        self._kind = type(inner).__name__

    def __getattr__(self, name: str):
        call = getattr(self.inner, name)
        if name not in TRACED_CALLS:
            return call

        def traced(*args, **kwargs):
            subject = {"tenant": args[0]} if name in TENANT_CALLS and args else {"session_id": _session_of(args)}
            with tracing.span(f"deltamem.store.{name}", store=self._kind, **subject):
                return call(*args, **kwargs)

        return traced


def _session_of(args: tuple) -> str | None:
    """The session a store call is about: its id argument, or the id of the info it puts."""
    if not args:
        return None
    first = args[0]
    return first if isinstance(first, str) else getattr(first, "session_id", None)
