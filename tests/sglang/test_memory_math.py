"""The SGLang side's memory math against MemoryModel (the HF-hooked oracle), on the same tiny weights.

The oracle runs each sequence alone through MemoryModel, and hooks record every layer's attention input x and
the corrected q_proj / o_proj outputs. The SGLang side gets those x packed as one ragged batch, the requests'
states through the mailbox and rids exactly as the engine sends them, pool rows as SGLang assigns them, and
must reproduce the corrections and the final states — over a one-chunk prefill, a two-chunk prefill, and a
prefill followed by a decode step.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deltamem.runtime.sglang_backend.batch_memory import correct_qkv, layer_memory
from deltamem.runtime.sglang_backend.mailbox import Mailbox, RequestFlags, encode_rid
from deltamem.runtime.sglang_backend.request_states import RequestStates

LENGTHS = (5, 3, 7)
ROWS = torch.tensor([4, 0, 2])  # request-pool rows, in no particular order
TOL = {"atol": 2e-5, "rtol": 1e-4}


def _oracle(model, ids, state, write_mask):
    """One sequence through MemoryModel; returns (final state, per-layer x, corrected q, o input, corrected o)."""
    records = {"x": {}, "q": {}, "o_in": {}, "o": {}}
    handles = []
    for index, layer in enumerate(model.backbone.model.layers):
        attn = layer.self_attn

        def pre(module, args, kwargs, index=index):
            records["x"][index] = kwargs["hidden_states"][0].detach().clone()

        def q_out(module, args, output, index=index):
            records["q"][index] = output[0].detach().clone()

        def o_out(module, args, output, index=index):
            records["o_in"][index] = args[0][0].detach().clone()
            records["o"][index] = output[0].detach().clone()

        handles += [
            attn.register_forward_pre_hook(pre, with_kwargs=True),
            attn.q_proj.register_forward_hook(q_out),
            attn.o_proj.register_forward_hook(o_out),
        ]
    try:
        with torch.no_grad():
            out = model(torch.tensor([ids]), state[None], write=True, write_mask=torch.tensor([write_mask]))
    finally:
        for handle in handles:
            handle.remove()
    return out.state[0], records


def _check_corrections(model, layer, reads, records, token_slices):
    """Our corrections of this layer, from the oracle's x and o inputs and our reads, equal the oracle's."""
    attn = model.backbone.model.layers[layer].self_attn
    adapter = model.adapters[layer]
    x = torch.cat([records[s]["x"][layer][part] for s, part in token_slices])
    qkv = torch.cat(
        [F.linear(x, attn.q_proj.weight), F.linear(x, attn.k_proj.weight), F.linear(x, attn.v_proj.weight)], -1
    )
    q_size = attn.q_proj.out_features
    ours = correct_qkv(adapter, qkv, reads, q_size)
    expected_q = torch.cat([records[s]["q"][layer][part] for s, part in token_slices])
    torch.testing.assert_close(ours[:, :q_size], expected_q, **TOL)
    torch.testing.assert_close(ours[:, q_size:], qkv[:, q_size:], atol=0, rtol=0)
    o_in = torch.cat([records[s]["o_in"][layer][part] for s, part in token_slices])
    expected_o = torch.cat([records[s]["o"][layer][part] for s, part in token_slices])
    torch.testing.assert_close(adapter.correct_output(F.linear(o_in, attn.o_proj.weight), reads), expected_o, **TOL)


def _run(model, states, plan, records, token_slices):
    """Every layer of one SGLang forward, fed the oracle's x."""
    for layer in range(model.num_layers):
        x = torch.cat([records[s]["x"][layer][part] for s, part in token_slices])
        reads = layer_memory(model.adapters[layer], x, states.pool, layer, plan)
        _check_corrections(model, layer, reads, records, token_slices)
    states.end(plan)


@pytest.fixture(params=[("llama", 1), ("qwen3", 1), ("llama", 4)], ids=["llama", "qwen3", "llama-msw"])
def setup(request, make_tiny_model, tmp_path):
    arch, heads = request.param
    model = make_tiny_model(arch, seed=5, num_state_heads=heads)
    generator = torch.Generator().manual_seed(11)
    ids = [torch.randint(3, 97, (n,), generator=generator).tolist() for n in LENGTHS]
    initial = [0.3 * torch.randn(model.state_shape, generator=generator) for _ in LENGTHS]
    mailbox = Mailbox.create(8, model.state_shape, directory=str(tmp_path))
    yield model, ids, initial, mailbox
    mailbox.unlink()


