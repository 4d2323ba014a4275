"""How a request's memory crosses between the engine process and SGLang's model process.

SGLang runs the model in a scheduler subprocess and gives a model nothing per request but its id (`rid`) and its
row in the request pool. So the engine puts each request's starting memory into a slot of a shared-memory file
(`initial`), names the slot and the request's write flags in the rid, and reads the memory the model left in the
same slot of `result` once the request has finished. Both processes map the same file; the request's submission
and its final output (both through SGLang's IPC) order the accesses.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from deltamem.runtime.engine.state_pool import StatePool
from deltamem.runtime.sglang_backend import handoff

RID_PREFIX = "deltamem"


@dataclass(frozen=True)
class RequestFlags:
    """What the model does for one request: its mailbox slot, and whether prompt / decode tokens write."""

    slot: int
    write_prompt: bool
    write_decode: bool


def encode_rid(flags: RequestFlags) -> str:
    """A unique SGLang request id that carries the flags."""
    return f"{RID_PREFIX}-{flags.slot}-{int(flags.write_prompt)}{int(flags.write_decode)}-{uuid.uuid4().hex}"


def decode_rid(rid: str | None) -> RequestFlags | None:
    """The flags of one of our rids; None for a request we did not make (SGLang's warm-up, say)."""
    parts = (rid or "").split("-")
    if len(parts) != 4 or parts[0] != RID_PREFIX or not parts[1].isdigit() or parts[2] not in ("00", "10", "11"):
        return None
    return RequestFlags(int(parts[1]), parts[2][0] == "1", parts[2][1] == "1")


def _mapped(path: Path, count: int) -> torch.Tensor:
    return torch.from_file(str(path), shared=True, size=count, dtype=torch.float32)


class Mailbox:
    """`initial` and `result`: [capacity, *state_shape] fp32, shared with the model process through one file."""

    def __init__(self, path: Path, capacity: int, state_shape: tuple[int, ...], create: bool):
        self.path = Path(path)
        self.capacity = capacity
        self.state_shape = tuple(state_shape)
        per_pool = capacity * int(torch.Size(self.state_shape).numel())
        if create:
            with open(self.path, "wb") as handle:
                handle.truncate(2 * per_pool * 4)
        elif not self.path.is_file() or self.path.stat().st_size != 2 * per_pool * 4:
            raise RuntimeError(f"{self.path} is not a mailbox of {capacity} states of shape {list(state_shape)}")
        both = _mapped(self.path, 2 * per_pool).view(2, capacity, *self.state_shape)
        self.initial = StatePool(capacity, self.state_shape, storage=both[0])
        self.result = both[1]

    @classmethod
    def create(cls, capacity: int, state_shape: tuple[int, ...], directory: str = "/dev/shm") -> Mailbox:
        base = directory if os.path.isdir(directory) else None
        path = Path(base or tempfile.gettempdir(), f"deltamem-mailbox-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        return cls(path, capacity, state_shape, create=True)

    @classmethod
    def from_env(cls, state_shape: tuple[int, ...]) -> Mailbox | None:
        """The mailbox the engine announced (handoff.py), checked against the model's own state shape."""
        spec = handoff.mailbox()
        if not spec:
            return None
        data = json.loads(spec)
        if tuple(data["state_shape"]) != tuple(state_shape):
            raise RuntimeError(f"the engine's state shape {data['state_shape']} is not the model's {list(state_shape)}")
        return cls(Path(data["path"]), int(data["capacity"]), tuple(state_shape), create=False)

    def env_value(self) -> str:
        return json.dumps({"path": str(self.path), "capacity": self.capacity, "state_shape": list(self.state_shape)})

    def unlink(self) -> None:
        self.path.unlink(missing_ok=True)
