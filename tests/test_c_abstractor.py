import math

import pytest
import torch
from timm.layers import resample_abs_pos_embed

from mm15_components.connectors.c_abstractor import CAbstractor
from mm15_components.connectors.pooling import AvgPoolProjector

IN_DIM, HIDDEN, OUT_DIM = 12, 16, 10


def tiny_abstractor(**overrides: object) -> CAbstractor:
    options = dict(num_queries=16, depth=2, hidden_dim=HIDDEN, mlp_depth=2, pos_grid=9)
    return CAbstractor(IN_DIM, OUT_DIM, **(options | overrides))


def brute_adaptive_pool(grid: torch.Tensor, side: int) -> torch.Tensor:
    """Adaptive average pooling by its definition: bin i spans [floor(i*n/s), ceil((i+1)*n/s))."""
    rows, cols = grid.shape[-2:]
    out = torch.empty(*grid.shape[:-2], side, side, dtype=torch.float64)
    for i in range(side):
        r0, r1 = (i * rows) // side, math.ceil((i + 1) * rows / side)
        for j in range(side):
            c0, c1 = (j * cols) // side, math.ceil((j + 1) * cols / side)
            out[..., i, j] = grid[..., r0:r1, c0:c1].double().mean(dim=(-2, -1))
    return out


def as_grid(tokens: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    return tokens.reshape(tokens.shape[0], rows, cols, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("num_queries", [64, 144, 256])
@pytest.mark.parametrize("grid_size", [None, (27, 27), (18, 40)])
@pytest.mark.parametrize("connector", [CAbstractor, AvgPoolProjector])
def test_output_shape_is_num_queries_for_any_grid(connector, num_queries, grid_size):
    module = connector(IN_DIM, OUT_DIM, num_queries=num_queries, hidden_dim=HIDDEN)
    patches = 27 * 27 if grid_size is None else grid_size[0] * grid_size[1]
    out = module(torch.randn(3, patches, IN_DIM), grid_size)
    assert out.shape == (3, num_queries, OUT_DIM)
    assert module.num_tokens(grid_size or (27, 27)) == num_queries


@pytest.mark.parametrize("grid_size", [(9, 9), (7, 13)])
def test_gradients_reach_every_parameter(grid_size):
    abstractor = tiny_abstractor(depth=3, mlp_depth=3)
    pooler = AvgPoolProjector(IN_DIM, OUT_DIM, num_queries=16)
    for module in (abstractor, pooler):
        features = torch.randn(2, grid_size[0] * grid_size[1], IN_DIM)
        (module(features, grid_size) * torch.randn(2, 16, OUT_DIM)).sum().backward()
        for name, param in module.named_parameters():
            assert param.grad is not None, name
            assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("grid_size", [(9, 9), (11, 17), (20, 6)])
def test_pooling_step_matches_adaptive_pool_definition(grid_size):
    abstractor = tiny_abstractor()
    seen = {}
    abstractor.net[1].register_forward_hook(lambda _m, args, out: seen.update(x=args[0], y=out))
    features = torch.randn(2, grid_size[0] * grid_size[1], IN_DIM)
    abstractor(features, grid_size)
    assert seen["x"].shape == (2, HIDDEN, *grid_size)
    torch.testing.assert_close(seen["y"], brute_adaptive_pool(seen["x"], 4).float())

    pooler = AvgPoolProjector(IN_DIM, OUT_DIM, num_queries=9)
    pooled = brute_adaptive_pool(as_grid(features, *grid_size), 3).float()
    expected = pooler.mlp(pooled.flatten(2).transpose(1, 2))
    torch.testing.assert_close(pooler(features, grid_size), expected)


def test_hand_pooling_case_of_avg_pool_projector():
    # 4x6 patches -> 2x2 queries: each token is the mean of one 2x3 block of patches.
    pooler = AvgPoolProjector(IN_DIM, OUT_DIM, num_queries=4)
    features = torch.randn(1, 24, IN_DIM)
    grid = features.reshape(4, 6, IN_DIM)
    blocks = [grid[r : r + 2, c : c + 3].reshape(6, IN_DIM).mean(0) for r in (0, 2) for c in (0, 3)]
    expected = pooler.mlp(torch.stack(blocks)[None])
    torch.testing.assert_close(pooler(features, (4, 6)), expected)


def test_positional_embedding_is_identity_on_native_grid_and_bicubic_elsewhere():
    abstractor = tiny_abstractor(pos_grid=(9, 7))
    native = abstractor.positional_embedding((9, 7))
    assert torch.equal(native, abstractor.pos_emb.detach())
    for size in [(9, 7), (16, 16), (5, 12)]:
        expected = resample_abs_pos_embed(
            abstractor.pos_emb.detach(),
            list(size),
            [9, 7],
            num_prefix_tokens=0,
            antialias=False,
        )
        torch.testing.assert_close(abstractor.positional_embedding(size), expected)


@pytest.mark.parametrize("grid_size", [(9, 9), (12, 15)])
def test_positional_embedding_is_added_to_the_patch_tokens(grid_size):
    with_pos = tiny_abstractor().eval()
    without_pos = tiny_abstractor(pos_embed=False).eval()
    missing, unexpected = without_pos.load_state_dict(with_pos.state_dict(), strict=False)
    assert missing == [] and unexpected == ["pos_emb"]
    features = torch.randn(3, grid_size[0] * grid_size[1], IN_DIM)
    shifted = features + with_pos.positional_embedding(grid_size)
    torch.testing.assert_close(with_pos(features, grid_size), without_pos(shifted, grid_size))


@pytest.mark.parametrize("num_queries", [0, -4, 2, 150])
@pytest.mark.parametrize("connector", [CAbstractor, AvgPoolProjector])
def test_non_square_query_counts_are_rejected(connector, num_queries):
    with pytest.raises(ValueError, match="num_queries must be a positive perfect square"):
        connector(IN_DIM, OUT_DIM, num_queries=num_queries)


def test_bad_inputs_raise_clear_errors():
    abstractor = tiny_abstractor()
    with pytest.raises(ValueError, match="depth"):
        tiny_abstractor(depth=0)
    with pytest.raises(ValueError, match="mlp_depth"):
        tiny_abstractor(mlp_depth=0)
    with pytest.raises(ValueError, match="pos_grid"):
        tiny_abstractor(pos_grid=(0, 9))
    with pytest.raises(ValueError, match=rf"\[batch, patches, {IN_DIM}\]"):
        abstractor(torch.randn(2, 81, IN_DIM + 1))
    with pytest.raises(ValueError, match="square grid"):
        abstractor(torch.randn(2, 80, IN_DIM))
    with pytest.raises(ValueError, match="does not hold"):
        abstractor(torch.randn(2, 80, IN_DIM), (9, 9))
    with pytest.raises(ValueError, match="pos_embed=False"):
        tiny_abstractor(pos_embed=False).positional_embedding((9, 9))


@pytest.mark.parametrize("grid_size", [(9, 9), (10, 14)])
def test_all_tiles_in_one_call_equal_per_image_calls(grid_size):
    abstractor = tiny_abstractor(depth=3).eval()
    tiles = torch.randn(7, grid_size[0] * grid_size[1], IN_DIM)
    with torch.no_grad():
        batched = abstractor(tiles, grid_size)
        looped = torch.cat([abstractor(tile[None], grid_size) for tile in tiles])
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-5)
