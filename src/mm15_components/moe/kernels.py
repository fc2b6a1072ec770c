"""Triton grouped-GEMM kernels for the MoE experts, with the token gather fused into the input
loads and the routing-weight scale plus the un-permute fused into the output stores.

Two kernels cover forward and backward:

* :func:`_grouped_gemm_kernel`: ``C[r] = scale[r] * A[src(r)] @ B[e(r)]`` for the rows ``r``
  of each expert, reading ``A`` rows through an index (the gather) and writing ``C`` rows
  through another index (the un-permute to (token, slot) order).
* :func:`_grouped_weight_grad_kernel`: ``dW[e] = (scale * A[src])_e^T @ B[src]_e``, the
  per-expert weight gradient, with the same gathers.

The expert that owns a row tile is found in-kernel from the cumulative tile counts, so the
launch grid has a static size (no host sync on the routing). On CPU the kernels run under
``TRITON_INTERPRET=1`` (set before this module is first imported), which the tests use; they
call only core Triton builtins (no ``@jit`` helpers from ``triton.language.standard`` such as
``tl.sum`` or ``tl.zeros``), so the interpreter works even when Triton itself was imported
before the variable was set.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .dispatch import DispatchPlan, activate, activation_backward

_BLOCK_M = 32
_BLOCK_N = 32
_BLOCK_K = 32


def _is_interpreted() -> bool:
    return not isinstance(_grouped_gemm_kernel, triton.runtime.JITFunction)


@triton.jit
def _grouped_gemm_kernel(
    a_ptr,
    a_index_ptr,
    b_ptr,
    c_ptr,
    c_index_ptr,
    scale_ptr,
    offsets_ptr,
    tile_ends_ptr,
    num_experts,
    N,
    K,
    stride_am,
    stride_ak,
    stride_be,
    stride_bk,
    stride_bn,
    stride_cm,
    stride_cn,
    GATHER_A: tl.constexpr,
    SCATTER_C: tl.constexpr,
    SCALE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    expert = 0
    for candidate in range(num_experts):
        expert += (tl.load(tile_ends_ptr + candidate) <= pid_m).to(tl.int32)
    # Tiles past the last expert land on it with rows beyond its end: fully masked below.
    expert = tl.minimum(expert, num_experts - 1)
    first_tile = tl.load(tile_ends_ptr + expert - 1, mask=expert > 0, other=0)
    row_start = tl.load(offsets_ptr + expert - 1, mask=expert > 0, other=0)
    row_end = tl.load(offsets_ptr + expert)

    rows = row_start + (pid_m - first_tile) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < row_end
    if GATHER_A:
        a_rows = tl.load(a_index_ptr + rows, mask=row_mask, other=0)
    else:
        a_rows = rows
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    ks = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + a_rows[:, None].to(tl.int64) * stride_am + ks[None, :] * stride_ak
    b_ptrs = b_ptr + expert.to(tl.int64) * stride_be + ks[:, None] * stride_bk
    b_ptrs += cols[None, :] * stride_bn

    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_mask = ks + k0 < K
        a = tl.load(a_ptrs, mask=row_mask[:, None] & k_mask[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_mask[:, None] & col_mask[None, :], other=0.0)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    if SCALE:
        acc *= tl.load(scale_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)[:, None]
    if SCATTER_C:
        c_rows = tl.load(c_index_ptr + rows, mask=row_mask, other=0)
    else:
        c_rows = rows
    c_ptrs = c_ptr + c_rows[:, None].to(tl.int64) * stride_cm + cols[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


@triton.jit
def _grouped_weight_grad_kernel(
    a_ptr,
    a_index_ptr,
    b_ptr,
    b_index_ptr,
    scale_ptr,
    out_ptr,
    offsets_ptr,
    P,
    Q,
    stride_am,
    stride_ap,
    stride_bm,
    stride_bq,
    stride_oe,
    stride_op,
    stride_oq,
    GATHER_A: tl.constexpr,
    GATHER_B: tl.constexpr,
    SCALE: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    expert = tl.program_id(0)
    ps = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    qs = tl.program_id(2) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    p_mask = ps < P
    q_mask = qs < Q
    row_start = tl.load(offsets_ptr + expert - 1, mask=expert > 0, other=0)
    row_end = tl.load(offsets_ptr + expert)

    acc = tl.full((BLOCK_P, BLOCK_Q), 0.0, tl.float32)
    for r0 in range(row_start, row_end, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        row_mask = rows < row_end
        if GATHER_A:
            a_rows = tl.load(a_index_ptr + rows, mask=row_mask, other=0)
        else:
            a_rows = rows
        if GATHER_B:
            b_rows = tl.load(b_index_ptr + rows, mask=row_mask, other=0)
        else:
            b_rows = rows
        a_ptrs = a_ptr + a_rows[None, :].to(tl.int64) * stride_am + ps[:, None] * stride_ap
        a_t = tl.load(a_ptrs, mask=p_mask[:, None] & row_mask[None, :], other=0.0)
        if SCALE:
            scale = tl.load(scale_ptr + rows, mask=row_mask, other=0.0)
            a_t = (a_t.to(tl.float32) * scale.to(tl.float32)[None, :]).to(a_t.dtype)
        b_ptrs = b_ptr + b_rows[:, None].to(tl.int64) * stride_bm + qs[None, :] * stride_bq
        b = tl.load(b_ptrs, mask=row_mask[:, None] & q_mask[None, :], other=0.0)
        acc = tl.dot(a_t, b, acc)

    out_ptrs = out_ptr + expert.to(tl.int64) * stride_oe + ps[:, None] * stride_op
    out_ptrs += qs[None, :] * stride_oq
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=p_mask[:, None] & q_mask[None, :])


def _grouped_gemm(
    a: Tensor,
    b: Tensor,
    offsets: Tensor,
    tile_ends: Tensor,
    num_rows: int,
    gather: Tensor | None = None,
    scatter: Tensor | None = None,
    scale: Tensor | None = None,
) -> Tensor:
    """``out[scatter[r]] = scale[r] * a[gather[r]] @ b[e(r)]`` for ``b [E, K, N]`` (any strides)."""
    num_experts, depth, width = b.shape
    out = a.new_empty(num_rows, width)
    grid = (triton.cdiv(num_rows, _BLOCK_M) + num_experts, triton.cdiv(width, _BLOCK_N))
    _grouped_gemm_kernel[grid](
        a,
        gather if gather is not None else offsets,
        b,
        out,
        scatter if scatter is not None else offsets,
        scale if scale is not None else a,
        offsets,
        tile_ends,
        num_experts,
        width,
        depth,
        a.stride(0),
        a.stride(1),
        *b.stride(),
        *out.stride(),
        GATHER_A=gather is not None,
        SCATTER_C=scatter is not None,
        SCALE=scale is not None,
        BLOCK_M=_BLOCK_M,
        BLOCK_N=_BLOCK_N,
        BLOCK_K=_BLOCK_K,
    )
    return out


def _grouped_weight_grad(
    a: Tensor,
    b: Tensor,
    offsets: Tensor,
    gather_a: Tensor | None = None,
    gather_b: Tensor | None = None,
    scale: Tensor | None = None,
) -> Tensor:
    """``out[e] = (scale * a[gather_a])_e^T @ b[gather_b]_e`` over each expert's rows."""
    width_a, width_b = a.shape[1], b.shape[1]
    num_experts = offsets.shape[0]
    out = a.new_empty(num_experts, width_a, width_b)
    grid = (num_experts, triton.cdiv(width_a, _BLOCK_M), triton.cdiv(width_b, _BLOCK_N))
    _grouped_weight_grad_kernel[grid](
        a,
        gather_a if gather_a is not None else offsets,
        b,
        gather_b if gather_b is not None else offsets,
        scale if scale is not None else a,
        out,
        offsets,
        width_a,
        width_b,
        a.stride(0),
        a.stride(1),
        b.stride(0),
        b.stride(1),
        *out.stride(),
        GATHER_A=gather_a is not None,
        GATHER_B=gather_b is not None,
        SCALE=scale is not None,
        BLOCK_P=_BLOCK_M,
        BLOCK_Q=_BLOCK_N,
        BLOCK_R=_BLOCK_K,
    )
    return out


