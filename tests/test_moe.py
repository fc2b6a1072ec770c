"""MoE router and layer: hand-computed losses, transformers parity, backends vs the loop."""

import math
import threading

import pytest
import torch
from torch import nn
from transformers import MixtralConfig, OlmoeConfig, Qwen2MoeConfig, Qwen3MoeConfig
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
from transformers.models.olmoe.modeling_olmoe import OlmoeSparseMoeBlock
from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

from mm15_components.moe import adaptive
from mm15_components.moe.adaptive import ALL_THREADS, GROUPED, MEASURED, PathChooser
from mm15_components.moe.dispatch import (
    grouped_experts,
    grouped_matmul,
    plan_dispatch,
    reference_experts,
)
from mm15_components.moe.layer import MoEFeedForward
from mm15_components.moe.router import TopKRouter
from mm15_components.moe.workers import for_each_expert

# Two tokens whose router logits are logs of small integers, so every quantity is a fraction:
# token 0 probs [4, 2, 1, 1] / 8 -> experts (0, 1); token 1 probs [4, 1, 2, 1] / 8 -> (0, 2).
HAND_LOGITS = torch.tensor([[4.0, 2.0, 1.0, 1.0], [4.0, 1.0, 2.0, 1.0]]).log()


def _identity_router(**kwargs) -> TopKRouter:
    router = TopKRouter(hidden_size=4, num_experts=4, top_k=2, **kwargs)
    with torch.no_grad():
        router.weight.copy_(torch.eye(4))
    return router


@pytest.mark.parametrize("scoring", ["softmax_then_topk", "topk_then_softmax"])
def test_router_matches_hand_computed_case(scoring):
    router = _identity_router(scoring=scoring)
    weights, ids = router(HAND_LOGITS)
    assert ids.tolist() == [[0, 1], [0, 2]]
    # both scorings give (4, 2)/6 and (4, 2)/6 here
    torch.testing.assert_close(weights, torch.tensor([[2 / 3, 1 / 3], [2 / 3, 1 / 3]]))
    assert router.tokens_per_expert.tolist() == [2, 1, 1, 0]
    # f = counts / (T k) = [1/2, 1/4, 1/4, 0]; P = mean probs = [1/2, 3/16, 3/16, 1/8]
    balance = 4 * (1 / 2 * 1 / 2 + 1 / 4 * 3 / 16 + 1 / 4 * 3 / 16)
    z = math.log(8) ** 2  # logsumexp of both tokens is log(8)
    assert router.balance_loss.item() == pytest.approx(balance, rel=1e-6)
    assert router.z_loss.item() == pytest.approx(z, rel=1e-6)
    assert router.aux_loss.item() == pytest.approx(0.01 * balance + 0.001 * z, rel=1e-6)


def test_router_without_renormalization_keeps_probabilities():
    weights, _ = _identity_router(renormalize=False)(HAND_LOGITS)
    torch.testing.assert_close(weights, torch.tensor([[0.5, 0.25], [0.5, 0.25]]))


def test_uniform_routing_has_unit_balance_loss():
    router = TopKRouter(hidden_size=8, num_experts=4, top_k=2)
    with torch.no_grad():
        router.weight.zero_()
    router(torch.randn(6, 8))  # equal probabilities; ties go to experts 0 and 1
    assert router.balance_loss.item() == pytest.approx(1.0)


def test_router_jitter_only_in_training():
    router = TopKRouter(hidden_size=8, num_experts=4, top_k=2, jitter=0.5).eval()
    x = torch.randn(32, 8)
    assert torch.equal(router(x)[0], router(x)[0])
    router.train()
    assert not torch.equal(router(x)[0], router(x)[0])


def _config(config_class, **overrides):
    fields = dict(
        hidden_size=16,
        intermediate_size=8,
        moe_intermediate_size=8,
        shared_expert_intermediate_size=12,
        num_experts=6,
        num_local_experts=6,
        num_experts_per_tok=2,
    )
    return config_class(**{**fields, **overrides})


