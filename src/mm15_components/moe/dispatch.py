"""Dropless token dispatch to experts: the routing plan, the activations and the CPU backends.

Every backend computes, for tokens ``x [T, H]`` routed to experts ``ids [T, k]`` with
weights ``weights [T, k]``::

    out[t] = sum_j weights[t, j] * down[ids[t, j]] @ act(in[ids[t, j]] @ x[t])

``in`` is ``[E, 2F, H]`` (gate rows then up rows) for ``"swiglu"`` and ``[E, F, H]`` for
``"gelu"``; ``down`` is ``[E, H, F]``. "Rows" below are the ``S = T * k`` (token, expert)
pairs sorted by expert, so that each expert owns one contiguous block of rows.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

Activation = Literal["swiglu", "gelu"]
ACTIVATIONS: tuple[str, ...] = ("swiglu", "gelu")
Backend = Literal["auto", "reference", "grouped_mm", "triton"]
BACKENDS: tuple[str, ...] = ("auto", "reference", "grouped_mm", "triton")
# "auto" off-GPU pads experts into one batched GEMM while that costs at most 1.5x the rows.
AUTO_MAX_PADDING = 1.5


class DispatchPlan(NamedTuple):
    """Where each (token, expert) pair goes; computed once per forward on the device.

    ``order[r]`` is the flat pair index ``t * k + j`` of sorted row ``r``, ``row_of_pair`` its
    inverse, ``offsets[e]`` the end row of expert ``e`` (int32, cumulative counts).
    """

    order: Tensor
    row_of_pair: Tensor
    offsets: Tensor


def plan_dispatch(expert_ids: Tensor, tokens_per_expert: Tensor) -> DispatchPlan:
    """Sort the pairs by expert (stable, so rows keep token order) without a host sync."""
    order = expert_ids.reshape(-1).argsort(stable=True)
    row_of_pair = order.argsort()
    offsets = tokens_per_expert.cumsum(0).to(torch.int32)
    return DispatchPlan(order, row_of_pair, offsets)


def activate(h: Tensor, activation: str, out: Tensor | None = None) -> Tensor:
    """``silu(gate) * up`` on ``h = [gate | up]`` for swiglu, exact GELU otherwise."""
    if activation == "gelu":
        return F.gelu(h) if out is None else torch.ops.aten.gelu.out(h, out=out)
    gate, up = h.chunk(2, dim=-1)
    act = F.silu(gate) if out is None else torch.ops.aten.silu.out(gate, out=out)
    return act.mul_(up)


def activation_backward(h: Tensor, grad_act: Tensor, activation: str) -> Tensor:
    """Gradient of :func:`activate` w.r.t. ``h``, written into one buffer (no concatenation)."""
    if activation == "gelu":
        return torch.ops.aten.gelu_backward(grad_act, h)
    gate, up = h.chunk(2, dim=-1)
    grad_h = torch.empty_like(h)
    grad_gate, grad_up = grad_h.chunk(2, dim=-1)
    torch.ops.aten.silu_backward.grad_input(grad_act * up, gate, grad_input=grad_gate)
    torch.mul(F.silu(gate), grad_act, out=grad_up)
    return grad_h


def reference_experts(
    x: Tensor, weights: Tensor, expert_ids: Tensor, w_in: Tensor, w_out: Tensor, activation: str
) -> Tensor:
    """Plain per-expert loop: the ground truth the fast backends are tested against."""
    out = torch.zeros_like(x)
    for expert in range(w_in.shape[0]):
        token, slot = torch.where(expert_ids == expert)
        if token.numel() == 0:
            continue
        y = F.linear(activate(F.linear(x[token], w_in[expert]), activation), w_out[expert])
        out = out.index_add(0, token, y * weights[token, slot, None])
    return out


def _grouped_mm_supported(*tensors: Tensor) -> bool:
    """torch's grouped GEMM wants fp32/fp16/bf16, 16-byte aligned pointers and strides."""
    for tensor in tensors:
        if tensor.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            return False
        size = tensor.element_size()
        if tensor.data_ptr() % 16 or any(s != 1 and s * size % 16 for s in tensor.stride()):
            return False
    return True


def grouped_matmul(a: Tensor, b: Tensor, offsets: Tensor) -> Tensor:
    """Per-expert products over row blocks delimited by ``offsets``.

    ``a [S, K] @ b [E, K, N] -> [S, N]``, or, for weight gradients, ``a [M, S] @ b [S, N] ->
    [E, M, N]``. Uses ``torch.nn.functional.grouped_mm`` where its layout rules hold, a
    per-expert loop otherwise (odd widths, fp64).
    """
    if _grouped_mm_supported(a, b):
        return F.grouped_mm(a, b, offs=offsets)
    starts = [0, *offsets[:-1].tolist()]
    ends = offsets.tolist()
    if b.dim() == 3:
        return torch.cat([a[s:e] @ b[i] for i, (s, e) in enumerate(zip(starts, ends, strict=True))])
    return torch.stack([a[:, s:e] @ b[s:e] for s, e in zip(starts, ends, strict=True)])


