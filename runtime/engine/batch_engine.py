"""The continuous-batching engine: one loop thread runs the model for every request in flight.

Requests of different sessions are admitted between steps (up to `max_batch` at a time), prefilled together
in ragged batches of up to `prefill_chunk` tokens each, then decoded together one token per step. Each running
request's memory lives in a slot of the state pool ([max_batch, layers, heads, r, r]); a batched forward reads
the slots, the fused kernels update every sequence's state, and the slots are written back. Sessions that are
not running hold no slot: their memory is the committed state in the session manager.

Keep the loop thread the only long-lived thread that runs model work: with libgomp (PyTorch's OpenMP), a second
thread that ran a parallel region keeps its worker pool, threads then outnumber cores, its workers' spin-waits are
throttled, and oneDNN's GEMMs in the loop thread slow by about a quarter for the life of the process
(bench/openmp_threads.py: one forward on the main thread leaves the engine at 0.72x its tokens/s; one on a thread
that ends leaves no pool behind and costs nothing).

It implements the same `write` / `generate` interface as the sequential `Engine` (its obviously correct twin,
which the tests compare it with); the caller still commits a returned state only when the whole call succeeded,
and closing a generation early cancels it at the next step.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from deltamem.runtime.engine.detokenizer import IncrementalDetokenizer
from deltamem.runtime.engine.job_trace import NO_TRACE, JobTrace, NoTrace
from deltamem.runtime.engine.kv import BatchKV, SequenceKV
from deltamem.runtime.engine.requests import (
    EncodedInput,
    GenerationOutcome,
    GenerationRequest,
    TokenEvent,
    token_events,
)
from deltamem.runtime.engine.sampling import make_generator, sample_next
from deltamem.runtime.engine.sequential import DEFAULT_PREFILL_CHUNK, Engine
from deltamem.runtime.model.backbone import LoadedModel

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 8
PREFILL, DECODE, CLOSING, OUTPUT_MESSAGE, DONE = "prefill", "decode", "closing", "output_message", "done"


@dataclass
class _Job:
    tokens: tuple[int, ...]
    message_ids: tuple[int, ...]
    write_input: bool
    request: GenerationRequest | None  # None: a write (UpdateMemory)
    initial_state: torch.Tensor
    kv: SequenceKV
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    slot: int = -1
    base: int = 0  # tokens already in `kv` when the job started (a kept context)
    reencode: bool = False  # a read-only prefill whose result is the KV, not a state
    phase: str = PREFILL
    fed: int = 0  # prompt tokens processed
    generated: list[int] = field(default_factory=list)
    next_token: int | None = None
    finish: str = ""
    detok: IncrementalDetokenizer | None = None
    generator: torch.Generator | None = None
    trace: NoTrace = NO_TRACE  # its spans, when tracing is on


class BatchEngine(Engine):
    def __init__(
        self,
        loaded: LoadedModel,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_input_tokens: int | None = None,
    ):
        super().__init__(loaded, prefill_chunk)
        self.max_input_tokens = max_input_tokens
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self.pool = self.model.empty_state(max_batch, self.device)  # the state pool
        self._free_slots = list(range(max_batch))
        self._pending: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._running: list[_Job] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.steps = 0  # forwards run, for tests and metrics
        self.max_batch_seen = 0

    # ---- the public interface, as Engine's -----------------------------------------------------------------
    @property
    def slots_in_use(self) -> int:
        """State-pool slots held by requests in flight (read by metrics; a racy read is fine there)."""
        return self.max_batch - len(self._free_slots)

    def write(self, state: torch.Tensor, encoded: EncodedInput) -> tuple[torch.Tensor, int]:
        self.check_write_input(encoded)
        job = self._submit(encoded.ids, encoded.message_ids, True, None, state, kind="write")
        outcome = self._next_event(job)
        written = encoded.tokens_written(self.model.writes_messages)
        return outcome, written

    def encode_context(self, state: torch.Tensor, tokens: tuple[int, ...], position: int) -> SequenceKV:
        """The KV of `tokens` read (not written) under `state`, placed at absolute positions from `position`:
        how a kept context is rebuilt when the memory it was computed under has changed."""
        kv = SequenceKV(self.model.num_layers)
        kv.position = position
        job = self._submit(tokens, (-1,) * len(tokens), False, None, state, kv, kind="context")
        job.reencode = True
        return self._next_event(job)

    def generate(
        self, state: torch.Tensor, request: GenerationRequest, context: SequenceKV | None = None
    ) -> Iterator[TokenEvent | GenerationOutcome]:
        """As Engine.generate; `context` (owned by this call from now on) is KV to continue after."""
        self.check_input_length(len(request.prompt_ids))
        message_ids = request.prompt_message_ids or (0,) * len(request.prompt_ids)
        job = self._submit(request.prompt_ids, message_ids, request.write_input, request, state, context)
        try:
            while True:
                event = self._next_event(job)
                yield event
                if isinstance(event, GenerationOutcome):
                    return
        finally:
            job.cancelled.set()
            self._wake.set()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the loop thread after the current step; requests still queued or running get an error."""
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- submission -----------------------------------------------------------------------------------------
    def _submit(self, tokens, message_ids, write_input, request, state, kv=None, kind="generate") -> _Job:
        kv = kv if kv is not None else SequenceKV(self.model.num_layers)
        job = _Job(
            tokens=tuple(tokens),
            message_ids=tuple(message_ids),
            write_input=write_input,
            request=request,
            initial_state=state.to(self.device, torch.float32),
            kv=kv,
            base=kv.length,
            trace=JobTrace.start(kind, len(tokens), kv.length),
        )
        if request is not None:
            job.detok = IncrementalDetokenizer(self.tokenizer, request.stop)
            job.generator = make_generator(request.sampling)
        with self._start_lock:
            if self._thread is None:
                self._closing = False
                self._thread = threading.Thread(target=self._loop, name="deltamem-engine", daemon=True)
                self._thread.start()
        self._pending.put(job)
        self._wake.set()
        return job

    @staticmethod
    def _next_event(job: _Job):
        event = job.events.get()
        if isinstance(event, BaseException):
            raise event
        return event

    # ---- the loop -------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._run_until_closed()
        finally:
            stopped = RuntimeError("the engine stopped before this request finished")
            for job in self._running:
                job.trace.failed(stopped)
                job.events.put(stopped)
            while True:
                try:
                    job = self._pending.get_nowait()
                except queue.Empty:
                    break
                job.trace.failed(stopped)
                job.events.put(stopped)

    def _run_until_closed(self) -> None:
        while not self._closing:
            self._admit()
            if not self._running:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            for phases, step in (
                ((PREFILL, OUTPUT_MESSAGE), self._step_prefill),
                ((DECODE, CLOSING), self._step_decode),
            ):
                group = [job for job in self._running if job.phase in phases and not job.cancelled.is_set()]
                if group:
                    try:
                        step(group)
                    except Exception as exc:  # noqa: BLE001 - reported to the requests, the loop lives on
                        log.exception("engine step failed")
                        for job in group:
                            job.trace.failed(exc)
                            job.events.put(exc)
                            job.phase = DONE
            self._retire()

    def _admit(self) -> None:
        self._retire()
        while self._free_slots:
            try:
                job = self._pending.get_nowait()
            except queue.Empty:
                return
            if job.cancelled.is_set():
                job.trace.abandoned("cancelled")
                continue
            job.slot = self._free_slots.pop(0)
            self.pool[job.slot] = job.initial_state
            self._running.append(job)
            job.trace.admitted(job.slot, len(self._running))

    def _retire(self) -> None:
        keep = []
        for job in self._running:
            if job.phase == DONE or job.cancelled.is_set():
                job.trace.abandoned("cancelled")  # a no-op for a request that ended
                self._free_slots.append(job.slot)
            else:
                keep.append(job)
        self._running = keep

    def _forward(self, jobs: list[_Job], chunks: list[list[int]], writes: list[bool], messages: list[list[int]]):
        """One batched forward: job b feeds chunks[b]; returns logits at each job's last fed token."""
        lengths = [len(c) for c in chunks]
        width = max(lengths)
        ids = torch.zeros(len(jobs), width, dtype=torch.long, device=self.device)
        write_mask = torch.zeros(len(jobs), width, dtype=torch.bool, device=self.device)
        message_ids = torch.full((len(jobs), width), -1, dtype=torch.long, device=self.device)
        for b, (chunk, write, owners) in enumerate(zip(chunks, writes, messages, strict=True)):
            ids[b, : len(chunk)] = torch.tensor(chunk, device=self.device)
            write_mask[b, : len(chunk)] = write
            if write:
                message_ids[b, : len(chunk)] = torch.tensor(owners, device=self.device)
        kv = BatchKV([job.kv for job in jobs], lengths)
        slots = torch.tensor([job.slot for job in jobs], device=self.device)
        with torch.inference_mode():
            out = self.model(
                ids,
                self.pool[slots],
                write=True,
                write_mask=None if self.model.writes_messages else write_mask,
                message_ids=message_ids if self.model.writes_messages else None,
                past_key_values=kv,
                use_cache=True,
                attention_mask=kv.attention_mask(width, self.device),
                position_ids=kv.position_ids(width, self.device),
                logits_at=torch.tensor([n - 1 for n in lengths], device=self.device),
            )
            self.pool[slots] = out.state
        kv.commit()
        for job in jobs:
            job.trace.step(len(jobs))
        self.steps += 1
        self.max_batch_seen = max(self.max_batch_seen, len(jobs))
        return out.logits

    def _step_prefill(self, jobs: list[_Job]) -> None:
        chunks, writes, messages = [], [], []
        for job in jobs:
            if job.phase == OUTPUT_MESSAGE:
                # message_mean: the output, re-run over the prompt's KV, is written as one more message
                job.kv.truncate(job.base + len(job.tokens))
                chunks.append(job.generated)
                writes.append(job.request.write_output)
                messages.append([max(job.message_ids, default=0) + 1] * len(job.generated))
                continue
            size = len(job.tokens) - job.fed if self.model.writes_messages else self.prefill_chunk
            chunks.append(list(job.tokens[job.fed : job.fed + size]))
            writes.append(job.write_input)
            messages.append(list(job.message_ids[job.fed : job.fed + size]))
        logits = self._forward(jobs, chunks, writes, messages)
        for b, job in enumerate(jobs):
            if job.phase == OUTPUT_MESSAGE:
                self._finish(job)
                continue
            job.fed += len(chunks[b])
            if job.fed < len(job.tokens):
                continue
            job.trace.prefilled()
            if job.request is None:
                job.events.put(job.kv if job.reencode else self.pool[job.slot].clone())
                job.phase = DONE
            else:
                self._accept(job, sample_next(logits[b], job.request.sampling, job.generator))

    def _step_decode(self, jobs: list[_Job]) -> None:
        writes = [job.request.write_output and not self.model.writes_messages for job in jobs]
        logits = self._forward(jobs, [[job.next_token] for job in jobs], writes, [[-1] for _ in jobs])
        for b, job in enumerate(jobs):
            if job.phase == CLOSING:
                self._finish(job)
            else:
                self._accept(job, sample_next(logits[b], job.request.sampling, job.generator))

    def _accept(self, job: _Job, token: int) -> None:
        """A token was sampled: stream it, and decide whether generation goes on."""
        job.generated.append(token)
        events, finish = token_events(job.detok, token, self.end_of_turn_ids, job.request, len(job.generated))
        for event in events:
            job.events.put(event)
        if finish is None:
            job.next_token, job.phase = token, DECODE
        else:
            job.finish = finish
            self._close(job)

    def _close(self, job: _Job) -> None:
        """Generation ended: the output still has to be written where the request asks for it, and fed in full
        when the request keeps its KV as context."""
        request = job.request
        if not (request.write_output or request.keep_context):
            self._finish(job)
        elif self.model.writes_messages:
            job.phase = OUTPUT_MESSAGE
        else:
            job.next_token, job.phase = job.generated[-1], CLOSING  # feed the last token

    def _finish(self, job: _Job) -> None:
        request = job.request
        job.events.put(
            GenerationOutcome(
                state=self.pool[job.slot].clone(),
                finish_reason=job.finish,
                prompt_tokens=len(job.tokens),
                generated_tokens=len(job.generated),
                written_tokens=request.tokens_written(len(job.generated), self.model.writes_messages),
                text=job.detok.text,
                context=job.kv if request.keep_context else None,
            )
        )
        job.trace.finished(generated_tokens=len(job.generated), finish_reason=job.finish)
        job.phase = DONE
