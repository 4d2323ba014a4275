"""The spans of one engine request: queued (submission to admission), then its prefill (or memory write, or
context re-encoding), then decode. The engine's loop thread starts and ends them, under the trace context of
the call that submitted the request, so they nest under that RPC's server span."""

from __future__ import annotations

from deltamem.runtime import tracing

WORK_SPANS = {"generate": "deltamem.engine.prefill", "write": "deltamem.engine.memory_write"}
CONTEXT_SPAN = "deltamem.engine.context_encode"


class NoTrace:
    """What a request carries when tracing is off: every event is a no-op."""

    def admitted(self, slot: int, running: int) -> None:
        pass

    def step(self, batch: int) -> None:
        pass

    def prefilled(self) -> None:
        pass

    def finished(self, **values) -> None:
        pass

    def failed(self, error: BaseException) -> None:
        pass

    def abandoned(self, reason: str) -> None:
        pass


NO_TRACE = NoTrace()


class JobTrace(NoTrace):
    """Spans for one request; each ends exactly once, whatever way the request ends."""

    def __init__(self, parent, kind: str, tokens: int, context_tokens: int):
        self._parent = parent
        self._work_name = CONTEXT_SPAN if kind == "context" else WORK_SPANS[kind]
        self._tokens = tokens
        self._counting = False  # the queue span runs no steps
        self._steps = self._largest_batch = 0
        self._open = tracing.start_span(
            "deltamem.engine.queue", parent, input_tokens=tokens, context_tokens=context_tokens
        )

    @classmethod
    def start(cls, kind: str, tokens: int, context_tokens: int = 0) -> NoTrace:
        """A JobTrace under the caller's current context, or NO_TRACE when tracing is off."""
        parent = tracing.current_context()
        return NO_TRACE if parent is None else cls(parent, kind, tokens, context_tokens)

    def _begin(self, name: str, **values) -> None:
        self._counting, self._steps, self._largest_batch = True, 0, 0
        self._open = tracing.start_span(name, self._parent, **values)

    def _end(self, **values) -> None:
        if self._open is None:
            return
        if self._counting:
            values = {"steps": self._steps, "max_batch_size": self._largest_batch, **values}
        self._open.set_attributes(tracing.attributes(values))
        self._open.end()
        self._open = None

    def admitted(self, slot: int, running: int) -> None:
        self._end(slot=slot, running=running)
        self._begin(self._work_name, input_tokens=self._tokens)

    def step(self, batch: int) -> None:
        self._steps += 1
        self._largest_batch = max(self._largest_batch, batch)

    def prefilled(self) -> None:
        """The input is in: a generation goes on to decode; a write or re-encoding is done."""
        self._end()
        if self._work_name == WORK_SPANS["generate"]:
            self._begin("deltamem.engine.decode")

    def finished(self, **values) -> None:
        self._end(**values)

    def failed(self, error: BaseException) -> None:
        if self._open is not None:
            from opentelemetry.trace import Status, StatusCode

            self._open.record_exception(error)
            self._open.set_status(Status(StatusCode.ERROR, str(error)))
        self._end()

    def abandoned(self, reason: str) -> None:
        self._end(abandoned=reason)
