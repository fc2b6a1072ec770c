"""FSDP2 (fully_shard) on 2 CPU ranks with gloo: the MoE layer's gradients equal one process's.

Each rank routes its own tokens (so the ranks' expert loads differ); FSDP averages the
gradients over ranks, which one process reproduces by averaging the two per-shard losses.
"""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.fsdp import fully_shard

from mm15_components.moe.layer import MoEFeedForward

WORLD_SIZE = 2


def _build(seed: int) -> tuple[MoEFeedForward, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    moe = MoEFeedForward(16, 8, num_experts=6, top_k=2, init_std=0.3)
    return moe, torch.randn(WORLD_SIZE, 10, 16), torch.randn(WORLD_SIZE, 10, 16)


def _loss(moe: MoEFeedForward, x: torch.Tensor, grad_weights: torch.Tensor) -> torch.Tensor:
    return (moe(x) * grad_weights).sum() + moe.aux_loss


def _worker(rank: int, port: int, seed: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        reference, x, grad_weights = _build(seed)
        losses, loads = [], []
        for shard in range(WORLD_SIZE):
            losses.append(_loss(reference, x[shard], grad_weights[shard]))
            loads.append(reference.tokens_per_expert)
        assert not torch.equal(*loads), "the two ranks should route differently"
        (sum(losses) / WORLD_SIZE).backward()

        sharded, _, _ = _build(seed)
        fully_shard(sharded)
        _loss(sharded, x[rank], grad_weights[rank]).backward()
        for (name, parameter), expected in zip(
            sharded.named_parameters(), reference.parameters(), strict=True
        ):
            torch.testing.assert_close(
                parameter.grad.full_tensor(), expected.grad, atol=1e-5, rtol=1e-5, msg=name
            )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_fsdp2_gradients_match_single_process():
    seed = int(torch.randint(0, 2**31, ()))
    mp.spawn(_worker, args=(_free_port(), seed), nprocs=WORLD_SIZE, join=True)
