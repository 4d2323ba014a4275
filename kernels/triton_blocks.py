"""Small @triton.jit helpers shared by the δ-mem kernels: chunk spans, padded square/cube offsets, token loads."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def chunk_span(chunk_seq_ptr, chunk_bos_ptr, cu_seqlens_ptr, i_c, BT: tl.constexpr):
    """First token and length of chunk i_c (a sequence's last chunk may be short)."""
    i_s = tl.load(chunk_seq_ptr + i_c)
    bos = tl.load(chunk_bos_ptr + i_c)
    eos = tl.load(cu_seqlens_ptr + i_s + 1)
    return bos, tl.minimum(eos - bos, BT)


@triton.jit
def square_block(R: tl.constexpr, BR: tl.constexpr):
    """Offsets and mask of a row-major R x R matrix held in a BR x BR block."""
    o_r = tl.arange(0, BR)
    m_r = o_r < R
    return o_r[:, None] * R + o_r[None, :], m_r[:, None] & m_r[None, :]


@triton.jit
def cube_block(R: tl.constexpr, BR: tl.constexpr):
    """Offsets and mask of R row-major R x R matrices (one per state row) held in a BR x BR x BR block."""
    o_r = tl.arange(0, BR)
    m_r = o_r < R
    offsets = o_r[:, None, None] * R * R + o_r[None, :, None] * R + o_r[None, None, :]
    return offsets, m_r[:, None, None] & m_r[None, :, None] & m_r[None, None, :]


@triton.jit
def load_row(ptr, offsets, mask):
    """A vector of one token's values, in fp32 whatever the stored dtype (bf16 math is wrong in the interpreter)."""
    return tl.load(ptr + offsets, mask=mask, other=0.0).to(tl.float32)