class RowLayout(NamedTuple):
    """The expert-sorted rows, ragged (one block per expert) or padded to ``capacity`` each.

    Padding turns the per-expert GEMMs into one batched GEMM, a single parallel region
    instead of one per expert, which is much faster on CPU (docs/moe.md). Padding rows read
    token 0 and carry routing weight 0, so they add nothing to any output or gradient.
    """

    token: Tensor
    weight: Tensor
    of_pair: Tensor
    offsets: Tensor
    capacity: int

    @property
    def used_rows(self) -> int:
        return self.token.shape[0]


def buffer_rows(num_pairs: int, max_padding: float) -> int:
    """Static row count of the saved activations: enough for padding up to ``max_padding``."""
    return max(num_pairs, int(max_padding * num_pairs))


def row_layout(
    weights: Tensor, order: Tensor, row_of_pair: Tensor, offsets: Tensor, max_padding: float
) -> RowLayout:
    num_pairs, num_experts = order.shape[0], offsets.shape[0]
    token = order.div(weights.shape[1], rounding_mode="floor")
    weight = weights.reshape(-1).index_select(0, order)
    if max_padding <= 1:
        return RowLayout(token, weight, row_of_pair, offsets, 0)
    counts = offsets.diff(prepend=offsets.new_zeros(1))
    capacity = int(counts.max())  # a host sync: only allowed off-GPU (see resolve_backend)
    if capacity * num_experts > buffer_rows(num_pairs, max_padding):
        return RowLayout(token, weight, row_of_pair, offsets, 0)
    rows = torch.arange(num_pairs, device=order.device)
    expert = torch.searchsorted(offsets, rows, right=True)
    padded_row = rows + expert * capacity - (offsets - counts).index_select(0, expert)
    padded = num_experts * capacity
    padded_token = token.new_zeros(padded).index_copy_(0, padded_row, token)
    padded_weight = weight.new_zeros(padded).index_copy_(0, padded_row, weight)
    of_pair = padded_row.index_select(0, row_of_pair)
    return RowLayout(padded_token, padded_weight, of_pair, offsets, capacity)


def _expert_matmul(a: Tensor, b: Tensor, layout: RowLayout, num_rows: int = 0) -> Tensor:
    """``a`` rows times their expert's ``b [E, K, N]``, in a buffer of ``num_rows`` rows
    (default: as many as ``a``; extra rows stay uninitialised)."""
    used, width = a.shape[0], b.shape[2]
    if not layout.capacity:
        result = grouped_matmul(a, b, layout.offsets)
        if num_rows <= used:
            return result
        return torch.cat([result, result.new_empty(num_rows - used, width)])
    out = a.new_empty(max(num_rows, used), width)
    batched = (b.shape[0], layout.capacity, -1)
    torch.bmm(a.view(batched), b, out=out[:used].view(batched))
    return out


def _expert_weight_grad(a: Tensor, b: Tensor, layout: RowLayout) -> Tensor:
    """``[E, A, B]`` per-expert sums of ``a_row^T b_row`` over the expert's rows."""
    if layout.capacity:
        num_experts = layout.offsets.shape[0]
        batched = (num_experts, layout.capacity, -1)
        return torch.bmm(a.view(batched).transpose(1, 2), b.view(batched))
    return grouped_matmul(a.t(), b, layout.offsets)


def _combine(rows: Tensor, weights: Tensor, row_of_pair: Tensor) -> Tensor:
    """``out[t] = sum_j weights[t, j] * rows[row_of_pair[t * k + j]]`` as one gather + bmm."""
    num_tokens, top_k = weights.shape
    gathered = rows.index_select(0, row_of_pair).view(num_tokens, top_k, rows.shape[1])
    return torch.bmm(weights.unsqueeze(1), gathered).squeeze(1)