def _submit(mailbox, initial, flags):
    """What the engine does: a mailbox slot per request holding its starting memory, and a rid naming it."""
    slots = [mailbox.initial.alloc(state) for state in initial]
    return slots, [encode_rid(RequestFlags(slot, p, d)) for slot, (p, d) in zip(slots, flags, strict=True)]


def test_prefill_in_one_chunk(setup):
    model, ids, initial, mailbox = setup
    writes = (True, False, True)
    oracle = [_oracle(model, i, s, [w] * len(i)) for i, s, w in zip(ids, initial, writes, strict=True)]
    records = [r for _, r in oracle]
    slots, rids = _submit(mailbox, initial, [(w, w) for w in writes])
    states = RequestStates(model.state_shape, "cpu", mailbox)
    plan = states.begin(rids, ROWS, list(LENGTHS), [0, 0, 0], decode=False)
    assert plan.writes.tolist() == list(writes)
    _run(model, states, plan, records, [(s, slice(None)) for s in range(3)])
    for s, (final, _) in enumerate(oracle):
        torch.testing.assert_close(states.pool[ROWS[s]], final, **TOL)
        if writes[s]:
            torch.testing.assert_close(mailbox.result[slots[s]], final, **TOL)
        else:
            assert torch.equal(states.pool[ROWS[s]], initial[s])  # read-only: the memory is left exactly as it was
            assert torch.equal(mailbox.result[slots[s]], torch.zeros(model.state_shape))  # nothing published


def test_prefill_in_two_chunks_continues_the_state(setup):
    """A later chunk (prefix length > 0) continues from the pool; it must not reload the starting memory."""
    model, ids, initial, mailbox = setup
    oracle = [_oracle(model, i, s, [True] * len(i)) for i, s in zip(ids, initial, strict=True)]
    records = [r for _, r in oracle]
    slots, rids = _submit(mailbox, initial, [(True, True)] * 3)
    states = RequestStates(model.state_shape, "cpu", mailbox)
    cut = 2
    first = states.begin(rids, ROWS, [cut] * 3, [0, 0, 0], decode=False)
    _run(model, states, first, records, [(s, slice(0, cut)) for s in range(3)])
    rest = [n - cut for n in LENGTHS]
    second = states.begin(rids, ROWS, rest, [cut] * 3, decode=False)
    _run(model, states, second, records, [(s, slice(cut, None)) for s in range(3)])
    for s, (final, _) in enumerate(oracle):
        torch.testing.assert_close(mailbox.result[slots[s]], final, **TOL)


def test_decode_step_after_prefill(setup):
    """Decode rows write when their request writes its output: "11" writes prompt and output, "10" only the
    prompt, "00" nothing."""
    model, ids, initial, mailbox = setup
    flags = [(True, True), (False, False), (True, False)]
    masks = [[p] * (len(i) - 1) + [d] for i, (p, d) in zip(ids, flags, strict=True)]
    oracle = [_oracle(model, i, s, m) for i, s, m in zip(ids, initial, masks, strict=True)]
    records = [r for _, r in oracle]
    slots, rids = _submit(mailbox, initial, flags)
    states = RequestStates(model.state_shape, "cpu", mailbox)
    prefill = states.begin(rids, ROWS, [n - 1 for n in LENGTHS], [0, 0, 0], decode=False)
    _run(model, states, prefill, records, [(s, slice(0, -1)) for s in range(3)])
    step = states.begin(rids, ROWS, [1, 1, 1], None, decode=True)
    assert step.writes.tolist() == [True, False, False]
    _run(model, states, step, records, [(s, slice(-1, None)) for s in range(3)])
    for s, (final, _) in enumerate(oracle):
        torch.testing.assert_close(states.pool[ROWS[s]], final, **TOL)
    torch.testing.assert_close(mailbox.result[slots[0]], oracle[0][0], **TOL)
    torch.testing.assert_close(mailbox.result[slots[2]], oracle[2][0], **TOL)


def test_requests_that_are_not_ours_read_the_empty_memory(setup):
    """SGLang's own requests (warm-up) carry foreign rids: they start empty and never write."""
    model, ids, initial, mailbox = setup
    states = RequestStates(model.state_shape, "cpu", mailbox)
    states.pool = torch.ones(5, *model.state_shape)  # rows left over from earlier requests
    plan = states.begin(["warmup-1"], torch.tensor([3]), [4], [0], decode=False)
    assert plan.writes.tolist() == [False] and plan.mailbox_slots == [-1]
    assert torch.equal(states.pool[3], torch.zeros(model.state_shape))
    assert torch.equal(states.pool[1], torch.ones(model.state_shape))
