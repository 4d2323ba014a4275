"""SGLangEngine: the Engine protocol the service uses (engine/protocol.py), on top of `sglang.Engine` running our
EntryClass.

Only GPU machines run this (SGLang needs CUDA); see docs/sglang.md for what has been run. Differences from the
PyTorch BatchEngine, each deliberate:
- No kept context: SGLang does not hand a request's KV back, so only sessions with context policy `none` work;
  a request that brings or asks for context is refused with InvalidRequest.
- Token-state adapters only (TSW, MSW); message_mean adapters are refused at start.
- SGLang never feeds the last sampled token back, so when the output is written the final memory is recomputed by
  a second, prefill-only request over prompt + output from the starting memory (exact: token-state writes do not
  depend on chunking). The first request still writes while decoding, so every token reads the right memory.
- Sampling is SGLang's: greedy decoding matches the PyTorch engine token for token, seeded sampling does not.
- The radix (prefix) cache is off: a token's KV depends on the memory it was computed under, not only on tokens.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

from deltamem.runtime.engine.detokenizer import IncrementalDetokenizer
from deltamem.runtime.engine.inputs import InputEncoder
from deltamem.runtime.engine.requests import EncodedInput, GenerationOutcome, GenerationRequest, TokenEvent
from deltamem.runtime.engine.sampling import SamplingParams
from deltamem.runtime.engine.streaming import end_of_turn_ids, token_events
from deltamem.runtime.errors import CallCancelled, InvalidRequest
from deltamem.runtime.model.adapter_config import AdapterConfigError, DeltaMemConfig
from deltamem.runtime.model.backbone import backbone_fingerprint
from deltamem.runtime.model.checkpoint import adapter_fingerprint, load_adapter_weights
from deltamem.runtime.model.memory_model import UnsupportedBackbone
from deltamem.runtime.model.state_bound import checkpoint_input_norms, reachable_row_norms
from deltamem.runtime.sglang_backend import PACKAGE, handoff
from deltamem.runtime.sglang_backend.adapter_weights import build_adapters
from deltamem.runtime.sglang_backend.mailbox import Mailbox, RequestFlags, encode_rid

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen3ForCausalLM")
_END = object()


def server_args(model_dir: Path, max_batch: int, **overrides) -> dict:
    """The sglang.Engine arguments δ-mem needs: one GPU, no prefix cache (KV depends on the memory), no CUDA
    graphs (the memory hooks are Python), no overlap or mixed batches (each forward is planned alone), token ids
    in and out (our tokenizer and detokenizer), cumulative streaming."""
    return {
        "model_path": str(model_dir),
        "tp_size": 1,
        "skip_tokenizer_init": True,
        "disable_radix_cache": True,
        "disable_cuda_graph": True,
        "disable_overlap_schedule": True,
        "enable_mixed_chunk": False,
        "incremental_streaming_output": False,
        "max_running_requests": max_batch,
        "random_seed": 0,
        **overrides,
    }


def sampling_args(sampling: SamplingParams, max_new_tokens: int) -> dict:
    """Our sampling parameters in SGLang's vocabulary; end of turn is decided here, so SGLang ignores EOS."""
    return {
        "max_new_tokens": max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k or -1,
        "ignore_eos": True,
    }


