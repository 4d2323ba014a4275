"""Admission control: long calls take a slot, globally and per tenant, so health checks and short calls always
find a free worker (issue 17).

Why: the sync gRPC server runs every call on one of `max_workers` threads, and a Generate stream holds its
thread until its last token is sent (a client that does not read holds it until its window fills, then until
its deadline). Sixteen such streams once took every worker, and Health.Check and every other tenant timed
out. Here Generate, UpdateMemory and ImportState may have at most `max_calls` in flight (fewer than the
workers, so the rest stay free) and at most `max_calls_per_tenant` per tenant, so one tenant cannot take them
all; a call over either limit is RESOURCE_EXHAUSTED at once, saying which limit, and takes no worker for long.
"""

from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager

import grpc

from deltamem.service.auth import ApiKeys, Unauthenticated
from deltamem.service.interceptors import wrap_handler

LONG_CALLS = tuple(f"/deltamem.v1.MemoryService/{name}" for name in ("Generate", "UpdateMemory", "ImportState"))


class Admission:
    """Counts long calls in flight; `slot(tenant)` takes one or refuses."""

    def __init__(self, max_calls: int, max_calls_per_tenant: int):
        self.max_calls, self.max_calls_per_tenant = max_calls, max_calls_per_tenant
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()

    def in_flight(self) -> int:
        with self._lock:
            return sum(self._in_flight.values())

    def try_take(self, tenant: str) -> str | None:
        """Take a slot for `tenant`; None if taken, else why not."""
        with self._lock:
            if sum(self._in_flight.values()) >= self.max_calls:
                return (
                    f"the server is running its limit of {self.max_calls} long calls (Generate, UpdateMemory,"
                    " ImportState) at once; retry with backoff"
                )
            if self._in_flight[tenant] >= self.max_calls_per_tenant:
                return (
                    f"this tenant already has {self.max_calls_per_tenant} long calls in flight, its limit;"
                    " finish or cancel one first"
                )
            self._in_flight[tenant] += 1
            return None

    def give_back(self, tenant: str) -> None:
        with self._lock:
            self._in_flight[tenant] -= 1
            if not self._in_flight[tenant]:
                del self._in_flight[tenant]


class AdmissionInterceptor(grpc.ServerInterceptor):
    """Runs each long call inside a slot of `admission`, held until its response (a stream: its last message, or
    the moment it is cancelled or abandoned)."""

    def __init__(self, admission: Admission, keys: ApiKeys):
        self.admission, self.keys = admission, keys

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method not in LONG_CALLS:
            return handler
        try:
            tenant = self.keys.tenant(handler_call_details.invocation_metadata)
        except Unauthenticated:
            return handler  # AuthInterceptor, outside this one, refuses the call before it runs
        admission = self.admission

        @contextmanager
        def slot(_request, context):
            refused = admission.try_take(tenant)
            if refused:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
            try:
                yield
            finally:
                admission.give_back(tenant)

        return wrap_handler(handler, slot)