HF_BLOCKS = {
    "olmoe": lambda: OlmoeSparseMoeBlock(_config(OlmoeConfig)),
    "olmoe_norm_topk": lambda: OlmoeSparseMoeBlock(_config(OlmoeConfig, norm_topk_prob=True)),
    "mixtral": lambda: MixtralSparseMoeBlock(_config(MixtralConfig)),
    "qwen3_moe": lambda: Qwen3MoeSparseMoeBlock(_config(Qwen3MoeConfig, norm_topk_prob=True)),
    "qwen2_moe_shared": lambda: Qwen2MoeSparseMoeBlock(_config(Qwen2MoeConfig)),
}


def _grads(module: nn.Module, names: list[str]) -> list[torch.Tensor]:
    parameters = dict(module.named_parameters())
    return [parameters[name].grad for name in names]


@pytest.mark.parametrize("backend", ["reference", "grouped_mm"])
@pytest.mark.parametrize("kind", list(HF_BLOCKS))
def test_from_hf_matches_transformers(kind, backend):
    block = HF_BLOCKS[kind]()
    for parameter in block.parameters():
        nn.init.normal_(parameter, std=0.3)
    block.experts.config._experts_implementation = "eager"
    moe = MoEFeedForward.from_hf(block, backend=backend)
    x = torch.randn(2, 5, 16, requires_grad=True)
    x_ours = x.detach().clone().requires_grad_()
    grad = torch.randn(2, 5, 16)
    block(x).backward(grad)
    moe(x_ours).backward(grad)

    pairs = [("gate.weight", "router.weight"), ("experts.gate_up_proj", "gate_up_proj")]
    pairs.append(("experts.down_proj", "down_proj"))
    if kind == "qwen2_moe_shared":
        pairs += [("shared_expert_gate.weight", "shared_expert_gate.weight")]
        pairs += [("shared_expert.up_proj.weight", "shared_expert.up_proj.weight")]
    expected = [block(x).detach(), x.grad, *_grads(block, [hf for hf, _ in pairs])]
    got = [moe(x_ours).detach(), x_ours.grad, *_grads(moe, [ours for _, ours in pairs])]
    for want, have in zip(expected, got, strict=True):
        torch.testing.assert_close(have, want, atol=1e-5, rtol=1e-5)


def test_from_hf_rejects_unknown_blocks():
    with pytest.raises(TypeError, match="unsupported block"):
        MoEFeedForward.from_hf(nn.Linear(4, 4))


def _forced(moe: MoEFeedForward, experts_by_preference: list[int]) -> None:
    """Make every token prefer the given experts in order (the input's feature 0 is > 0)."""
    with torch.no_grad():
        moe.router.weight.zero_()
        for rank, expert in enumerate(experts_by_preference):
            moe.router.weight[expert, 0] = 10.0 * (len(experts_by_preference) - rank)


def _positive_first_feature(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x[..., :1].abs() + 0.5, x[..., 1:]], dim=-1)


ROUTINGS = {"random": None, "two_hot_experts": [3, 1], "one_expert": [2]}


