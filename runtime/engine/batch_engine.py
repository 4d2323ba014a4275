"""The continuous-batching engine: one loop thread runs the model for every request in flight.

Requests of different sessions are admitted between steps (up to `max_batch` at a time, scheduler.py), prefilled
together in ragged batches of up to `prefill_chunk` tokens each, then decoded together one token per step
(runner.py). Each running request's memory lives in a slot of the state pool (state_pool.py); sessions that are not
running hold no slot: their memory is the committed state in the session manager.

Keep the loop thread the only long-lived thread that runs model work: with libgomp (PyTorch's OpenMP), a second
thread that ran a parallel region keeps its worker pool, threads then outnumber cores, its workers' spin-waits are
throttled, and oneDNN's GEMMs in the loop thread slow by about a quarter for the life of the process
(bench/openmp_threads.py: one forward on the main thread leaves the engine at 0.72x its tokens/s; one on a thread
that ends leaves no pool behind and costs nothing).

It implements the Engine protocol, as its sequential twin does (engine/sequential.py, which the tests compare it
with); the caller commits a returned state only when the whole call succeeded, and closing a generation early
cancels it at the next step.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator

import torch

from deltamem.runtime.engine.chunk_pacer import ChunkPacer
from deltamem.runtime.engine.detokenizer import IncrementalDetokenizer
from deltamem.runtime.engine.inputs import InputEncoder
from deltamem.runtime.engine.job import Decoding, Job, JobKind, Phase
from deltamem.runtime.engine.job_trace import JobTrace
from deltamem.runtime.engine.kv import SequenceKV
from deltamem.runtime.engine.requests import EncodedInput, GenerationOutcome, GenerationRequest, TokenEvent
from deltamem.runtime.engine.runner import ModelRunner
from deltamem.runtime.engine.sampling import make_generator, sample_next
from deltamem.runtime.engine.scheduler import Scheduler
from deltamem.runtime.engine.sequential import DEFAULT_PREFILL_CHUNK
from deltamem.runtime.engine.state_pool import StatePool
from deltamem.runtime.engine.streaming import end_of_turn_ids, token_events
from deltamem.runtime.errors import CallCancelled
from deltamem.runtime.model.backbone import LoadedModel
from deltamem.runtime.model.state_bound import model_row_bound

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 8
CANCEL_POLL_S = 0.2  # how often a waiting write checks that its caller still wants it


class BatchEngine:
    keeps_context = True

    def __init__(
        self,
        loaded: LoadedModel,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_input_tokens: int | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.backbone_fingerprint = loaded.backbone_fingerprint
        self.adapter_fingerprint = loaded.adapter_fingerprint
        self.state_bound = model_row_bound(loaded.model)  # what ImportState accepts
        self.prefill_chunk = prefill_chunk
        self.max_batch = max_batch
        self.device = next(self.model.parameters()).device
        vocab_size = self.model.backbone.get_input_embeddings().num_embeddings
        self.inputs = InputEncoder(self.tokenizer, vocab_size, max_input_tokens)
        self.end_of_turn_ids = end_of_turn_ids(self.model.backbone.generation_config.eos_token_id, self.tokenizer)
        self.pool = StatePool(max_batch, self.model.state_shape, device=self.device)
        self.scheduler = Scheduler(self.pool)
        self.runner = ModelRunner(self.model, self.pool, self.device)
        self.pacer = ChunkPacer(prefill_chunk)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()  # orders submissions against the loop's start and stop
        self._closing = False
        self._stopped = False  # the loop has ended: submissions are refused rather than left waiting

    # ---- the Engine protocol -------------------------------------------------------------------------------
    @property
    def slots_in_use(self) -> int:
        return self.pool.in_use

    @property
    def steps(self) -> int:
        return self.runner.steps

    @property
    def max_batch_seen(self) -> int:
        return self.runner.max_batch_seen

    def empty_state(self) -> torch.Tensor:
        return self.model.empty_state(1, self.device)[0]

    def write(self, state: torch.Tensor, encoded: EncodedInput, still_wanted=None) -> tuple[torch.Tensor, int]:
        job = self._job(JobKind.WRITE, encoded.ids, encoded.message_ids, True, state)
        self._submit(job)
        while True:
            try:
                return job.next_event(timeout=CANCEL_POLL_S), encoded.tokens_written(self.model.writes_messages)
            except queue.Empty:
                if still_wanted is not None and not still_wanted():
                    job.cancelled.set()  # retired at the next step: its slot and KV are freed
                    self._wake.set()
                    raise CallCancelled("the call stopped being wanted during its write; nothing was written") from None

    def encode_context(self, state: torch.Tensor, tokens: tuple[int, ...], position: int) -> SequenceKV:
        kv = SequenceKV(self.model.num_layers)
        kv.position = position
        job = self._job(JobKind.REENCODE, tokens, (-1,) * len(tokens), False, state, kv)
        self._submit(job)
        return job.next_event()

    def generate(
        self, state: torch.Tensor, request: GenerationRequest, context: SequenceKV | None = None
    ) -> Iterator[TokenEvent | GenerationOutcome]:
        message_ids = request.prompt_message_ids or (0,) * len(request.prompt_ids)
        job = self._job(JobKind.GENERATE, request.prompt_ids, message_ids, request.write_input, state, context)
        job.request = request
        job.decoding = Decoding(IncrementalDetokenizer(self.tokenizer, request.stop), make_generator(request.sampling))
        self._submit(job)
        try:
            while True:
                event = job.next_event()
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
    def _job(self, kind, tokens, message_ids, write_input, state, kv=None) -> Job:
        kv = kv if kv is not None else SequenceKV(self.model.num_layers)
        return Job(
            kind=kind,
            tokens=tuple(tokens),
            message_ids=tuple(message_ids),
            write_input=write_input,
            initial_state=state.to(self.device, torch.float32),
            kv=kv,
            trace=JobTrace.start(kind.value, len(tokens), kv.length),
        )

    def _submit(self, job: Job) -> None:
        with self._start_lock:
            if self._closing or self._stopped:
                raise RuntimeError("the engine stopped: it takes no more requests")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="deltamem-engine", daemon=True)
                self._thread.start()
            self.scheduler.submit(job)
        self._wake.set()

    # ---- the loop -------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._closing:
                self._step()
        except BaseException:
            log.exception("the engine loop stopped")
            raise
        finally:
            with self._start_lock:
                self._stopped = True
            self.scheduler.fail_all(RuntimeError("the engine stopped before this request finished"))

    def _step(self) -> None:
        self.scheduler.admit()
        if not self.scheduler.running:
            self._wake.wait(0.5)
            self._wake.clear()
            return
        for phases, step in (
            ((Phase.PREFILL, Phase.OUTPUT_MESSAGE), self._step_prefill),
            ((Phase.DECODE, Phase.FEED_LAST), self._step_decode),
        ):
            group = self.scheduler.ready(phases)
            if group:
                try:
                    step(group)
                except Exception as exc:  # noqa: BLE001 - reported to the requests, the loop lives on
                    log.exception("engine step failed")
                    for job in group:
                        job.fail(exc)
        self.scheduler.retire()

    def _step_prefill(self, jobs: list[Job]) -> None:
        """Short prefills together in one forward; each long one (more than one chunk) in its own, paced so that
        the others are not held behind it (chunk_pacer.py)."""
        long, short = [], []
        for job in jobs:  # partitioned by the test itself: `in` would compare Jobs field by field (their tensors too)
            is_long = job.phase is Phase.PREFILL and len(job.tokens) > self.prefill_chunk
            (long if is_long and not self.model.writes_messages else short).append(job)
        contended = len(self.scheduler.running) > 1 or self.scheduler.has_waiting()
        if short:
            self._prefill_forward(short, self.prefill_chunk)
        for job in long:
            size = self.pacer.size(contended)
            fed = min(size, len(job.tokens) - job.fed)
            start = time.perf_counter()
            self._prefill_forward([job], size)
            self.pacer.observe(fed, time.perf_counter() - start, contended)

    def _prefill_forward(self, jobs: list[Job], chunk: int) -> None:
        chunks, writes, messages = [], [], []
        for job in jobs:
            if job.phase is Phase.OUTPUT_MESSAGE:
                # message_mean: the output, re-run over the prompt's KV, is written as one more message
                generated = job.decoding.generated
                job.kv.truncate(job.base + len(job.tokens))
                chunks.append(generated)
                writes.append(job.request.write_output)
                messages.append([max(job.message_ids, default=0) + 1] * len(generated))
                continue
            size = len(job.tokens) - job.fed if self.model.writes_messages else chunk
            chunks.append(list(job.tokens[job.fed : job.fed + size]))
            writes.append(job.write_input)
            messages.append(list(job.message_ids[job.fed : job.fed + size]))
        logits = self.runner.forward(jobs, chunks, writes, messages)
        for b, job in enumerate(jobs):
            if job.phase is Phase.OUTPUT_MESSAGE:
                self._finish(job)
                continue
            job.fed += len(chunks[b])
            if job.fed < len(job.tokens):
                continue
            job.trace.prefilled()
            if job.kind is JobKind.WRITE:
                job.deliver(self.pool.read(job.slot))
                job.phase = Phase.DONE
            elif job.kind is JobKind.REENCODE:
                job.deliver(job.kv)
                job.phase = Phase.DONE
            else:
                self._sample(job, logits[b])

    def _step_decode(self, jobs: list[Job]) -> None:
        writes = [job.request.write_output and not self.model.writes_messages for job in jobs]
        logits = self.runner.forward(jobs, [[job.decoding.next_token] for job in jobs], writes, [[-1] for _ in jobs])
        for b, job in enumerate(jobs):
            if job.phase is Phase.FEED_LAST:
                self._finish(job)
            else:
                self._sample(job, logits[b])

    def _sample(self, job: Job, logits: torch.Tensor) -> None:
        """Sample and stream `job`'s next token. What goes wrong here (non-finite output, a detokenizer error) is
        this job's alone: it fails, and the other jobs of the step go on."""
        try:
            self._accept(job, sample_next(logits, job.request.sampling, job.decoding.generator))
        except Exception as exc:  # noqa: BLE001 - reported to this request only
            log.warning("request failed while sampling: %s", exc)
            job.fail(exc)

    def _accept(self, job: Job, token: int) -> None:
        """A token was sampled: stream it, and decide whether generation goes on."""
        decoding = job.decoding
        decoding.generated.append(token)
        events, finish = token_events(decoding.detok, token, self.end_of_turn_ids, job.request, len(decoding.generated))
        for event in events:
            job.deliver(event)
        if finish is None:
            decoding.next_token, job.phase = token, Phase.DECODE
        else:
            decoding.finish = finish
            self._end_generation(job)

    def _end_generation(self, job: Job) -> None:
        """Generation ended: the output still has to be written where the request asks for it, and fed in full
        when the request keeps its KV as context."""
        request = job.request
        if not (request.write_output or request.keep_context):
            self._finish(job)
        elif self.model.writes_messages:
            job.phase = Phase.OUTPUT_MESSAGE
        else:
            job.decoding.next_token, job.phase = job.decoding.generated[-1], Phase.FEED_LAST

    def _finish(self, job: Job) -> None:
        request, decoding = job.request, job.decoding
        job.deliver(
            GenerationOutcome(
                state=self.pool.read(job.slot),
                finish_reason=decoding.finish,
                prompt_tokens=len(job.tokens),
                generated_tokens=len(decoding.generated),
                written_tokens=request.tokens_written(len(decoding.generated), self.model.writes_messages),
                text=decoding.detok.text,
                context=job.kv if request.keep_context else None,
            )
        )
        job.trace.finished(generated_tokens=len(decoding.generated), finish_reason=decoding.finish)
        job.phase = Phase.DONE
