"""The δ-mem adapter configuration, in the reference checkpoint's `delta_mem_config.json` vocabulary.

Only the modes this project implements are accepted. A config that switches on an experimental mode of the
reference code is rejected with the field named, rather than silently served as something else.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_FILE = "delta_mem_config.json"

# reference fields whose non-default values select modes we do not serve: field -> the value we require
_REQUIRED_VALUES = {
    "normalize_qk": True,
    "couple_lambda": True,
    "state_update_mode": "standard",
    "rankwise_gates": True,
    "num_memory_partitions": 1,
    "num_global_memory_partitions": 0,
    "memory_readout_mode": "delta",
    "memory_write_source": "learned_hidden",
    "memory_reader_layers": [],
    "latent_memory_layers": [],
    "delta_o_rmsnorm": False,
    "trainable_delta_scale": False,
    "slot_read_top_k": 0,
    "target_modules": ["self_attn"],
}
SUPPORTED_GRANULARITIES = ("token", "message_mean")
SUPPORTED_DELTA_HEADS = ("o", "q")


class AdapterConfigError(ValueError):
    """An adapter config asks for something this project does not implement, or is malformed."""


@dataclass(frozen=True)
class DeltaMemConfig:
    """The adapter hyper-parameters that shape the parameters and the math (delta-mem.md)."""

    rank: int = 8
    alpha: float = 16.0
    beta_bias_init: float = -1.5
    num_state_heads: int = 1
    memory_write_granularity: str = "token"
    delta_heads: tuple[str, ...] = ("q", "o")
    target_layers: tuple[int, ...] = ()
    output_init: str = "base_slice"
    online_gain: float = 0.05
    # every other field of the reference config, kept so that saving writes back what was loaded
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise AdapterConfigError(f"rank must be >= 1, got {self.rank}")
        if self.num_state_heads < 1:
            raise AdapterConfigError(f"num_state_heads must be >= 1, got {self.num_state_heads}")
        if self.memory_write_granularity not in SUPPORTED_GRANULARITIES:
            raise AdapterConfigError(
                f"memory_write_granularity={self.memory_write_granularity!r} is not implemented "
                f"(supported: {', '.join(SUPPORTED_GRANULARITIES)})"
            )
        if tuple(sorted(self.delta_heads)) != SUPPORTED_DELTA_HEADS:
            raise AdapterConfigError(f"delta_heads must be ['q', 'o'], got {list(self.delta_heads)}")
        if self.target_layers:
            raise AdapterConfigError("target_layers other than [] (all layers) is not implemented")
        for name, required in _REQUIRED_VALUES.items():
            value = self.extra.get(name, required)
            if isinstance(required, list):
                value = list(value)
            if value != required:
                raise AdapterConfigError(f"{name}={value!r} selects a mode this server does not implement")

    @property
    def scale(self) -> float:
        """The fixed correction scale alpha / rank (2.0 for the released adapter)."""
        return self.alpha / self.rank

    @property
    def read_width(self) -> int:
        """Width of one layer's read: rank values per state head."""
        return self.rank * self.num_state_heads

    def to_json_dict(self) -> dict:
        known = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        known["delta_heads"] = list(self.delta_heads)
        known["target_layers"] = list(self.target_layers)
        return {**self.extra, **known}

    @classmethod
    def from_json_dict(cls, data: dict) -> DeltaMemConfig:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {key: value for key, value in data.items() if key in names}
        for key in ("delta_heads", "target_layers"):
            if key in known:
                known[key] = tuple(known[key])
        extra = {key: value for key, value in data.items() if key not in names}
        try:
            return cls(**known, extra=extra)
        except TypeError as exc:
            raise AdapterConfigError(f"malformed adapter config: {exc}") from exc

    def save(self, directory: Path) -> None:
        Path(directory, CONFIG_FILE).write_text(json.dumps(self.to_json_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> DeltaMemConfig:
        path = Path(directory, CONFIG_FILE)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise AdapterConfigError(f"{path} does not exist") from exc
        except json.JSONDecodeError as exc:
            raise AdapterConfigError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_json_dict(data)
