"""Domain errors the runtime raises for bad requests; the service maps each to one gRPC status in one place."""


class DeltaMemError(Exception):
    """Base of every error that is the caller's to fix (never an internal failure)."""


class InvalidRequest(DeltaMemError, ValueError):
    """The request is malformed or out of range."""


class SessionNotFound(DeltaMemError, LookupError):
    """No session has this id."""


class SessionBusy(DeltaMemError):
    """Another mutation of the same session is in progress; mutations are rejected, never interleaved."""


class Draining(DeltaMemError):
    """The server is shutting down: it finishes calls in flight but takes no new ones."""


class LimitExceeded(DeltaMemError):
    """A configured quota (sessions per tenant, say) would be exceeded."""


class StateMismatch(DeltaMemError):
    """An imported memory was made for another backbone, adapter or state shape."""


class NonFiniteOutput(DeltaMemError):
    """The model's output for this request is not finite (its memory holds NaN or infinity): nothing can be sampled
    from it. Only this request fails; the session's memory needs a reset or an import."""


class CallCancelled(DeltaMemError):
    """The caller stopped wanting the call (cancelled, or past its deadline) before the engine finished it: the
    engine stopped within one chunk and nothing was written."""


class CommitTooLate(DeltaMemError):
    """The call's deadline passed before the store could commit it (a slow or frozen store): nothing was written,
    so a client that gave up at its deadline never finds the write committed after all."""


class StoreUnavailable(DeltaMemError):
    """The session store did not answer (down, frozen, unreachable) within its timeout: retryable. When a write's
    outcome cannot be known, the message says so and names the version to check."""


class StoreFull(DeltaMemError):
    """The session store has no room for a write (disk or database full): nothing was written."""
