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

from .adaptive import ALL_THREADS, GROUPED, MEASURED, run_faster
from .workers import empty_buffer, for_each_expert

Activation = Literal["swiglu", "gelu"]
ACTIVATIONS: tuple[str, ...] = ("swiglu", "gelu")
Backend = Literal["auto", "reference", "grouped_mm", "workers", "triton"]
BACKENDS: tuple[str, ...] = ("auto", "reference", "grouped_mm", "workers", "triton")


class DispatchPlan(NamedTuple):
    """Where each (token, expert) pair goes; computed once per forward on the device.

    ``order[r]`` is the flat pair index ``t * k + j`` of sorted row ``r``; ``offsets[e]`` the
    end row of expert ``e`` (int32, cumulative counts).
    """

    order: Tensor
    offsets: Tensor


def plan_dispatch(expert_ids: Tensor, tokens_per_expert: Tensor) -> DispatchPlan:
    """Sort the pairs by expert (stable, so rows keep token order) without a host sync."""
    order = expert_ids.reshape(-1).argsort(stable=True)
    offsets = tokens_per_expert.cumsum(0).to(torch.int32)
    return DispatchPlan(order, offsets)


def activate(h: Tensor, activation: str) -> Tensor:
    """``silu(gate) * up`` on ``h = [gate | up]`` for swiglu, exact GELU otherwise."""
    if activation == "gelu":
        return F.gelu(h)
    gate, up = h.chunk(2, dim=-1)
    return F.silu(gate).mul_(up)


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


def _sorted_rows(weights: Tensor, order: Tensor) -> tuple[Tensor, Tensor]:
    """Token index and routing weight of every expert-sorted row."""
    return order.div(weights.shape[1], rounding_mode="floor"), weights.reshape(-1)[order]


def _sum_over_pairs(per_pair: Tensor, num_tokens: int, top_k: int) -> Tensor:
    """``[T * k, H]`` rows in pair order ``t * k + j`` -> ``[T, H]`` sums over ``j``."""
    out = empty_buffer(per_pair, num_tokens, per_pair.shape[1])
    return torch.sum(per_pair.view(num_tokens, top_k, per_pair.shape[1]), 1, out=out)


@torch.library.custom_op("mm15_moe::experts", mutates_args=())
def _experts(
    x: Tensor,
    weights: Tensor,
    order: Tensor,
    offsets: Tensor,
    w_in: Tensor,
    w_out: Tensor,
    activation: str,
    workers: int,
) -> tuple[Tensor, Tensor]:
    """Forward; also returns the sorted rows' input projection ``h``, saved for backward
    (never differentiated; ``act`` is recomputed from it there)."""
    inputs = (x, weights, order, offsets, w_in, w_out, activation)
    if workers == MEASURED:
        site = ("forward", activation, tuple(w_in.shape), x.dtype, order.shape[0].bit_length())
        return run_faster(site, lambda path: _forward_on(*inputs, path))
    return _forward_on(*inputs, workers)


@_experts.register_fake
def _(x, weights, order, offsets, w_in, w_out, activation, workers):
    return x.new_empty(x.shape), x.new_empty(order.shape[0], w_in.shape[1])


def _forward_on(
    x: Tensor,
    weights: Tensor,
    order: Tensor,
    offsets: Tensor,
    w_in: Tensor,
    w_out: Tensor,
    activation: str,
    workers: int,
) -> tuple[Tensor, Tensor]:
    num_tokens, top_k = weights.shape
    token, row_weight = _sorted_rows(weights, order)
    per_pair = empty_buffer(x, order.shape[0], x.shape[1])
    if workers:
        h = empty_buffer(x, order.shape[0], w_in.shape[1])

        def expert_forward(expert: int, start: int, end: int) -> None:
            h_e = torch.mm(x.index_select(0, token[start:end]), w_in[expert].t(), out=h[start:end])
            y = torch.mm(activate(h_e, activation), w_out[expert].t())
            per_pair.index_copy_(0, order[start:end], y.mul_(row_weight[start:end, None]))

        for_each_expert(expert_forward, offsets.tolist(), workers)
    else:
        h = grouped_matmul(x.index_select(0, token), w_in.transpose(1, 2), offsets)
        rows = grouped_matmul(activate(h, activation), w_out.transpose(1, 2), offsets)
        per_pair.index_copy_(0, order, rows.mul_(row_weight[:, None]))
    return _sum_over_pairs(per_pair, num_tokens, top_k), h


