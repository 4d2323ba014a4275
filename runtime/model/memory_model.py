"""A frozen causal LM with a δ-mem adapter on every attention layer.

The backbone's code is not modified: each attention layer's `q_proj` and `o_proj` get a forward of ours. The
q_proj forward receives the attention input x (after the input RMSNorm), runs the layer's read → write scan and
adds the query correction (before q_norm and RoPE); the o_proj forward adds the output correction (before the
residual add). Outside `MemoryModel.forward` both are the plain projections, so the same module also serves as
the frozen backbone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from deltamem.kernels import MemoryOps, delta_rule, memory_ops
from deltamem.runtime.model.adapter import TRAINABLE_PARAMETER_NAMES, DeltaMemLayer
from deltamem.runtime.model.adapter_config import DeltaMemConfig

SUPPORTED_MODEL_TYPES = ("llama", "qwen3", "smollm3")


class UnsupportedBackbone(ValueError):
    """The backbone's architecture has no δ-mem attention mapping here."""


@dataclass
class _Pass:
    """What the q/o forwards share during one pass: its inputs, and the reads and states they produce.

    Inference passes that write token by token run the kernels' one-call ops (`ops`): a decode pass (one token
    per row) a DecodeLayer per layer on its own copy of the state (`updated`), a pass of several tokens the scan.
    Every other pass (read-only, message means, gradients) runs the differentiable projection and delta rule."""

    state: torch.Tensor  # [B, L, N, r, r] fp32
    write: bool
    write_mask: torch.Tensor | None  # [B, T] bool
    message_ids: torch.Tensor | None  # [B, T] long, -1 = not written (message_mean adapters only)
    ops: MemoryOps | None = None  # inference passes with token writes: the kernels' one-call ops
    decode_layers: list | None = None  # decode passes: per layer, its DecodeLayer (kernels.memory_ops)
    decode_mask: torch.Tensor | None = None  # decode passes: [B] rows that write (None: all of them)
    updated: torch.Tensor | None = None  # decode passes: the pass's own copy of the state, updated in place
    layer_states: tuple[torch.Tensor, ...] | None = None  # the state (decode: `updated`) split per layer, once
    reads: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [B, T, N*r]
    final: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [B, N, r, r]
    corrections: dict[int, torch.Tensor] = field(default_factory=dict)  # decode: layer -> Δo [B, 1, out]
    gates: list[torch.Tensor] | None = None  # the write gates (beta) of every layer, when asked for (training)


@dataclass
class MemoryOutput:
    logits: torch.Tensor
    state: torch.Tensor  # [B, L, N, r, r] fp32, the memory after this pass (the input state when writes are off)
    past_key_values: object | None
    gates: list[torch.Tensor] | None = None  # per layer [B, T, N, r] write gates, with return_gates


