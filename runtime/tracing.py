"""Trace spans for the engine and the session store; nothing at all unless the service turned tracing on.

Off (the default), every helper returns at once without touching OpenTelemetry, so hot paths may call them
freely. On, spans go to the tracer the service configured from the OTEL_* variables (service/tracing.py).
Attribute names carry the `deltamem.` prefix; no prompt or generated text is ever recorded.
"""

from __future__ import annotations

from contextlib import nullcontext

_tracer = None


def enable(tracer) -> None:
    """Send spans to `tracer` (an opentelemetry.trace.Tracer) from now on."""
    global _tracer
    _tracer = tracer


def disable() -> None:
    global _tracer
    _tracer = None


def enabled() -> bool:
    return _tracer is not None


def tracer():
    """The configured tracer, or None when tracing is off."""
    return _tracer


def attributes(values: dict[str, object]) -> dict[str, object]:
    """`values` with the deltamem. prefix on every key and None values left out."""
    return {f"deltamem.{key}": value for key, value in values.items() if value is not None}


def span(name: str, **values):
    """A child span of the current one for the `with` block, or a no-op when tracing is off."""
    if _tracer is None:
        return nullcontext()
    return _tracer.start_as_current_span(name, attributes=attributes(values))


def current_context():
    """The caller's trace context, to parent spans that another thread starts later (None when off)."""
    if _tracer is None:
        return None
    from opentelemetry import context

    return context.get_current()


def start_span(name: str, parent, **values):
    """A span started now under `parent` (from current_context) and ended by the caller; None when off."""
    if _tracer is None:
        return None
    return _tracer.start_span(name, context=parent, attributes=attributes(values))


def annotate(**values) -> None:
    """Add attributes to the current span (the RPC's server span in a handler); nothing when off."""
    if _tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes(attributes(values))