@pytest.mark.parametrize("routing", list(ROUTINGS))
@pytest.mark.parametrize("activation", ["swiglu", "gelu"])
@pytest.mark.parametrize("width", [(16, 8), (6, 5)], ids=["aligned", "odd"])
def test_grouped_mm_backend_matches_reference_loop(routing, activation, width):
    hidden, intermediate = width
    preference = ROUTINGS[routing]
    top_k = 1 if routing == "one_expert" else 2
    moe = MoEFeedForward(
        hidden, intermediate, num_experts=5, top_k=top_k, activation=activation, init_std=0.3
    )
    if preference is not None:
        _forced(moe, preference)
    x = _positive_first_feature(torch.randn(3, 7, hidden))
    grad = torch.randn(3, 7, hidden)
    results = {}
    for backend in ("reference", "grouped_mm"):
        moe.zero_grad()
        moe.backend = backend
        x_leaf = x.clone().requires_grad_()
        out = moe(x_leaf)
        out.backward(grad)
        results[backend] = [out, x_leaf.grad] + [p.grad for p in moe.parameters()]
    if preference is not None:
        expected_counts = torch.zeros(5, dtype=torch.int64)
        expected_counts[preference] = 21
        assert torch.equal(moe.tokens_per_expert, expected_counts)
    for want, have in zip(results["reference"], results["grouped_mm"], strict=True):
        torch.testing.assert_close(have, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("skewed", [False, True])
@pytest.mark.parametrize(
    "workers", [GROUPED, 1, 3, MEASURED], ids=["grouped_gemm", "per_expert", "threads", "measured"]
)
def test_grouped_experts_paths_match_reference_loop(workers, skewed):
    num_tokens, top_k, num_experts, hidden, width = 24, 2, 6, 8, 4
    logits = torch.randn(num_tokens, num_experts)
    logits[:, 1] = -1e4  # expert 1 never chosen: empty
    if skewed:
        logits[:, 4] += 10.0  # expert 4 gets every token
    weights, ids = logits.softmax(-1).topk(top_k, dim=-1)
    counts = torch.bincount(ids.flatten(), minlength=num_experts)
    assert counts[1] == 0
    plan = plan_dispatch(ids, counts)
    leaves = [
        weights.detach(),
        torch.randn(num_tokens, hidden),
        torch.randn(num_experts, 2 * width, hidden) * 0.3,
        torch.randn(num_experts, hidden, width) * 0.3,
    ]
    grad = torch.randn(num_tokens, hidden)

    def run(experts):
        inputs = [leaf.clone().requires_grad_() for leaf in leaves]
        out = experts(*inputs)
        out.backward(grad)
        return [out] + [leaf.grad for leaf in inputs]

    expected = run(lambda w, x, w_in, w_out: reference_experts(x, w, ids, w_in, w_out, "swiglu"))
    adaptive.choosers.clear()
    for _ in range(2 * adaptive.FIRST_RUNS + 1):  # measured: each path FIRST_RUNS times first
        results = run(
            lambda w, x, w_in, w_out: grouped_experts(x, w, plan, w_in, w_out, "swiglu", workers)
        )
        for want, have in zip(expected, results, strict=True):
            torch.testing.assert_close(have, want, atol=1e-5, rtol=1e-5)
        assert results[3][1].abs().max() == 0  # the empty expert's gradient is exactly zero
    if workers == MEASURED:
        for chooser in adaptive.choosers.values():  # one forward site, one backward site
            assert min(chooser.runs.values()) == adaptive.FIRST_RUNS
        assert len(adaptive.choosers) == 2


def test_path_chooser_measures_both_then_runs_the_faster_and_follows_a_change():
    chooser = PathChooser()
    seconds = {GROUPED: 2.0, ALL_THREADS: 1.0}
    ran = []
    first = 2 * adaptive.FIRST_RUNS
    for _ in range(first + 4 * adaptive.EXPLORE_EVERY):
        path = chooser.next_path()
        ran.append(path)
        chooser.record(path, seconds[path])
    # each path FIRST_RUNS times, alternating (first runs not counted), then the faster, and
    # the slower one after EXPLORE_EVERY x 2 (the ratio of their times) calls
    assert ran[:first] == [GROUPED, ALL_THREADS] * adaptive.FIRST_RUNS
    checks = [i - first for i, path in enumerate(ran) if path == GROUPED and i >= first]
    assert checks == [2 * adaptive.EXPLORE_EVERY - 1, 4 * adaptive.EXPLORE_EVERY - 1]
    assert chooser.faster == ALL_THREADS
    seconds[ALL_THREADS] = 4.0  # the workers slow down (e.g. a busy neighbour)
    switched_after = None
    for call in range(10):
        path = chooser.next_path()
        chooser.record(path, seconds[path])
        if chooser.faster == GROUPED:
            switched_after = call + 1
            break
    # moving average 0.7 * 1 + 0.3 * 4 = 1.9 < 2, then 0.7 * 1.9 + 1.2 = 2.53 > 2
    assert switched_after == 2


def test_grouped_matmul_fallback_equals_per_expert_products():
    offsets = torch.tensor([3, 3, 7], dtype=torch.int32)  # expert 1 has no rows
    a, b = torch.randn(7, 5), torch.randn(3, 5, 6)
    expected = torch.cat([a[:3] @ b[0], a[3:7] @ b[2]])
    torch.testing.assert_close(grouped_matmul(a, b, offsets), expected)
    left, right = torch.randn(5, 7), torch.randn(7, 6)
    grads = grouped_matmul(left, right, offsets)
    torch.testing.assert_close(grads[0], left[:, :3] @ right[:3])
    torch.testing.assert_close(grads[1], torch.zeros(5, 6))
    torch.testing.assert_close(grads[2], left[:, 3:] @ right[3:])


def test_single_expert_equals_dense_swiglu():
    moe = MoEFeedForward(16, 12, num_experts=1, top_k=1)
    x = torch.randn(4, 16)
    gate, up = moe.gate_up_proj[0].chunk(2)
    dense = (torch.nn.functional.silu(x @ gate.T) * (x @ up.T)) @ moe.down_proj[0].T
    torch.testing.assert_close(moe(x), dense)


def test_bf16_grouped_mm_close_to_fp32_reference():
    moe = MoEFeedForward(16, 8, num_experts=4, top_k=2, init_std=0.3)
    x = torch.randn(10, 16)
    expected = moe(x)
    moe_bf16 = MoEFeedForward(16, 8, num_experts=4, top_k=2, backend="grouped_mm")
    moe_bf16.load_state_dict(moe.state_dict())
    got = moe_bf16.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=0.05, rtol=0.05)


