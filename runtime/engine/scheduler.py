"""Which jobs run: a queue of submitted jobs, the running ones, and their state-pool slots.

Callers submit from any thread; everything else runs on the engine's loop thread, between steps. A job is admitted
when a slot is free (its initial state copied into the slot) and retired when it is done or cancelled (its slot
freed). A job that cannot be admitted fails alone: the loop and every other job go on.
"""

from __future__ import annotations

import logging
import queue

from deltamem.runtime.engine.job import Job, Phase
from deltamem.runtime.engine.state_pool import StatePool

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, pool: StatePool):
        self.pool = pool
        self.running: list[Job] = []
        self._pending: queue.SimpleQueue[Job] = queue.SimpleQueue()

    def submit(self, job: Job) -> None:
        """Queue a fully made job (any thread)."""
        self._pending.put(job)

    def admit(self) -> None:
        """Retire finished jobs, then give free slots to queued jobs in submission order."""
        self.retire()
        while self.pool.num_free:
            try:
                job = self._pending.get_nowait()
            except queue.Empty:
                return
            if job.cancelled.is_set():
                job.trace.abandoned("cancelled")
                continue
            try:
                job.slot = self.pool.alloc(job.initial_state)
            except Exception as exc:  # noqa: BLE001 - the job's own fault (its state, say): it alone fails
                log.warning("could not admit a request: %s", exc)
                job.fail(exc)
                continue
            self.running.append(job)
            job.trace.admitted(job.slot, len(self.running))

    def retire(self) -> None:
        keep = []
        for job in self.running:
            if job.is_finished:
                job.trace.abandoned("cancelled")  # a no-op for a request that ended
                self.pool.free(job.slot)
            else:
                keep.append(job)
        self.running = keep

    def has_waiting(self) -> bool:
        """Whether submitted jobs are waiting for a slot."""
        return not self._pending.empty()

    def ready(self, phases: tuple[Phase, ...]) -> list[Job]:
        """The running jobs in one of `phases` that their callers still want."""
        return [job for job in self.running if job.phase in phases and not job.cancelled.is_set()]

    def fail_all(self, error: BaseException) -> None:
        """Fail every running and queued job (the loop is stopping)."""
        for job in self.running:
            job.fail(error)
        while True:
            try:
                job = self._pending.get_nowait()
            except queue.Empty:
                break
            job.fail(error)
