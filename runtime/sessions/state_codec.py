"""A memory state as bytes and back, its checksum, and the checks of an imported one: the one codec the stores,
ReadState and ImportState share.

The disk and wire form is the state's little-endian float32 values in row-major order; its SHA-256 is the checksum
every reader verifies (clients recompute it to check a ReadState, stores at every read).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch

from deltamem.runtime.engine.protocol import Engine
from deltamem.runtime.errors import InvalidRequest, StateMismatch
from deltamem.runtime.model.state_bound import row_norm_excess
from deltamem.runtime.sessions.store import StoreMismatch


def state_bytes(state: torch.Tensor) -> bytes:
    """The state's values as little-endian float32, row-major."""
    return state.detach().to(torch.float32).cpu().contiguous().numpy().astype("<f4", copy=False).tobytes()


def checksum_of(data: bytes) -> str:
    """The checksum of a state's bytes (state_bytes): their SHA-256, hex."""
    return hashlib.sha256(data).hexdigest()


def state_checksum(state: torch.Tensor) -> str:
    """What ReadState reports and ImportState and the stores verify."""
    return checksum_of(state_bytes(state))


def encode_state(state: torch.Tensor) -> tuple[bytes, str, str]:
    """(state_bytes, the shape as JSON, their checksum): what a store keeps."""
    data = state_bytes(state)
    return data, json.dumps(list(state.shape)), checksum_of(data)


def decode_state(data: bytes, shape: str, digest: str, where: str) -> torch.Tensor:
    """The tensor a store kept, after checking its checksum (StoreMismatch naming `where` if it fails)."""
    if checksum_of(data) != digest:
        raise StoreMismatch(f"{where}: the stored memory fails its checksum")
    return torch.from_numpy(np.frombuffer(data, dtype="<f4").reshape(json.loads(shape)).astype(np.float32))


@dataclass(frozen=True)
class StateIdentity:
    """What a memory state means: the backbone and adapter it was made with, and its shape. Durable stores record
    it and refuse a server with another; an imported memory must carry the same."""

    backbone: str
    adapter: str
    shape: tuple[int, ...]

    @classmethod
    def of(cls, engine: Engine) -> StateIdentity:
        return cls(engine.backbone_fingerprint, engine.adapter_fingerprint, tuple(engine.empty_state().shape))

    def as_dict(self) -> dict[str, str]:
        """The form the stores keep."""
        return {"backbone": self.backbone, "adapter": self.adapter, "state_shape": "x".join(map(str, self.shape))}


@dataclass(frozen=True)
class ExportedState:
    """A memory as ReadState exports it and ImportState takes it back: values per layer, flattened."""

    shape: tuple[int, ...]
    dtype: str
    layers: tuple[tuple[float, ...], ...]
    checksum: str
    backbone_fingerprint: str
    adapter_fingerprint: str


def import_state(exported: ExportedState, identity: StateIdentity, row_bound: torch.Tensor) -> torch.Tensor:
    """The tensor an exported memory holds, after checking that it is whole, intact, made for `identity` and a
    memory the write rule can produce: every row within `row_bound` [layers, heads, r] (model/state_bound.py)."""
    if exported.backbone_fingerprint != identity.backbone:
        raise StateMismatch(
            f"the memory was made for backbone {exported.backbone_fingerprint or '(none)'}; "
            f"this server runs {identity.backbone}"
        )
    if exported.adapter_fingerprint != identity.adapter:
        raise StateMismatch(
            f"the memory was made for adapter {exported.adapter_fingerprint or '(none)'}; "
            f"this server runs {identity.adapter}"
        )
    shape = list(identity.shape)
    if list(exported.shape) != shape:
        raise StateMismatch(f"the memory has shape {list(exported.shape)}; this server's is {shape}")
    if exported.dtype != "float32":
        raise InvalidRequest(f"the memory's dtype is {exported.dtype!r}; only 'float32' is accepted")
    per_layer = shape[1] * shape[2] * shape[3]
    if len(exported.layers) != shape[0] or any(len(layer) != per_layer for layer in exported.layers):
        raise InvalidRequest(
            f"the memory must give {shape[0]} layers of {per_layer} values each "
            "(a ReadState with summary_only has none)"
        )
    state = torch.tensor([value for layer in exported.layers for value in layer], dtype=torch.float32).view(shape)
    if state_checksum(state) != exported.checksum:
        raise InvalidRequest("the memory's values do not match its checksum: it was altered or truncated")
    if not bool(torch.isfinite(state).all()):
        raise InvalidRequest("the memory holds values that are not finite")
    if problem := row_norm_excess(state, row_bound):
        raise InvalidRequest(f"the memory cannot have come from this adapter's writes: {problem}")
    return state