class _TritonExperts(torch.autograd.Function):
    """Forward and backward of the experts as five fused grouped GEMMs."""

    @staticmethod
    def forward(ctx, x, weights, plan, w_in, w_out, activation):
        num_tokens, top_k = weights.shape
        num_rows = num_tokens * top_k
        order, offsets = plan.order, plan.offsets
        token_of_row = order.div(top_k, rounding_mode="floor")
        tiles = (offsets.diff(prepend=offsets.new_zeros(1)) + _BLOCK_M - 1) // _BLOCK_M
        tile_ends = tiles.cumsum(0).to(torch.int32)
        row_weight = weights.reshape(-1).index_select(0, order)

        h = _grouped_gemm(
            x, w_in.transpose(1, 2), offsets, tile_ends, num_rows, gather=token_of_row
        )
        act = activate(h, activation)
        pair_out = _grouped_gemm(
            act,
            w_out.transpose(1, 2),
            offsets,
            tile_ends,
            num_rows,
            scatter=order,
            scale=row_weight,
        )
        ctx.save_for_backward(
            x, w_in, w_out, h, act, row_weight, order, token_of_row, offsets, tile_ends
        )
        ctx.activation = activation
        ctx.weights_shape = weights.shape
        return pair_out.view(num_tokens, top_k, -1).sum(1)

    @staticmethod
    def backward(ctx, grad_out):
        x, w_in, w_out, h, act, row_weight, order, token_of_row, offsets, tile_ends = (
            ctx.saved_tensors
        )
        num_tokens, top_k = ctx.weights_shape
        num_rows = num_tokens * top_k
        grad_out = grad_out.contiguous()

        grad_act = _grouped_gemm(grad_out, w_out, offsets, tile_ends, num_rows, gather=token_of_row)
        grad_weights = torch.empty_like(row_weight).index_copy_(
            0, order, torch.linalg.vecdot(grad_act, act).to(row_weight.dtype)
        )
        grad_w_out = _grouped_weight_grad(
            grad_out, act, offsets, gather_a=token_of_row, scale=row_weight
        )
        grad_h = activation_backward(h, grad_act.mul_(row_weight.unsqueeze(1)), ctx.activation)
        grad_w_in = _grouped_weight_grad(grad_h, x, offsets, gather_b=token_of_row)
        grad_pairs = _grouped_gemm(grad_h, w_in, offsets, tile_ends, num_rows, scatter=order)
        grad_x = grad_pairs.view(num_tokens, top_k, -1).sum(1)
        return grad_x, grad_weights.view(num_tokens, top_k), None, grad_w_in, grad_w_out, None


def triton_experts(
    x: Tensor, weights: Tensor, plan: DispatchPlan, w_in: Tensor, w_out: Tensor, activation: str
) -> Tensor:
    """Experts through the fused Triton kernels (CUDA, or CPU under ``TRITON_INTERPRET=1``)."""
    if x.device.type == "cpu" and not _is_interpreted():
        raise RuntimeError(
            "MoE backend 'triton' got CPU tensors but Triton is not in interpreter mode: set "
            "TRITON_INTERPRET=1 before mm15_components.moe.kernels is first imported, or use "
            "CUDA tensors"
        )
    return _TritonExperts.apply(x, weights, plan, w_in, w_out, activation)
