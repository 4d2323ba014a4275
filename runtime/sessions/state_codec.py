"""A memory state as bytes and back, and its checksum: the one codec the stores, ReadState and ImportState share.

The disk and wire form is the state's little-endian float32 values in row-major order; its SHA-256 is the checksum
every reader verifies (clients recompute it to check a ReadState, stores at every read).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from deltamem.runtime.sessions.store import StoreMismatch


def state_bytes(state: torch.Tensor) -> bytes:
    """The state's values as little-endian float32, row-major."""
    return state.detach().to(torch.float32).cpu().contiguous().numpy().astype("<f4", copy=False).tobytes()


def state_checksum(state: torch.Tensor) -> str:
    """SHA-256 of state_bytes: what ReadState reports and ImportState and the stores verify."""
    return hashlib.sha256(state_bytes(state)).hexdigest()


def encode_state(state: torch.Tensor) -> tuple[bytes, str, str]:
    """(state_bytes, the shape as JSON, their SHA-256): what a store keeps."""
    data = state_bytes(state)
    return data, json.dumps(list(state.shape)), hashlib.sha256(data).hexdigest()


def decode_state(data: bytes, shape: str, digest: str, where: str) -> torch.Tensor:
    """The tensor a store kept, after checking its checksum (StoreMismatch naming `where` if it fails)."""
    if hashlib.sha256(data).hexdigest() != digest:
        raise StoreMismatch(f"{where}: the stored memory fails its checksum")
    return torch.from_numpy(np.frombuffer(data, dtype="<f4").reshape(json.loads(shape)).astype(np.float32))
