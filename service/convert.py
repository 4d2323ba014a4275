"""Translations between protobuf messages and runtime values; no logic beyond the mapping itself."""

from __future__ import annotations

import torch
from google.protobuf.timestamp_pb2 import Timestamp

from deltamem.runtime.engine.inputs import UserInput
from deltamem.runtime.engine.requests import DEFAULT_MAX_NEW_TOKENS, GenerationOptions
from deltamem.runtime.engine.sampling import SamplingParams
from deltamem.runtime.errors import InvalidRequest
from deltamem.runtime.sessions.calls import TurnResult
from deltamem.runtime.sessions.records import SessionInfo
from deltamem.runtime.sessions.state_codec import ExportedState, StateIdentity, state_checksum
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


def context_policy(value: int) -> str:
    if value not in CONTEXT_POLICY_NAMES:
        raise InvalidRequest(f"context_policy {value} is not a known ContextPolicy")
    return CONTEXT_POLICY_NAMES[value]


def write_mode(value: int) -> tuple[bool, bool]:
    if value not in WRITE_MODES:
        raise InvalidRequest(f"write_mode {value} is not a known WriteMode")
    return WRITE_MODES[value]


def user_input(message: pb.Input) -> UserInput:
    """What an Input holds, unchecked: the session call encodes and checks it (engine/inputs.py)."""
    kind = message.WhichOneof("kind")
    if kind == "text":
        return UserInput(text=message.text)
    if kind == "messages":
        return UserInput(messages=tuple((m.role, m.content) for m in message.messages.messages))
    if kind == "token_ids":
        return UserInput(token_ids=tuple(message.token_ids.ids))
    return UserInput()


def generation_options(request: pb.GenerateRequest) -> GenerationOptions:
    write_input, write_output = write_mode(request.write_mode)
    return GenerationOptions(
        sampling=sampling(request.sampling),
        max_new_tokens=request.max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
        stop=tuple(request.stop),
        write_input=write_input,
        write_output=write_output,
        ignore_end_of_turn=request.ignore_end_of_turn,
    )


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


def exported_state(message: pb.MemoryState) -> ExportedState:
    return ExportedState(
        shape=tuple(message.shape),
        dtype=message.dtype,
        layers=tuple(tuple(layer.values) for layer in message.layers),
        checksum=message.checksum,
        backbone_fingerprint=message.backbone_fingerprint,
        adapter_fingerprint=message.adapter_fingerprint,
    )


def memory_state(state: torch.Tensor, identity: StateIdentity, summary_only: bool) -> pb.MemoryState:
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
        backbone_fingerprint=identity.backbone,
        adapter_fingerprint=identity.adapter,
    )
