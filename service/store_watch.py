"""Health follows the session store: a thread pings the store every few seconds and reports each change, so
Health.Check says NOT_SERVING while the store is unreachable (every call would fail) and SERVING once it
answers again. Load balancers and kubelet then route around a replica whose store is gone (issue 17)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

CHECK_SECONDS = 2.0  # between pings; a frozen Redis also takes up to its 5 s socket timeout to fail a ping


class StoreWatch:
    def __init__(self, ping: Callable[[], None], on_change: Callable[[bool], None], interval: float = CHECK_SECONDS):
        self._ping, self._on_change, self._interval = ping, on_change, interval
        self._stop = threading.Event()
        self.reachable = True
        self._thread = threading.Thread(target=self._run, name="store-watch", daemon=True)

    def start(self) -> StoreWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._ping()
                reachable, problem = True, None
            except Exception as exc:  # noqa: BLE001 - any failure to answer is "unreachable"
                reachable, problem = False, exc
            if reachable != self.reachable:
                self.reachable = reachable
                if reachable:
                    log.warning("the session store answers again: SERVING")
                else:
                    log.warning("the session store does not answer (%s): NOT_SERVING until it does", problem)
                self._on_change(reachable)
