"""Slot bookkeeping of the state pool and the mailbox the engine shares with SGLang's model process."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from deltamem.runtime.engine.state_pool import PoolExhausted, SlotError, StatePool
from deltamem.runtime.sglang_backend.mailbox import Mailbox, RequestFlags, decode_rid, encode_rid

SHAPE = (2, 1, 8, 8)


def test_alloc_holds_the_given_state_or_zeros():
    pool = StatePool(3, SHAPE)
    state = torch.randn(SHAPE)
    a = pool.alloc(state)
    pool.states[pool.alloc()] += 5.0  # a dirty slot
    b = pool.alloc()
    assert torch.equal(pool.read(a), state)
    assert torch.equal(pool.read(b), torch.zeros(SHAPE))
    assert pool.in_use == 3


def test_freed_slots_come_back_zeroed():
    pool = StatePool(1, SHAPE)
    slot = pool.alloc(torch.ones(SHAPE))
    pool.free(slot)
    assert pool.in_use == 0
    again = pool.alloc()
    assert again == slot and torch.equal(pool.read(again), torch.zeros(SHAPE))


def test_fork_is_a_copy_that_never_aliases():
    pool = StatePool(2, SHAPE)
    parent = pool.alloc(torch.randn(SHAPE))
    child = pool.fork(parent)
    assert child != parent and torch.equal(pool.read(child), pool.read(parent))
    pool.write(child, torch.zeros(SHAPE))
    assert not torch.equal(pool.read(parent), torch.zeros(SHAPE))
    before = pool.read(child)
    pool.write(parent, torch.full(SHAPE, 3.0))
    assert torch.equal(pool.read(child), before)


def test_reset_empties_one_slot_only():
    pool = StatePool(2, SHAPE)
    a, b = pool.alloc(torch.ones(SHAPE)), pool.alloc(torch.ones(SHAPE))
    pool.reset(a)
    assert torch.equal(pool.read(a), torch.zeros(SHAPE)) and torch.equal(pool.read(b), torch.ones(SHAPE))


def test_misuse_is_an_error():
    pool = StatePool(2, SHAPE)
    slot = pool.alloc()
    pool.free(slot)
    with pytest.raises(SlotError, match="double free"):
        pool.free(slot)
    with pytest.raises(SlotError, match="does not exist"):
        pool.free(7)
    for operation in (pool.fork, pool.reset, pool.read):
        with pytest.raises(SlotError, match="not allocated"):
            operation(slot)
    with pytest.raises(SlotError, match="not allocated"):
        pool.write(slot, torch.zeros(SHAPE))
    pool.alloc(), pool.alloc()
    with pytest.raises(PoolExhausted):
        pool.alloc()
    with pytest.raises(ValueError, match="storage"):
        StatePool(2, SHAPE, storage=torch.zeros(3, *SHAPE))


@pytest.mark.parametrize(
    "flags", [RequestFlags(0, False, False), RequestFlags(12, True, False), RequestFlags(3, True, True)]
)
def test_rids_carry_the_flags_and_are_unique(flags):
    rid = encode_rid(flags)
    assert decode_rid(rid) == flags
    assert encode_rid(flags) != rid


@pytest.mark.parametrize("rid", [None, "", "abc", "deltamem-x-10-ff", "deltamem-1-01-ff", "other-1-10-ff"])
def test_foreign_rids_are_not_ours(rid):
    assert decode_rid(rid) is None


def test_mailbox_is_shared_with_another_process(tmp_path, monkeypatch):
    """The model process opens the mailbox from the environment and sees, and writes, the same memory."""
    box = Mailbox.create(4, SHAPE, directory=str(tmp_path))
    slot = box.initial.alloc(torch.full(SHAPE, 2.5))
    script = (
        "import os, torch\n"
        "from deltamem.runtime.sglang_backend.mailbox import Mailbox\n"
        f"box = Mailbox.from_env({SHAPE!r})\n"
        f"box.result[{slot}] = box.initial.states[{slot}] * 2\n"
    )
    env = {**__import__("os").environ, "DELTAMEM_SGLANG_MAILBOX": box.env_value()}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
    assert torch.equal(box.result[slot], torch.full(SHAPE, 5.0))
    monkeypatch.setenv("DELTAMEM_SGLANG_MAILBOX", box.env_value())
    with pytest.raises(RuntimeError, match="state shape"):
        Mailbox.from_env((3, 1, 8, 8))
    box.unlink()
    assert not box.path.exists()
