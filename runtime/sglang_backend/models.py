"""EntryClass for SGLang: its Llama and Qwen3 causal LMs with a δ-mem adapter on every attention layer.

Loaded when SGLang runs with SGLANG_EXTERNAL_MODEL_PACKAGE=deltamem.runtime.sglang_backend; the classes keep
SGLang's names, so a checkpoint whose config.json says LlamaForCausalLM or Qwen3ForCausalLM resolves to them.
SGLang's model code is not changed: hooks on each layer's self_attn read its input (after the input RMSNorm),
run the layer's memory read and write for every request of the batch, and add the corrections to the q slice of
qkv_proj's output and to o_proj's output. Each forward is planned from the ForwardBatch: the requests' rids
carry their mailbox slot and write flags, their request-pool rows index the state pool.

The adapter comes from the directory the engine announced (handoff.py; reference format). Supported: tensor-parallel
size 1, token-state writes (TSW, MSW), unquantized models, CUDA graphs off (the hooks are Python).
SGLang 0.5.23 has no SmolLM3 model, so there is no SmolLM3 entry here.
"""

from __future__ import annotations

from pathlib import Path

import torch
from sglang.srt.models.llama import LlamaForCausalLM as _SGLangLlama
from sglang.srt.models.qwen3 import Qwen3ForCausalLM as _SGLangQwen3
from sglang.srt.runtime_context import get_parallel

from deltamem.runtime.model.adapter_config import AdapterConfigError, DeltaMemConfig
from deltamem.runtime.sglang_backend import handoff
from deltamem.runtime.sglang_backend.adapter_weights import ATTRIBUTE, build_adapters, load_reference_adapter
from deltamem.runtime.sglang_backend.batch_memory import BatchPlan, correct_qkv, layer_memory
from deltamem.runtime.sglang_backend.mailbox import Mailbox
from deltamem.runtime.sglang_backend.request_states import RequestStates


def adapter_dir_from_env() -> Path:
    found = handoff.adapter_dir()
    if found is None:
        raise AdapterConfigError(f"{handoff.ADAPTER_ENV_VAR} must name a δ-mem adapter directory (reference format)")
    return found


class _DeltaMem:
    """What both entry classes add to SGLang's model (the class after this one in their bases): the adapters,
    the request states and the hooks, attached after SGLang builds the model, loaded after its weights."""

    def __init__(self, config, quant_config=None, prefix: str = ""):
        super().__init__(config, quant_config=quant_config, prefix=prefix)
        self._attach_memory(config)

    @torch.no_grad()
    def forward(self, input_ids, positions, forward_batch, *args, **kwargs):
        return self._memory_forward(super().forward, input_ids, positions, forward_batch, *args, **kwargs)

    def load_weights(self, weights):
        result = super().load_weights(weights)
        self._load_adapter()
        return result

    def _attach_memory(self, hf_config) -> None:
        tp_size = getattr(get_parallel(), "tp_size", 1)
        if tp_size != 1:
            raise NotImplementedError(f"the δ-mem SGLang model supports tensor-parallel size 1, not {tp_size}")
        self.delta_mem_config = DeltaMemConfig.load(adapter_dir_from_env())
        if self.delta_mem_config.memory_write_granularity != "token":
            raise AdapterConfigError("the SGLang backend serves token-state adapters only (not message_mean)")
        setattr(self, ATTRIBUTE, build_adapters(self.delta_mem_config, hf_config))
        self._states: RequestStates | None = None
        self._plan: BatchPlan | None = None
        for index, layer in enumerate(self.model.layers):
            attn = layer.self_attn
            attn.register_forward_pre_hook(self._scan_hook(index), with_kwargs=True)
            attn.qkv_proj.register_forward_hook(self._query_hook(index, attn.q_size))
            attn.o_proj.register_forward_hook(self._output_hook(index))

    @property
    def state_shape(self) -> tuple[int, int, int, int]:
        config = self.delta_mem_config
        return (len(self.model.layers), config.num_state_heads, config.rank, config.rank)

    def _request_states(self) -> RequestStates:
        if self._states is None:
            device = next(getattr(self, ATTRIBUTE).parameters()).device
            self._states = RequestStates(self.state_shape, device, Mailbox.from_env(self.state_shape))
        return self._states

    def _plan_forward(self, forward_batch) -> BatchPlan | None:
        mode = forward_batch.forward_mode
        if mode.is_idle() or forward_batch.batch_size == 0:
            return None
        if mode.is_decode():
            lengths, prefixes, decode = [1] * forward_batch.batch_size, None, True
        elif mode.is_extend() and not mode.is_mixed():
            lengths, prefixes = forward_batch.extend_seq_lens_cpu, forward_batch.extend_prefix_lens_cpu
            if lengths is None:  # SGLang's gpu-only path leaves the host copies unset
                lengths, prefixes = forward_batch.extend_seq_lens.tolist(), forward_batch.extend_prefix_lens.tolist()
            decode = False
        else:
            raise NotImplementedError(f"forward mode {mode.name} is not supported with δ-mem (disable mixed chunks)")
        rids = forward_batch.rids or [None] * forward_batch.batch_size
        return self._request_states().begin(rids, forward_batch.req_pool_indices, lengths, prefixes, decode)

    def _scan_hook(self, index: int):
        def hook(module, args, kwargs):
            plan = self._plan
            if plan is not None:
                x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[1]
                adapter = getattr(self, ATTRIBUTE)[index]
                plan.reads[index] = layer_memory(adapter, x, self._states.pool, index, plan)

        return hook

    def _query_hook(self, index: int, q_size: int):
        def hook(module, args, output):
            plan = self._plan
            if plan is None:
                return None
            qkv, bias = output
            return correct_qkv(getattr(self, ATTRIBUTE)[index], qkv, plan.reads[index], q_size), bias

        return hook

    def _output_hook(self, index: int):
        def hook(module, args, output):
            plan = self._plan
            if plan is None:
                return None
            out, bias = output
            return getattr(self, ATTRIBUTE)[index].correct_output(out, plan.reads[index]), bias

        return hook

    def _memory_forward(self, base_forward, input_ids, positions, forward_batch, *args, **kwargs):
        self._plan = self._plan_forward(forward_batch)
        try:
            result = base_forward(input_ids, positions, forward_batch, *args, **kwargs)
            if self._plan is not None:
                self._states.end(self._plan)
            return result
        finally:
            self._plan = None

    def _load_adapter(self) -> None:
        load_reference_adapter(self, adapter_dir_from_env())


class LlamaForCausalLM(_DeltaMem, _SGLangLlama):
    """SGLang's Llama (SmolLM2 and other Llama-style checkpoints) with δ-mem."""


class Qwen3ForCausalLM(_DeltaMem, _SGLangQwen3):
    """SGLang's Qwen3 with δ-mem (the released adapter is for Qwen3-4B-Instruct-2507)."""


EntryClass = [LlamaForCausalLM, Qwen3ForCausalLM]