@torch.library.custom_op("mm15_moe::experts", mutates_args=())
def _experts(
    x: Tensor,
    weights: Tensor,
    order: Tensor,
    row_of_pair: Tensor,
    offsets: Tensor,
    w_in: Tensor,
    w_out: Tensor,
    activation: str,
    max_padding: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Forward; also returns ``h`` and ``act`` (saved for backward, never differentiated),
    with a static row count so that compiled graphs see fixed shapes."""
    layout = row_layout(weights, order, row_of_pair, offsets, max_padding)
    num_rows = buffer_rows(order.shape[0], max_padding)
    h = _expert_matmul(x.index_select(0, layout.token), w_in.transpose(1, 2), layout, num_rows)
    act = x.new_empty(num_rows, w_out.shape[2])
    activate(h[: layout.used_rows], activation, out=act[: layout.used_rows])
    rows = _expert_matmul(act[: layout.used_rows], w_out.transpose(1, 2), layout)
    return _combine(rows, weights, layout.of_pair), h, act


@_experts.register_fake
def _(x, weights, order, row_of_pair, offsets, w_in, w_out, activation, max_padding):
    num_rows = buffer_rows(order.shape[0], max_padding)
    return (
        x.new_empty(x.shape),
        x.new_empty(num_rows, w_in.shape[1]),
        x.new_empty(num_rows, w_out.shape[2]),
    )


@torch.library.custom_op("mm15_moe::experts_backward", mutates_args=())
def _experts_backward(
    grad_out: Tensor,
    x: Tensor,
    weights: Tensor,
    order: Tensor,
    row_of_pair: Tensor,
    offsets: Tensor,
    w_in: Tensor,
    w_out: Tensor,
    h: Tensor,
    act: Tensor,
    activation: str,
    max_padding: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Hand-written backward: reuses every gathered buffer in place, no autograd graph."""
    num_tokens, top_k = weights.shape
    layout = row_layout(weights, order, row_of_pair, offsets, max_padding)
    h, act = h[: layout.used_rows], act[: layout.used_rows]
    row_weight = layout.weight.unsqueeze(1)
    grad_rows = grad_out.index_select(0, layout.token)
    grad_act = _expert_matmul(grad_rows, w_out, layout)
    grad_row_weight = torch.einsum("rf,rf->r", grad_act, act)
    grad_weights = grad_row_weight.index_select(0, layout.of_pair).view(num_tokens, top_k)
    grad_w_out = _expert_weight_grad(grad_rows.mul_(row_weight), act, layout)
    grad_h = activation_backward(h, grad_act.mul_(row_weight), activation)
    grad_w_in = _expert_weight_grad(grad_h, x.index_select(0, layout.token), layout)
    grad_x = _combine(
        _expert_matmul(grad_h, w_in, layout), torch.ones_like(weights), layout.of_pair
    )
    return grad_x, grad_weights, grad_w_in, grad_w_out


@_experts_backward.register_fake
def _(grad_out, x, weights, order, row_of_pair, offsets, w_in, w_out, h, act, activation, pad):
    return (
        x.new_empty(x.shape),
        weights.new_empty(weights.shape),
        w_in.new_empty(w_in.shape),
        w_out.new_empty(w_out.shape),
    )


def _setup_context(ctx, inputs, output) -> None:
    x, weights, order, row_of_pair, offsets, w_in, w_out, activation, max_padding = inputs
    _, h, act = output
    ctx.mark_non_differentiable(h, act)
    ctx.set_materialize_grads(False)  # no zero-filled gradients for h and act
    ctx.save_for_backward(x, weights, order, row_of_pair, offsets, w_in, w_out, h, act)
    ctx.activation = activation
    ctx.max_padding = max_padding


def _backward(ctx, grad_out, _grad_h, _grad_act):
    grad_x, grad_weights, grad_w_in, grad_w_out = _experts_backward(
        grad_out.contiguous(), *ctx.saved_tensors, ctx.activation, ctx.max_padding
    )
    return grad_x, grad_weights, None, None, None, grad_w_in, grad_w_out, None, None


_experts.register_autograd(_backward, setup_context=_setup_context)


def grouped_experts(
    x: Tensor,
    weights: Tensor,
    plan: DispatchPlan,
    w_in: Tensor,
    w_out: Tensor,
    activation: str,
    max_padding: float = 1.0,
) -> Tensor:
    """Experts as grouped GEMMs with a fused backward.

    When padding every expert to the largest expert's row count costs at most
    ``max_padding`` times the real rows, one batched GEMM replaces the per-expert ones
    (``max_padding <= 1`` never pads and never syncs; ``"auto"`` off-GPU uses
    ``AUTO_MAX_PADDING``).
    Wrapped as a custom op so that ``torch.compile(fullgraph=True)`` sees one opaque node
    with static output shapes (torch's grouped GEMM has no fp32 meta kernel).
    """
    out, _, _ = _experts(
        x, weights, plan.order, plan.row_of_pair, plan.offsets, w_in, w_out, activation, max_padding
    )
    return out


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype) -> tuple[str, float]:
    """The concrete backend and the padding allowance for ``grouped_experts``.

    On CUDA, torch's grouped GEMM needs bf16 on SM80+ while the Triton kernels take any float
    dtype, and padding is off (it needs a host sync). Elsewhere ``"auto"`` is the grouped
    path with padding up to ``AUTO_MAX_PADDING``, measured fastest on CPU (docs/moe.md).
    """
    if backend not in BACKENDS:
        raise ValueError(f"MoE backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend, 1.0
    if device.type == "cuda":
        sm80 = torch.cuda.get_device_capability(device) >= (8, 0)
        return ("grouped_mm" if dtype == torch.bfloat16 and sm80 else "triton"), 1.0
    return "grouped_mm", AUTO_MAX_PADDING
