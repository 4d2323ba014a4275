"""Key/value storage for continuous batching: one growing buffer set per sequence, and a per-forward view that
the backbone's attention layers write into and read from, for a batch of sequences of different lengths.

Each sequence keeps, per layer, [capacity, kv_heads, head_dim] buffers grown by doubling. A forward over a
ragged batch writes each sequence's new keys after its own cached ones and hands attention a right-padded
[B, kv_heads, kv_len, head_dim] batch (a view, without copying, when the batch is one sequence); the 4D mask
from `attention_mask` hides the padding. Keys are stored after RoPE, so `position` (the absolute position of
the next token) is kept apart from `length` (tokens cached) for contexts that drop their oldest tokens.
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence


class SequenceKV:
    def __init__(self, num_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.length = 0  # tokens cached
        self.position = 0  # absolute position of the next token

    def _reserve(self, layer: int, needed: int, like: torch.Tensor) -> None:
        current = self.keys[layer]
        if current is not None and current.shape[0] >= needed:
            return
        capacity = max(64, needed, 2 * (current.shape[0] if current is not None else 0))
        keys = like.new_empty(capacity, *like.shape[1:])
        values = like.new_empty(capacity, *like.shape[1:])
        if current is not None:
            keys[: self.length] = current[: self.length]
            values[: self.length] = self.values[layer][: self.length]
        self.keys[layer], self.values[layer] = keys, values

    def write(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Place `keys`, `values` ([n, kv_heads, head_dim]) right after the cached tokens of this layer."""
        self._reserve(layer, self.length + keys.shape[0], keys)
        self.keys[layer][self.length : self.length + keys.shape[0]] = keys
        self.values[layer][self.length : self.length + keys.shape[0]] = values

    def advance(self, count: int) -> None:
        self.length += count
        self.position += count

    def truncate(self, length: int) -> None:
        """Forget cached tokens past `length` (and move the next position back with them)."""
        drop = self.length - length
        self.length, self.position = length, self.position - drop

    def keep_last(self, count: int) -> None:
        """Keep only the newest `count` cached tokens; positions continue from where they were."""
        if self.length <= count:
            return
        start = self.length - count
        for layer, keys in enumerate(self.keys):
            if keys is not None:
                self.keys[layer] = keys[start : self.length].clone()
                self.values[layer] = self.values[layer][start : self.length].clone()
        self.length = count

    def clone(self) -> SequenceKV:
        copy = SequenceKV(len(self.keys))
        for layer, keys in enumerate(self.keys):
            if keys is not None:
                copy.keys[layer] = keys[: self.length].clone()
                copy.values[layer] = self.values[layer][: self.length].clone()
        copy.length, copy.position = self.length, self.position
        return copy


class BatchKV:
    """The `past_key_values` of one batched forward: sequence b contributes `new_tokens[b]` tokens."""

    def __init__(self, sequences: list[SequenceKV], new_tokens: list[int]):
        self.sequences = sequences
        self.new_tokens = new_tokens
        self.kv_length = max(s.length + n for s, n in zip(sequences, new_tokens, strict=True))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """key_states, value_states: [B, kv_heads, T, head_dim] → the batch's keys and values for attention."""
        keys = key_states.transpose(1, 2)
        values = value_states.transpose(1, 2)
        for b, (sequence, count) in enumerate(zip(self.sequences, self.new_tokens, strict=True)):
            sequence.write(layer_idx, keys[b, :count], values[b, :count])
        if len(self.sequences) == 1:
            sequence = self.sequences[0]
            end = sequence.length + self.new_tokens[0]
            return (
                sequence.keys[layer_idx][:end].transpose(0, 1)[None],
                sequence.values[layer_idx][:end].transpose(0, 1)[None],
            )
        pairs = list(zip(self.sequences, self.new_tokens, strict=True))
        # one padding op per tensor (zeros after each sequence's end), not a copy per sequence
        batch_keys = pad_sequence([s.keys[layer_idx][: s.length + n] for s, n in pairs], batch_first=True)
        batch_values = pad_sequence([s.values[layer_idx][: s.length + n] for s, n in pairs], batch_first=True)
        return batch_keys.transpose(1, 2), batch_values.transpose(1, 2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        raise RuntimeError("BatchKV needs explicit position_ids")

    def attention_mask(self, query_len: int, device: torch.device) -> torch.Tensor:
        """[B, 1, T, kv_len] bool: query t of sequence b sees its cached tokens and its new tokens up to t.
        Padding queries see key 0 only, so that no softmax row is empty."""
        rows = []
        keys = torch.arange(self.kv_length, device=device)
        queries = torch.arange(query_len, device=device)
        for sequence, count in zip(self.sequences, self.new_tokens, strict=True):
            visible = keys[None, :] <= (sequence.length + queries)[:, None]
            visible &= keys[None, :] < sequence.length + count
            visible[count:] = keys[None, :] == 0
            rows.append(visible)
        return torch.stack(rows)[:, None]

    def position_ids(self, query_len: int, device: torch.device) -> torch.Tensor:
        starts = torch.tensor([s.position for s in self.sequences], device=device)
        return starts[:, None] + torch.arange(query_len, device=device)[None, :]

    def commit(self) -> None:
        for sequence, count in zip(self.sequences, self.new_tokens, strict=True):
            sequence.advance(count)
