"""Bytes that backward keeps, per tile and per token, for MM1.5-1B's parts, on CPU.

Runs each part forward under bf16 autocast with a saved-tensor hook that sums the bytes of
every distinct tensor autograd keeps: the C-Abstractor per 672 px tile (48x48 patches), one
ViT-H/14 block per tile and one Qwen2.5-1.5B decoder layer per token (attention through
``eager``-free SDPA math on CPU keeps a [heads, T, T] matrix that GPU flash attention does
not; it is reported apart and left out of the per-token figure). Real widths, random weights,
no download. docs/training.md turns these into memory per GPU.

    python benchmarks/activation_memory.py [--grid 48 --tokens 256]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from mm15_components.connectors import CAbstractor
from mm15_components.language import CausalLM
from mm15_components.vision import OpenCLIPVisionEncoder

QWEN25_1B5 = dict(
    model_type="qwen2",
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=1,
    num_attention_heads=12,
    num_key_value_heads=2,
    vocab_size=1024,
    tie_word_embeddings=True,
)


def saved_bytes(run: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct tensors autograd saves for backward while ``run`` runs."""
    seen: dict[tuple, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16), sdpa_kernel([SDPBackend.MATH]):
            run()
    return sum(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=48, help="patches per side of a tile")
    parser.add_argument("--tokens", type=int, default=256, help="LLM tokens to measure on")
    args = parser.parse_args()
    torch.manual_seed(0)
    mib = 2**20

    vision = OpenCLIPVisionEncoder("ViT-H-14-378-quickgelu", feature_layer=0)
    patches = args.grid * args.grid + 1
    x = torch.randn(1, patches, vision.width, requires_grad=True)
    block = vision.blocks[0]
    with_attention = saved_bytes(lambda: block(x))
    attention_matrix = 16 * patches * patches * 4  # math SDPA's fp32 [heads, T, T] weights
    print(f"ViT-H/14 block, one tile of {patches} tokens: {with_attention / mib:.0f} MiB saved, "
          f"of which the [heads, T, T] attention weights (not kept by flash attention) "
          f"{attention_matrix / mib:.0f} MiB")  # fmt: skip

    connector = CAbstractor(vision.width, 1536, num_queries=144, pos_grid=27)
    features = torch.randn(1, args.grid * args.grid, vision.width, requires_grad=True)
    grid = (args.grid, args.grid)
    print(f"C-Abstractor, one tile of {args.grid}x{args.grid} patches: "
          f"{saved_bytes(lambda: connector(features, grid)) / mib:.0f} MiB saved")  # fmt: skip

    llm = CausalLM(config=QWEN25_1B5)
    layer = llm.layers[0]
    embeds = torch.randn(1, args.tokens, 1536, requires_grad=True)
    saved = saved_bytes(lambda: llm(embeds))
    logits = args.tokens * 1024 * (2 + 4 + 4)  # bf16 logits, fp32 copy, fp32 log-softmax
    weights = 12 * args.tokens * args.tokens * 4
    per_token = (saved - logits - weights) / args.tokens
    print(f"Qwen2.5-1.5B decoder layer ({type(layer).__name__}): {per_token / 1024:.1f} KiB "
          f"saved per token, without the [heads, T, T] attention weights")  # fmt: skip


if __name__ == "__main__":
    main()
