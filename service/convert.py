"""Translations between protobuf messages and runtime values; no logic beyond the mapping itself."""

from __future__ import annotations

import hashlib

import torch
from google.protobuf.timestamp_pb2 import Timestamp

from deltamem.runtime.engine.sampling import SamplingParams
from deltamem.runtime.engine.sequential import Engine
from deltamem.runtime.errors import InvalidRequest, StateMismatch
from deltamem.runtime.sessions.calls import Turn, TurnResult
from deltamem.runtime.sessions.records import SessionInfo
from deltamem.v1 import memory_service_pb2 as pb

CONTEXT_POLICY_NAMES = {
    pb.CONTEXT_POLICY_UNSPECIFIED: "none",
    pb.CONTEXT_POLICY_NONE: "none",
    pb.CONTEXT_POLICY_FULL: "full",
    pb.CONTEXT_POLICY_WINDOW: "window",
}
CONTEXT_POLICY_VALUES = {
    "none": pb.CONTEXT_POLICY_NONE,
    "full": pb.CONTEXT_POLICY_FULL,
    "window": pb.CONTEXT_POLICY_WINDOW,
}
# write mode -> (write input, write output)
WRITE_MODES = {
    pb.WRITE_MODE_UNSPECIFIED: (True, True),
    pb.WRITE_MODE_INPUT_AND_OUTPUT: (True, True),
    pb.WRITE_MODE_INPUT_ONLY: (True, False),
    pb.WRITE_MODE_NONE: (False, False),
}
FINISH_REASONS = {
    "end_of_turn": pb.FINISH_REASON_END_OF_TURN,
    "stop_sequence": pb.FINISH_REASON_STOP_SEQUENCE,
    "length": pb.FINISH_REASON_LENGTH,
}
DEFAULT_MAX_NEW_TOKENS = 256


def context_policy(value: int) -> str:
    if value not in CONTEXT_POLICY_NAMES:
        raise InvalidRequest(f"context_policy {value} is not a known ContextPolicy")
    return CONTEXT_POLICY_NAMES[value]


def write_mode(value: int) -> tuple[bool, bool]:
    if value not in WRITE_MODES:
        raise InvalidRequest(f"write_mode {value} is not a known WriteMode")
    return WRITE_MODES[value]


def turn(engine: Engine, message: pb.Input) -> Turn:
    """What an Input stands for: chat messages (checked, encoded later against the session's context), or raw
    text / token ids encoded now."""
    kind = message.WhichOneof("kind")
    if kind == "text":
        return Turn(encoded=engine.encode_text(message.text))
    if kind == "messages":
        return Turn(messages=tuple((m.role, m.content) for m in message.messages.messages))
    if kind == "token_ids":
        return Turn(encoded=engine.check_token_ids(list(message.token_ids.ids)))
    raise InvalidRequest("input is required: set one of text, messages or token_ids")


def generate_result(result: TurnResult) -> pb.GenerateResult:
    outcome = result.outcome
    return pb.GenerateResult(
        finish_reason=FINISH_REASONS[outcome.finish_reason],
        usage=pb.Usage(
            prompt_tokens=outcome.prompt_tokens,
            generated_tokens=outcome.generated_tokens,
            written_tokens=outcome.written_tokens,
        ),
        memory_version=result.session.memory_version,
        text=outcome.text,
    )


def sampling(message: pb.SamplingParams) -> SamplingParams:
    return SamplingParams(
        temperature=message.temperature,
        top_p=message.top_p or 1.0,
        top_k=message.top_k,
        seed=message.seed if message.HasField("seed") else None,
    )


def session(info: SessionInfo) -> pb.Session:
    created = Timestamp()
    created.FromNanoseconds(int(info.created_at * 1e9))
    return pb.Session(
        session_id=info.session_id,
        memory_version=info.memory_version,
        tokens_written=info.tokens_written,
        parent_session_id=info.parent_session_id,
        parent_memory_version=info.parent_memory_version,
        context_policy=CONTEXT_POLICY_VALUES[info.context_policy],
        metadata=info.metadata,
        create_time=created,
        window_tokens=info.window_tokens,
        context_tokens=info.context_tokens,
    )


def imported_state(message: pb.MemoryState, engine: Engine) -> torch.Tensor:
    """The tensor an exported MemoryState holds, after checking that it is whole, intact and made for this
    server's backbone, adapter and state shape."""
    expected_shape = list(engine.empty_state().shape)
    if message.backbone_fingerprint != engine.backbone_fingerprint:
        raise StateMismatch(
            f"the memory was made for backbone {message.backbone_fingerprint or '(none)'}; "
            f"this server runs {engine.backbone_fingerprint}"
        )
    if message.adapter_fingerprint != engine.adapter_fingerprint:
        raise StateMismatch(
            f"the memory was made for adapter {message.adapter_fingerprint or '(none)'}; "
            f"this server runs {engine.adapter_fingerprint}"
        )
    if list(message.shape) != expected_shape:
        raise StateMismatch(f"the memory has shape {list(message.shape)}; this server's is {expected_shape}")
    if message.dtype != "float32":
        raise InvalidRequest(f"the memory's dtype is {message.dtype!r}; only 'float32' is accepted")
    per_layer = expected_shape[1] * expected_shape[2] * expected_shape[3]
    if len(message.layers) != expected_shape[0] or any(len(layer.values) != per_layer for layer in message.layers):
        raise InvalidRequest(
            f"the memory must give {expected_shape[0]} layers of {per_layer} values each "
            "(a ReadState with summary_only has none)"
        )
    values = [value for layer in message.layers for value in layer.values]
    state = torch.tensor(values, dtype=torch.float32).view(expected_shape)
    if state_checksum(state) != message.checksum:
        raise InvalidRequest("the memory's values do not match its checksum: it was altered or truncated")
    if not bool(torch.isfinite(state).all()):
        raise InvalidRequest("the memory holds values that are not finite")
    return state


def state_checksum(state: torch.Tensor) -> str:
    """SHA-256 of the state as little-endian float32, row-major: what clients recompute to verify a read."""
    array = state.detach().to(torch.float32).cpu().contiguous().numpy().astype("<f4", copy=False)
    return hashlib.sha256(array.tobytes()).hexdigest()


def memory_state(state: torch.Tensor, engine: Engine, summary_only: bool) -> pb.MemoryState:
    """state: [L, N, r, r] fp32."""
    state = state.detach().to(torch.float32).cpu()
    layers = []
    for index, layer in enumerate(state):
        layers.append(
            pb.LayerState(
                layer=index,
                values=[] if summary_only else layer.flatten().tolist(),
                frobenius_norm=float(torch.linalg.vector_norm(layer)),
                max_abs=float(layer.abs().max()),
            )
        )
    return pb.MemoryState(
        shape=list(state.shape),
        dtype="float32",
        layers=layers,
        checksum=state_checksum(state),
        backbone_fingerprint=engine.backbone_fingerprint,
        adapter_fingerprint=engine.adapter_fingerprint,
    )


def page_token(last: SessionInfo) -> str:
    """The creation sequence number of the last session on the page."""
    return str(last.order)


def page_key(token: str) -> int | None:
    if not token:
        return None
    if not token.isdigit():
        raise InvalidRequest(f"page_token {token[:64]!r} is not a token this server issued")
    return int(token)