def test_compile_fullgraph_matches_eager():
    moe = MoEFeedForward(16, 8, num_experts=4, top_k=2, backend="auto", init_std=0.3)
    x = torch.randn(2, 6, 16, requires_grad=True)
    x_compiled = x.detach().clone().requires_grad_()
    expected = moe(x)
    expected.sum().backward()
    expected_grads = [x.grad] + [p.grad.clone() for p in moe.parameters()]
    moe.zero_grad()
    compiled = torch.compile(moe, fullgraph=True, backend="aot_eager")
    out = compiled(x_compiled)
    out.sum().backward()
    torch.testing.assert_close(out, expected)
    grads = [x_compiled.grad] + [p.grad for p in moe.parameters()]
    for want, have in zip(expected_grads, grads, strict=True):
        torch.testing.assert_close(have, want)
    torch.testing.assert_close(moe.aux_loss, moe.router.aux_loss)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(backend="cuda_magic"), "backend"),
        (dict(activation="relu"), "activation"),
        (dict(top_k=9), "top_k"),
        (dict(intermediate_size=0), "intermediate_size"),
        (dict(shared_expert_gate=True), "shared_intermediate_size"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MoEFeedForward(**{"hidden_size": 8, "intermediate_size": 4, "num_experts": 4, **kwargs})


def test_wrong_input_width_raises():
    with pytest.raises(ValueError, match=r"\[\.\.\., 8\]"):
        MoEFeedForward(8, 4, num_experts=4)(torch.randn(3, 5))


@pytest.mark.parametrize("backend", ["reference", "grouped_mm", "auto"])
def test_empty_batch_gives_empty_output_and_zero_losses(backend):
    moe = MoEFeedForward(8, 4, num_experts=4, backend=backend)
    x = torch.randn(2, 0, 8, requires_grad=True)
    out = moe(x)
    (out.sum() + moe.aux_loss).backward()
    assert out.shape == (2, 0, 8) and x.grad.shape == (2, 0, 8)
    assert moe.aux_loss.item() == 0.0 and moe.tokens_per_expert.tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("workers", [1, 3])
def test_for_each_expert_covers_every_nonempty_expert_once_and_reraises(workers):
    offsets = [3, 3, 7, 12, 12]  # experts 1 and 4 have no rows
    seen = []
    for_each_expert(lambda *job: seen.append(job), offsets, workers)
    assert sorted(seen) == [(0, 0, 3), (2, 3, 7), (3, 7, 12)]

    def fail(expert, start, end):
        raise RuntimeError(f"expert {expert}")

    with pytest.raises(RuntimeError, match="expert"):
        for_each_expert(fail, offsets, workers)


def test_worker_threads_leave_the_callers_thread_settings_alone():
    """Workers run single-threaded; the caller and threads started later keep its setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for_each_expert(lambda *job: None, [1, 2], workers=4)  # first pool of 4 starts here
        seen = []
        thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert torch.get_num_threads() == 2 and seen == [2]
    finally:
        torch.set_num_threads(before)
