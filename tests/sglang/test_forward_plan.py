"""How models.py turns an SGLang ForwardBatch into a memory plan, with SGLang's own ForwardMode values. The
entry classes themselves cannot be built on this CPU install (see docs/sglang.md), so the plan step is called
with a stand-in for the ForwardBatch's fields it reads and a real RequestStates. Needs SGLang importable."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from deltamem.runtime.sglang_backend.mailbox import Mailbox, RequestFlags, encode_rid
from deltamem.runtime.sglang_backend.request_states import RequestStates

pytestmark = pytest.mark.usefixtures("sglang_models")
SHAPE = (2, 1, 8, 8)


@pytest.fixture
def plan_forward(tmp_path):
    from deltamem.runtime.sglang_backend.models import _DeltaMem

    box = Mailbox.create(4, SHAPE, directory=str(tmp_path))
    states = RequestStates(SHAPE, "cpu", box)
    model = SimpleNamespace(_request_states=lambda: states)
    yield (lambda batch: _DeltaMem._plan_forward(model, batch)), box, states
    box.unlink()


def _batch(mode, rids, rows, seq=None, prefix=None, host_copies=True):
    return SimpleNamespace(
        forward_mode=mode,
        batch_size=len(rids),
        rids=rids,
        req_pool_indices=torch.tensor(rows),
        extend_seq_lens_cpu=seq if host_copies else None,
        extend_prefix_lens_cpu=prefix if host_copies else None,
        extend_seq_lens=torch.tensor(seq or []),
        extend_prefix_lens=torch.tensor(prefix or []),
    )


def test_extend_and_decode(plan_forward):
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    plan, box, states = plan_forward
    slot = box.initial.alloc(torch.full(SHAPE, 0.5))
    rids = [encode_rid(RequestFlags(slot, True, False)), "warmup"]
    for host_copies in (True, False):
        extend = plan(_batch(ForwardMode.EXTEND, rids, [3, 1], [4, 2], [0, 0], host_copies))
        assert (extend.lengths, extend.decode, extend.writes.tolist()) == ([4, 2], False, [True, False])
        assert torch.equal(states.pool[3], torch.full(SHAPE, 0.5))
    decode = plan(_batch(ForwardMode.DECODE, rids, [3, 1]))
    assert (decode.lengths, decode.decode, decode.writes.tolist()) == ([1, 1], True, [False, False])


def test_idle_runs_no_memory_and_mixed_is_refused(plan_forward):
    from sglang.srt.model_executor.forward_batch_info import ForwardMode

    plan, _, _ = plan_forward
    assert plan(_batch(ForwardMode.IDLE, [], [])) is None
    with pytest.raises(NotImplementedError, match="MIXED"):
        plan(_batch(ForwardMode.MIXED, ["a"], [0], [3], [0]))