class MemoryModel(nn.Module):
    """Backbone (frozen) + one `DeltaMemLayer` per attention layer."""

    def __init__(self, backbone: nn.Module, config: DeltaMemConfig):
        super().__init__()
        model_type = getattr(backbone.config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedBackbone(
                f"backbone model_type {model_type!r} is not supported (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
            )
        self.backbone = backbone
        self.config = config
        backbone.requires_grad_(False)
        attentions = [layer.self_attn for layer in backbone.model.layers]
        self.adapters = nn.ModuleList(
            DeltaMemLayer(
                config,
                hidden_size=attn.q_proj.in_features,
                query_width=attn.q_proj.out_features,
                key_width=attn.k_proj.out_features,
                value_width=attn.v_proj.out_features,
            )
            for attn in attentions
        )
        self._pass: _Pass | None = None
        # off: the q/o forwards are the plain projections and states pass through unchanged, i.e. the frozen
        # backbone in the same engine (the baseline benchmarks compare against)
        self.memory_enabled = True
        # the parameters a decode plan is built from (all but the adapter's zero K/V heads): (module, name)
        self._plan_sources = [
            (module, name)
            for adapter, attn in zip(self.adapters, attentions, strict=True)
            for module, names in ((adapter, TRAINABLE_PARAMETER_NAMES), (attn.q_proj, ("weight", "bias")))
            for name in names
            if module._parameters.get(name) is not None
        ]
        self._plans: tuple[list, list] | None = None
        for index, attn in enumerate(attentions):
            attn.q_proj.forward = self._make_query_forward(index, attn.q_proj)
            attn.o_proj.forward = self._make_output_forward(index, attn.o_proj)

    @property
    def writes_messages(self) -> bool:
        """True for sequence-state (message_mean) adapters, False for token-state ones."""
        return self.config.memory_write_granularity == "message_mean"

    @property
    def num_layers(self) -> int:
        return len(self.adapters)

    @property
    def state_shape(self) -> tuple[int, int, int, int]:
        """One session's memory: [layers, state heads, r, r]."""
        return (self.num_layers, self.config.num_state_heads, self.config.rank, self.config.rank)

    def empty_state(self, batch_size: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(batch_size, *self.state_shape, dtype=torch.float32, device=device)

    def init_adapter(self, seed: int = 0) -> None:
        """Deterministic reference-recipe init, derived from the frozen q / o weights."""
        generator = torch.Generator().manual_seed(seed)
        for adapter, layer in zip(self.adapters, self.backbone.model.layers, strict=True):
            adapter.reset_parameters(layer.self_attn.q_proj.weight, layer.self_attn.o_proj.weight, generator)

    def forward(
        self,
        input_ids: torch.Tensor,
        state: torch.Tensor,
        *,
        write: bool = True,
        write_mask: torch.Tensor | None = None,
        message_ids: torch.Tensor | None = None,
        past_key_values: object | None = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        logits_at: torch.Tensor | None = None,
        return_gates: bool = False,
    ) -> MemoryOutput:
        """input_ids: [B, T]; state: [B, L, N, r, r]. With `write` off every token reads `state` and the returned
        state is `state` itself. Token-state adapters: every token reads the state as it was before its own
        write (`write_mask` False: read but do not write). Message-mean adapters: every token reads the state
        at the start of the call, and each message (`message_ids` >= 0, in id order) is written once, from
        the mean of its tokens' attention inputs. `attention_mask` (4D) and `position_ids` pass through to the
        backbone (batched engines give their own); `logits_at` ([B] positions) returns logits [B, V] for one
        position per row instead of the `logits_to_keep` last ones. `return_gates` keeps each layer's write
        gates (beta) in MemoryOutput.gates, for training's gate regulariser."""
        if state.shape[1:] != self.state_shape or state.shape[0] != input_ids.shape[0]:
            raise ValueError(f"state has shape {list(state.shape)}, expected {[input_ids.shape[0], *self.state_shape]}")
        if self.writes_messages and write and message_ids is None:
            raise ValueError("this adapter writes per message (message_mean): message_ids are required to write")
        if not self.writes_messages and message_ids is not None:
            raise ValueError("message_ids are only for message_mean adapters; this one writes every token")
        if message_ids is not None and message_ids.shape != input_ids.shape:
            raise ValueError(f"message_ids has shape {list(message_ids.shape)}, expected {list(input_ids.shape)}")
        if write_mask is not None and input_ids.shape[1] == 1 and bool(write_mask.all()):
            write_mask = None  # decode rows that all write: skip the masking work in every layer
        run = _Pass(state=state.float().contiguous(), write=write, write_mask=write_mask, message_ids=message_ids)
        run.gates = [] if return_gates else None
        if self.memory_enabled and write and message_ids is None and not return_gates and not torch.is_grad_enabled():
            run.ops = memory_ops(input_ids.device, self.adapters[0].beta_bias.dtype)
            if input_ids.shape[1] == 1:
                run.decode_layers = self._decode_layers(run.ops)
                run.updated = run.state.clone()  # one copy for all layers, which the decode layers update in place
                run.layer_states = run.updated.unbind(1)
                run.decode_mask = None if write_mask is None else write_mask[:, 0].contiguous()
        self._pass = run if self.memory_enabled else None
        write = write and self.memory_enabled
        extra = {"attention_mask": attention_mask, "position_ids": position_ids}
        try:
            if logits_at is None:
                out = self.backbone(
                    input_ids=input_ids,
                    past_key_values=past_key_values,
                    use_cache=use_cache,
                    logits_to_keep=logits_to_keep,
                    **extra,
                )
                logits, cache = out.logits, out.past_key_values
            else:
                out = self.backbone.model(
                    input_ids=input_ids, past_key_values=past_key_values, use_cache=use_cache, **extra
                )
                rows = torch.arange(input_ids.shape[0], device=input_ids.device)
                logits = self.backbone.lm_head(out.last_hidden_state[rows, logits_at])
                cache = out.past_key_values
        finally:
            self._pass = None
        if not write:
            new_state = run.state
        elif run.updated is not None:
            new_state = run.updated
        else:
            new_state = torch.stack([run.final[i] for i in range(self.num_layers)], dim=1)
        return MemoryOutput(
            logits=logits, state=new_state, past_key_values=cache if use_cache else None, gates=run.gates
        )

    def _decode_layers(self, ops: MemoryOps) -> list:
        """Per layer, the DecodeLayer `ops` builds from its weights (q_proj's and the adapter's). Reused while
        neither the ops nor any parameter they come from changes (version counters and storage, checked once per
        pass), since Python work per layer is costly mid-step, where the GEMMs have flushed the caches."""
        tensors = [module._parameters[name] for module, name in self._plan_sources]
        key = [ops] + [t._version for t in tensors] + [t.data_ptr() for t in tensors]
        if self._plans is None or self._plans[0] != key:
            layers = []
            for adapter, layer in zip(self.adapters, self.backbone.model.layers, strict=True):
                query = layer.self_attn.q_proj
                layers.append(
                    ops.decode_layer(
                        query.weight,
                        query.bias,
                        adapter.packed_projection_weight(),
                        adapter.beta_bias,
                        adapter.delta_q_proj,
                        adapter.delta_o_proj,
                        adapter.config.scale,
                        *adapter.state_dims,
                    )
                )
            self._plans = (key, layers)
        return self._plans[1]

    def _make_query_forward(self, index: int, linear: nn.Linear):
        """q_proj's forward: the layer's memory work on the attention input (q_proj's input is exactly the
        hidden_states the attention block receives), then q_proj's output plus the query correction. A forward
        override rather than hooks: modules without hooks take PyTorch's fast call path, which at batch-1
        decode on CPU is a measurable share of the step (docs/benchmarks.md)."""
        adapter = self.adapters[index]  # bound once: ModuleList indexing costs microseconds per layer per token
        plain = linear.forward

        def forward(x: torch.Tensor) -> torch.Tensor:
            run = self._pass
            if run is None:
                return plain(x)
            if run.layer_states is None:
                run.layer_states = run.state.unbind(1)
            layer_state = run.layer_states[index]
            if run.decode_layers is not None:  # decode: q_proj's GEMM, the step and both corrections in one call
                query, run.corrections[index] = run.decode_layers[index](x, layer_state, run.decode_mask)
                return query
            run.reads[index] = self._layer_reads(index, x, layer_state, run)
            return adapter.correct_query(plain(x), run.reads[index])

        return forward

    def _layer_reads(self, index: int, x: torch.Tensor, layer_state: torch.Tensor, run: _Pass) -> torch.Tensor:
        """Every token's read [B, T, N*r] for a pass over several tokens; records the layer's final state."""
        adapter = self.adapters[index]
        if run.ops is not None:  # token writes outside autograd: projection and scan in one op
            weight = adapter.packed_projection_weight()
            reads, run.final[index] = run.ops.scan(
                x, weight, adapter.beta_bias, layer_state, run.write_mask, *adapter.state_dims
            )
            return reads.flatten(-2)
        q, k, v, beta = adapter.project(x)
        if run.gates is not None and run.write and run.message_ids is None:
            run.gates.append(beta)  # token writes (message-mean gates come from the means, not kept)
        if run.write and run.message_ids is not None:
            run.final[index] = self._write_message_means(index, x, run.message_ids, layer_state)
            reads = torch.einsum("bnij,btnj->btni", layer_state, q)
        elif run.write:
            reads, run.final[index] = delta_rule(q, k, v, beta, layer_state, run.write_mask)
        else:
            # read-only: every token reads the same state, a plain batched matmul
            reads = torch.einsum("bnij,btnj->btni", layer_state, q)
        return reads.flatten(-2)

    def _write_message_means(
        self, index: int, x: torch.Tensor, message_ids: torch.Tensor, layer_state: torch.Tensor
    ) -> torch.Tensor:
        """Average x over each message's tokens and write the means in message order; returns the new state."""
        active = message_ids >= 0
        count = int(message_ids.max()) + 1 if bool(active.any()) else 0
        if count == 0:
            return layer_state
        slots = message_ids.clamp_min(0)
        weights = active.to(x.dtype)
        sums = x.new_zeros(x.shape[0], count, x.shape[-1]).scatter_add(
            1, slots[..., None].expand(-1, -1, x.shape[-1]), x * weights[..., None]
        )
        tokens = weights.new_zeros(x.shape[0], count).scatter_add(1, slots, weights)
        means = sums / tokens.clamp_min(1.0)[..., None]
        q, k, v, beta = self.adapters[index].project(means)
        _, final = delta_rule(q, k, v, beta, layer_state, tokens > 0)
        return final

    def _make_output_forward(self, index: int, linear: nn.Linear):
        """o_proj's forward: its output plus the output correction of the read q_proj's forward made."""
        adapter = self.adapters[index]
        plain = linear.forward

        def forward(x: torch.Tensor) -> torch.Tensor:
            run = self._pass
            if run is None:
                return plain(x)
            if run.decode_layers is not None:  # computed with the decode step ([B, 1, out]): add it
                return plain(x).add_(run.corrections[index])  # (as the GEMM's bias it measured slower)
            return adapter.correct_output(plain(x), run.reads[index])

        return forward