class SGLangEngine:
    """The Engine protocol (engine/protocol.py) on sglang.Engine."""

    keeps_context = False  # for the service: sessions with a kept context (full, window) cannot run here

    def __init__(
        self,
        model_dir: Path,
        adapter_dir: Path,
        max_batch: int = 8,
        max_input_tokens: int | None = None,
        **sglang_overrides,
    ):
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig

        model_dir, adapter_dir = Path(model_dir), Path(adapter_dir)
        hf_config = AutoConfig.from_pretrained(model_dir)
        architecture = (getattr(hf_config, "architectures", None) or [None])[0]
        if architecture not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedBackbone(f"{model_dir}: {architecture} is not one of {SUPPORTED_ARCHITECTURES}")
        config = DeltaMemConfig.load(adapter_dir)
        if config.memory_write_granularity != "token":
            raise AdapterConfigError("the SGLang backend serves token-state adapters only (not message_mean)")
        layers = build_adapters(config, hf_config)
        load_adapter_weights(adapter_dir, list(layers))
        self.adapter_fingerprint = adapter_fingerprint(config, list(layers))
        self.backbone_fingerprint = backbone_fingerprint(model_dir)
        norms = checkpoint_input_norms(model_dir, hf_config.num_hidden_layers)
        self.state_bound = reachable_row_norms(list(layers), norms)  # what ImportState accepts
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.inputs = InputEncoder(self.tokenizer, hf_config.vocab_size, max_input_tokens)
        self.device = torch.device("cpu")  # where the states this engine returns live
        self.max_batch = max_batch
        self.state_shape = (hf_config.num_hidden_layers, config.num_state_heads, config.rank, config.rank)
        try:
            eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
        except OSError:
            eos = None
        self.end_of_turn_ids = end_of_turn_ids(eos, self.tokenizer)
        # a generation that writes its output holds two slots for a moment (its own, then the final-state pass)
        self.mailbox = Mailbox.create(2 * max_batch, self.state_shape)
        self._slots = threading.BoundedSemaphore(self.mailbox.capacity)
        handoff.announce(PACKAGE, adapter_dir, self.mailbox.env_value())
        self._loop = asyncio.new_event_loop()
        self._sgl = None
        started: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run_loop, args=(server_args(model_dir, max_batch, **sglang_overrides), started), daemon=True
        )
        self._thread.start()
        started.result()

    def _run_loop(self, kwargs: dict, started: concurrent.futures.Future) -> None:
        """sglang.Engine binds itself to the event loop of the thread that makes it; ours lives here."""
        asyncio.set_event_loop(self._loop)
        try:
            import sglang
            from sglang.srt.models.registry import ModelRegistry, import_model_classes

            ModelRegistry.models.update(import_model_classes(PACKAGE))  # in case the registry was imported earlier
            self._sgl = sglang.Engine(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the constructor's caller
            started.set_exception(exc)
            return
        started.set_result(None)
        self._loop.run_forever()

    # ---- the interface the service uses ---------------------------------------------------------------------
    @property
    def slots_in_use(self) -> int:
        return self.mailbox.initial.in_use

    def empty_state(self) -> torch.Tensor:
        return torch.zeros(self.state_shape, dtype=torch.float32)

    def write(self, state: torch.Tensor, encoded: EncodedInput, still_wanted=None) -> tuple[torch.Tensor, int]:
        """SGLang chunks the prefill itself; a cancelled call is noticed only once SGLang is done with it."""
        new_state = self._written_state(state, encoded.ids)
        if still_wanted is not None and not still_wanted():
            raise CallCancelled("the call stopped being wanted during its write; nothing was written")
        return new_state, len(encoded.ids)

    def encode_context(self, state: torch.Tensor, tokens: tuple[int, ...], position: int):
        raise InvalidRequest("the sglang backend keeps no KV context: use sessions with context policy 'none'")

    def generate(
        self, state: torch.Tensor, request: GenerationRequest, context: object | None = None
    ) -> Iterator[TokenEvent | GenerationOutcome]:
        if context is not None or request.keep_context:
            raise InvalidRequest("the sglang backend keeps no KV context: use sessions with context policy 'none'")
        slot = self._acquire(state)
        flags = RequestFlags(slot, request.write_input, request.write_output)
        detok = IncrementalDetokenizer(self.tokenizer, request.stop)
        generated: list[int] = []
        finish = None
        try:
            stream = self._stream(encode_rid(flags), request.prompt_ids, request.sampling, request.max_new_tokens)
            try:
                for token in (t for chunk in stream for t in chunk):
                    generated.append(token)
                    events, finish = token_events(detok, token, self.end_of_turn_ids, request, len(generated))
                    yield from events
                    if finish is not None:
                        break
            finally:
                stream.close()  # aborts SGLang's request if it is still running, and waits for it to end
            if finish is None:  # SGLang ended the stream itself (at its own length limit)
                finish = "length"
                tail = detok.flush()
                if tail:
                    yield TokenEvent((), tail)
            if request.write_input and not request.write_output:
                new_state = self.mailbox.result[slot].clone()
            else:
                new_state = state.detach().to(torch.float32).cpu().clone()
        finally:
            self._release(slot)
        if request.write_output:
            new_state = self._written_state(state, request.prompt_ids + tuple(generated))
        yield GenerationOutcome(
            state=new_state,
            finish_reason=finish,
            prompt_tokens=len(request.prompt_ids),
            generated_tokens=len(generated),
            written_tokens=request.tokens_written(len(generated), False),
            text=detok.text,
        )

    def close(self, timeout: float = 30.0) -> None:
        """Stop the event loop, then SGLang. Note: sglang.Engine.shutdown kills every child process of this
        process (its own scheduler and detokenizer, and any other child)."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if self._sgl is not None:
            self._sgl.shutdown()
        self.mailbox.unlink()

    # ---- requests -------------------------------------------------------------------------------------------
    def _acquire(self, state: torch.Tensor) -> int:
        self._slots.acquire()
        try:
            return self.mailbox.initial.alloc(state.detach().to(torch.float32).cpu())
        except BaseException:
            self._slots.release()
            raise

    def _release(self, slot: int) -> None:
        self.mailbox.initial.free(slot)
        self._slots.release()

    def _written_state(self, state: torch.Tensor, ids: tuple[int, ...]) -> torch.Tensor:
        """The memory after writing `ids` from `state`: a prefill-only request (one token sampled, discarded)."""
        slot = self._acquire(state)
        try:
            stream = self._stream(encode_rid(RequestFlags(slot, True, False)), ids, SamplingParams(), 1)
            for _ in stream:
                pass
            return self.mailbox.result[slot].clone()
        finally:
            self._release(slot)

    def _stream(self, rid: str, ids, sampling: SamplingParams, max_new_tokens: int) -> Iterator[list[int]]:
        """New output ids of one SGLang request as they come; closing early aborts the request and waits until
        SGLang has let it go, so that its slot is never reused while the model may still write it."""
        out: queue.SimpleQueue = queue.SimpleQueue()

        async def pump() -> None:
            try:
                chunks = await self._sgl.async_generate(
                    input_ids=list(ids), sampling_params=sampling_args(sampling, max_new_tokens), rid=rid, stream=True
                )
                seen = 0
                async for chunk in chunks:
                    new = list(chunk["output_ids"][seen:])
                    seen += len(new)
                    if new:
                        out.put(new)
                out.put(_END)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
                out.put(exc)

        running = asyncio.run_coroutine_threadsafe(pump(), self._loop)
        ended = False
        try:
            while True:
                item = out.get()
                if item is _END:
                    ended = True
                    return
                if isinstance(item, BaseException):
                    ended = True
                    raise item
                yield item
        finally:
            if not ended:
                self._loop.call_soon_threadsafe(self._sgl.tokenizer_manager.abort_request, rid)
                try:
                    running.result(timeout=60)
                except Exception:  # noqa: BLE001 - the abort's own outcome does not matter here
                    pass
