"""Triton MoE kernels against the per-expert reference loop.

Without CUDA the kernels run in Triton's interpreter, which must be switched on before the
kernel module is first imported; the MoE layer imports it lazily, so setting the variable
here (at collection, before any test runs) is enough. Shapes stay tiny: the interpreter is
slow, and bf16 dots are unreliable in it, so fp32 and fp16 are checked.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from mm15_components.moe.layer import MoEFeedForward  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Both backends are compared with an fp32 loop on the same (rounded) weights and inputs;
# fp16 rounds the intermediate activations, hence its looser tolerance.
TOLERANCES = {torch.float32: 1e-5, torch.float16: 1e-2}


def _force_routing(moe: MoEFeedForward, preference: list[int]) -> None:
    """Every token prefers the given experts in order (inputs keep feature 0 positive)."""
    with torch.no_grad():
        moe.router.weight.zero_()
        for rank, expert in enumerate(preference):
            moe.router.weight[expert, 0] = 10.0 * (len(preference) - rank)


@pytest.mark.parametrize("routing", ["random", "two_hot_experts", "one_expert"])
@pytest.mark.parametrize("activation", ["swiglu", "gelu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triton_backend_matches_reference_loop(routing, activation, dtype):
    top_k = 1 if routing == "one_expert" else 2
    # widths not multiples of the 32-wide tiles, 5 experts (not a power of two)
    moe = MoEFeedForward(24, 20, num_experts=5, top_k=top_k, activation=activation, init_std=0.2)
    moe = moe.to(device=DEVICE, dtype=dtype)
    if routing == "two_hot_experts":
        _force_routing(moe, [3, 1])
    elif routing == "one_expert":
        _force_routing(moe, [2])
    x = torch.randn(2, 9, 24, device=DEVICE)
    x = torch.cat([x[..., :1].abs() + 0.5, x[..., 1:]], dim=-1).to(dtype)
    grad = torch.randn_like(x)
    results = {}
    for backend, run_dtype in (("reference", torch.float32), ("triton", dtype)):
        moe.zero_grad()
        moe.backend = backend
        moe.to(run_dtype)
        x_leaf = x.to(run_dtype).requires_grad_()
        out = moe(x_leaf)
        out.backward(grad.to(run_dtype))
        results[backend] = [out, x_leaf.grad] + [p.grad for p in moe.parameters()]
    if routing != "random":
        assert int((moe.tokens_per_expert > 0).sum()) == top_k  # the other experts are empty
    tolerance = TOLERANCES[dtype]
    for want, have in zip(results["reference"], results["triton"], strict=True):
        assert have.dtype == dtype
        torch.testing.assert_close(have.float(), want, atol=tolerance, rtol=tolerance)
