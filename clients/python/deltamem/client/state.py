"""Helpers for the memory returned by ReadState: checksum verification and nested values."""

from __future__ import annotations

import hashlib
import struct

from deltamem.v1 import memory_service_pb2 as pb


def _flat_values(state: pb.MemoryState) -> list[float]:
    return [value for layer in state.layers for value in layer.values]


def verify_checksum(state: pb.MemoryState) -> bool:
    """Recompute the SHA-256 of the values as little-endian float32 and compare with the server's."""
    values = _flat_values(state)
    return hashlib.sha256(struct.pack(f"<{len(values)}f", *values)).hexdigest() == state.checksum


def state_values(state: pb.MemoryState) -> list:
    """The state as nested lists shaped [layers, heads, rank, rank] (needs a full, not summary, read)."""
    _, heads, rows, cols = state.shape
    result = []
    for layer in state.layers:
        if len(layer.values) != heads * rows * cols:
            raise ValueError("this MemoryState holds no values: it was read with summary_only")
        v = list(layer.values)
        result.append(
            [[v[(h * rows + i) * cols : (h * rows + i + 1) * cols] for i in range(rows)] for h in range(heads)]
        )
    return result
