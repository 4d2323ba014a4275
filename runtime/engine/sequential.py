"""The sequential engine: the obviously correct twin of the batching engine, one request at a time.

It runs each call alone through Hugging Face's own `DynamicCache` and masks; the tests run the same requests
through both engines and compare tokens and states. It keeps no context across calls (the kept-context policies
need the batching engine's KV) and implements the same Engine protocol, inheriting nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import torch
from transformers import DynamicCache

from deltamem.runtime.engine.detokenizer import IncrementalDetokenizer
from deltamem.runtime.engine.inputs import InputEncoder
from deltamem.runtime.engine.requests import EncodedInput, GenerationOutcome, GenerationRequest, TokenEvent
from deltamem.runtime.engine.sampling import make_generator, sample_next
from deltamem.runtime.engine.streaming import end_of_turn_ids, token_events
from deltamem.runtime.errors import CallCancelled, InvalidRequest
from deltamem.runtime.model.backbone import LoadedModel
from deltamem.runtime.model.state_bound import model_row_bound

DEFAULT_PREFILL_CHUNK = 512


class SequentialEngine:
    keeps_context = False
    max_batch = 1

    def __init__(self, loaded: LoadedModel, prefill_chunk: int = DEFAULT_PREFILL_CHUNK):
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.backbone_fingerprint = loaded.backbone_fingerprint
        self.adapter_fingerprint = loaded.adapter_fingerprint
        self.state_bound = model_row_bound(loaded.model)  # what ImportState accepts
        self.prefill_chunk = prefill_chunk
        self.device = next(self.model.parameters()).device
        self.inputs = InputEncoder(self.tokenizer, self.model.backbone.get_input_embeddings().num_embeddings)
        self.end_of_turn_ids = end_of_turn_ids(self.model.backbone.generation_config.eos_token_id, self.tokenizer)
        self._lock = threading.Lock()  # one forward at a time: the model's q/o forwards share one pass
        self.slots_in_use = 0

    def close(self) -> None:
        pass

    def encode_context(self, state: torch.Tensor, tokens: tuple[int, ...], position: int):
        raise InvalidRequest("the sequential engine keeps no KV context: use sessions with context policy 'none'")

    # ---- computation --------------------------------------------------------------------------------------
    def empty_state(self) -> torch.Tensor:
        return self.model.empty_state(1, self.device)[0]

    def _forward(
        self,
        ids: Sequence[int],
        state: torch.Tensor,
        write: bool,
        cache: DynamicCache,
        message_ids: Sequence[int] | None = None,
    ):
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        messages = None
        if self.model.writes_messages and write:
            messages = torch.tensor([list(message_ids)], dtype=torch.long, device=self.device)
        with self._lock, torch.inference_mode():
            out = self.model(
                input_ids,
                state[None],
                write=write,
                message_ids=messages,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[0, -1], out.state[0]

    def _prefill(
        self,
        ids: Sequence[int],
        state: torch.Tensor,
        write: bool,
        cache: DynamicCache,
        message_ids: Sequence[int] | None = None,
        still_wanted=None,
    ):
        """Feed `ids` in chunks sharing one KV cache; for token-state writes the result does not depend on the
        chunk size. Message-mean writes need the whole call in one forward (all tokens read its start state).
        Between chunks, a call no longer `still_wanted()` raises CallCancelled."""
        if self.model.writes_messages:
            return self._forward(ids, state, write, cache, message_ids or (0,) * len(ids))
        logits = None
        for start in range(0, len(ids), self.prefill_chunk):
            if still_wanted is not None and not still_wanted():
                raise CallCancelled("the call stopped being wanted during its write; nothing was written")
            logits, state = self._forward(ids[start : start + self.prefill_chunk], state, write, cache)
        return logits, state

    def write(self, state: torch.Tensor, encoded: EncodedInput, still_wanted=None) -> tuple[torch.Tensor, int]:
        """Write the input into a copy of `state` ([L, N, r, r]); return the new state and tokens written."""
        _, new_state = self._prefill(encoded.ids, state, True, DynamicCache(), encoded.message_ids, still_wanted)
        written = encoded.tokens_written(self.model.writes_messages)
        return new_state, written

    def generate(
        self, state: torch.Tensor, request: GenerationRequest, context: DynamicCache | None = None
    ) -> Iterator[TokenEvent | GenerationOutcome]:
        """Yield a TokenEvent per generated token, then one GenerationOutcome. Closing the iterator early
        abandons the call; `state` itself is never modified. `context` (extended in place) is KV to continue
        after; the KV is never handed back, so requests that keep their context are refused."""
        if request.keep_context:
            raise InvalidRequest("the sequential engine keeps no KV context: use sessions with context policy 'none'")
        cache = context if context is not None else DynamicCache()
        base = cache.get_seq_length()
        logits, state = self._prefill(request.prompt_ids, state, request.write_input, cache, request.prompt_message_ids)
        # token-state adapters write each generated token as it is fed back; message-mean ones write the whole
        # output as one message at the end
        write_each_token = request.write_output and not self.model.writes_messages
        generator = make_generator(request.sampling)
        detok = IncrementalDetokenizer(self.tokenizer, request.stop)
        generated: list[int] = []
        finish = None
        while finish is None:
            token = sample_next(logits, request.sampling, generator)
            generated.append(token)
            events, finish = token_events(detok, token, self.end_of_turn_ids, request, len(generated))
            yield from events
            if finish is None:
                logits, state = self._forward([token], state, write_each_token, cache)
        if write_each_token:
            # the last sampled token was never fed back; write it so every generated token is in memory
            _, state = self._forward([generated[-1]], state, True, cache)
        elif request.write_output:
            # re-run the output over the prompt's KV: its attention inputs are those seen while decoding (the
            # state read is the same, nothing having been written since the prompt), written as one message
            extra = cache.get_seq_length() - base - len(request.prompt_ids)
            if extra:
                cache.crop(-extra)  # this transformers version only crops by a count from the end
            next_message = max(request.prompt_message_ids or (0,), default=0) + 1
            _, state = self._forward(generated, state, True, cache, (next_message,) * len(generated))
        written = request.tokens_written(len(generated), self.model.writes_messages)
        yield GenerationOutcome(
            state=state,
            finish_reason=finish,
            prompt_tokens=len(request.prompt_ids),
            generated_tokens=len(generated),
            written_tokens=written,
            text=detok.text,
        )