@torch.library.custom_op("mm15_moe::experts_backward", mutates_args=())
def _experts_backward(
    grad_out: Tensor,
    x: Tensor,
    weights: Tensor,
    order: Tensor,
    offsets: Tensor,
    w_in: Tensor,
    w_out: Tensor,
    h: Tensor,
    activation: str,
    workers: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Hand-written backward, no autograd graph. With ``G`` the gathered output gradient and
    ``w`` the routing weight of each row: ``dact = G @ W_down``, ``dw = <dact, act>``,
    ``dW_down = (w G)^T act``, ``dh = act'(h) (w dact)``, ``dW_in = dh^T x``,
    ``dx = dh @ W_in``."""
    saved = (x, weights, order, offsets, w_in, w_out, h, activation)
    if workers == MEASURED:
        site = ("backward", activation, tuple(w_in.shape), x.dtype, order.shape[0].bit_length())
        return run_faster(site, lambda path: _backward_on(grad_out, *saved, path))
    return _backward_on(grad_out, *saved, workers)


@_experts_backward.register_fake
def _(grad_out, x, weights, order, offsets, w_in, w_out, h, activation, workers):
    return (
        x.new_empty(x.shape),
        weights.new_empty(weights.shape),
        w_in.new_empty(w_in.shape),
        w_out.new_empty(w_out.shape),
    )


def _backward_on(
    grad_out: Tensor,
    x: Tensor,
    weights: Tensor,
    order: Tensor,
    offsets: Tensor,
    w_in: Tensor,
    w_out: Tensor,
    h: Tensor,
    activation: str,
    workers: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    num_tokens, top_k = weights.shape
    token, row_weight = _sorted_rows(weights, order)
    grad_per_pair = empty_buffer(x, order.shape[0], x.shape[1])
    grad_weights = weights.new_empty(order.shape[0])
    if workers:
        grad_w_in, grad_w_out = empty_buffer(w_in, *w_in.shape), empty_buffer(w_out, *w_out.shape)
        ends = offsets.tolist()
        for expert, (start, end) in enumerate(zip([0, *ends[:-1]], ends, strict=True)):
            if start == end:  # no rows: zero gradient
                grad_w_in[expert].zero_()
                grad_w_out[expert].zero_()

        def expert_backward(expert: int, start: int, end: int) -> None:
            rows, w = order[start:end], row_weight[start:end, None]
            h_e = h[start:end]
            act = activate(h_e, activation)
            grad_rows = grad_out.index_select(0, token[start:end])
            grad_act = torch.mm(grad_rows, w_out[expert])
            grad_weights.index_copy_(0, rows, (grad_act * act).sum(1))
            torch.mm(grad_rows.mul_(w).t(), act, out=grad_w_out[expert])
            grad_h = activation_backward(h_e, grad_act.mul_(w), activation)
            torch.mm(grad_h.t(), x.index_select(0, token[start:end]), out=grad_w_in[expert])
            grad_per_pair.index_copy_(0, rows, torch.mm(grad_h, w_in[expert]))

        for_each_expert(expert_backward, ends, workers)
    else:
        act = activate(h, activation)
        grad_rows = grad_out.index_select(0, token)
        grad_act = grouped_matmul(grad_rows, w_out, offsets)
        grad_weights.index_copy_(0, order, (grad_act * act).sum(1))
        grad_w_out = grouped_matmul(grad_rows.mul_(row_weight[:, None]).t(), act, offsets)
        grad_h = activation_backward(h, grad_act.mul_(row_weight[:, None]), activation)
        grad_w_in = grouped_matmul(grad_h.t(), x.index_select(0, token), offsets)
        grad_per_pair.index_copy_(0, order, grouped_matmul(grad_h, w_in, offsets))
    grad_x = _sum_over_pairs(grad_per_pair, num_tokens, top_k)
    return grad_x, grad_weights.view(num_tokens, top_k), grad_w_in, grad_w_out


def _setup_context(ctx, inputs, output) -> None:
    x, weights, order, offsets, w_in, w_out, activation, workers = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no zero-filled gradient for h
    ctx.save_for_backward(x, weights, order, offsets, w_in, w_out, output[1])
    ctx.activation = activation
    ctx.workers = workers


def _backward(ctx, grad_out, _grad_h):
    grad_x, grad_weights, grad_w_in, grad_w_out = _experts_backward(
        grad_out.contiguous(), *ctx.saved_tensors, ctx.activation, ctx.workers
    )
    return grad_x, grad_weights, None, None, grad_w_in, grad_w_out, None, None


_experts.register_autograd(_backward, setup_context=_setup_context)


def grouped_experts(
    x: Tensor,
    weights: Tensor,
    plan: DispatchPlan,
    w_in: Tensor,
    w_out: Tensor,
    activation: str,
    workers: int = GROUPED,
) -> Tensor:
    """Experts over the expert-sorted rows, with a fused hand-written backward.

    ``workers=GROUPED`` (0): whole-batch grouped GEMMs (``torch.nn.functional.grouped_mm``),
    no host sync. A positive count (CPU): each expert's GEMMs, activation, routing-weight
    scale and scatter run as one task on that many single-threaded worker threads (``1``: in
    the calling thread; ``ALL_THREADS``: ``torch.get_num_threads()`` of them). That path reads
    the row counts on the host once per call, which costs nothing on CPU, where there is no
    asynchronous stream to stall (see ``workers.py``). ``MEASURED``: forward and backward
    each run whichever of the two is faster at the time (``adaptive.py``).
    Wrapped as a custom op so that ``torch.compile(fullgraph=True)`` sees one opaque node
    with static output shapes (torch's grouped GEMM has no fp32 meta kernel).
    """
    out, _ = _experts(x, weights, plan.order, plan.offsets, w_in, w_out, activation, workers)
    return out


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype) -> tuple[str, int]:
    """The concrete backend and the ``workers`` value for ``grouped_experts``.

    On CUDA, ``"auto"`` is torch's grouped GEMM in bf16 on SM80+ and the Triton kernels
    otherwise (they take any float dtype). On CPU it measures: the grouped GEMMs or the
    per-expert tasks, whichever is faster on this machine now (``MEASURED``; the two differ
    by rounding, so name one for bit-reproducible runs). ``"grouped_mm"`` always means
    whole-batch grouped GEMMs; ``"workers"`` the per-expert tasks on
    ``torch.get_num_threads()`` single-threaded workers (read when the op runs, so compiled
    graphs follow ``torch.set_num_threads``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"MoE backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "workers":
        return "grouped_mm", ALL_THREADS
    if backend != "auto":
        return backend, GROUPED
    if device.type == "cuda":
        sm80 = torch.cuda.get_device_capability(device) >= (8, 0)
        return ("grouped_mm" if dtype == torch.bfloat16 and sm80 else "triton"), GROUPED
    return "grouped_mm", MEASURED
