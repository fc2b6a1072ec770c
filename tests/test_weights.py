"""Stage handoff: weights only, from a Lightning checkpoint or an exported directory (the
distributed layout is read in test_fsdp.py); adapted or refused, never silently re-initialised."""

import csv
from pathlib import Path

import pytest
import torch
from helpers import TINY_LLAMA
from safetensors.torch import load_file

from mm15_components import MM15Model
from mm15_components.cli import main
from mm15_components.connectors import MLPProjector
from mm15_components.language import CausalLM
from mm15_components.vision import OpenCLIPVisionEncoder
from mm15_components.vision.encoder import interpolate_position_embedding
from mm15_components.weights import (
    EXPORT_WEIGHTS,
    load_weights,
    load_weights_from,
    read_weights,
    save_weights,
)

QUICKSTART = Path(__file__).parents[1] / "recipes" / "quickstart.yaml"
SMALL = [
    "--data.init_args.loader.batch_size=4",
    "--data.init_args.val_samples=4",
    "--data.init_args.loader.num_workers=0",
    "--trainer.enable_progress_bar=false",
]


def model(image_size: int | None = None, moe: dict | None = None, **llama) -> MM15Model:
    return MM15Model(
        OpenCLIPVisionEncoder("mm15-tiny-vit", image_size=image_size),
        CausalLM(config=dict(TINY_LLAMA, **llama), moe=moe),
        lambda i, o: MLPProjector(i, o, pool=2),
    )


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    expected, actual = a.state_dict(), b.state_dict()
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)


def val_loss(root: Path, *args: str) -> float:
    main(["validate", "--config", str(QUICKSTART), *SMALL, *args,
          "--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={root}"])  # fmt: skip
    (metrics,) = root.rglob("metrics.csv")
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("val/loss")]
    return float(rows[-1]["val/loss"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """last.ckpt of 3 quickstart steps (no validation)."""
    root = tmp_path_factory.mktemp("trained")
    main(["fit", "--config", str(QUICKSTART), *SMALL, "--trainer.max_steps=3",
          "--trainer.limit_val_batches=0", "--trainer.logger=false",
          f"--trainer.default_root_dir={root}"])  # fmt: skip
    (last,) = root.rglob("last.ckpt")
    return last


def test_validate_from_init_from_equals_ckpt_path(trained, tmp_path):
    """Weights only through ``init_from`` score exactly as Lightning's own resume does."""
    via_ckpt = val_loss(tmp_path / "a", f"--ckpt_path={trained}")
    via_init = val_loss(tmp_path / "b", f"--model.init_args.init_from={trained}")
    untrained = val_loss(tmp_path / "c")
    assert via_init == via_ckpt != untrained


def test_init_from_starts_a_fresh_run(trained, tmp_path):
    """Step 0 and a new optimizer (AdamW's step count restarts), from the trained weights."""
    main(["fit", "--config", str(QUICKSTART), *SMALL, "--trainer.max_steps=1",
          "--trainer.limit_val_batches=0", "--trainer.logger=false",
          f"--trainer.default_root_dir={tmp_path}",
          f"--model.init_args.init_from={trained}"])  # fmt: skip
    (last,) = tmp_path.rglob("last.ckpt")
    before = torch.load(trained, weights_only=True)
    after = torch.load(last, weights_only=True)
    assert before["global_step"] == 3 and after["global_step"] == 1
    steps = {float(s["step"]) for s in after["optimizer_states"][0]["state"].values()}
    assert steps == {1.0}
    key = "model.connector.mlp.0.weight"
    moved = (after["state_dict"][key] - before["state_dict"][key]).abs().max()
    assert 0 < moved < 0.01  # one small step away from the trained weights, not from scratch


def test_exported_directory_round_trip(tmp_path):
    torch.manual_seed(1)
    source = model()
    file = save_weights(source, tmp_path)
    assert file == tmp_path / EXPORT_WEIGHTS
    stored = load_file(file)
    head, embeddings = "language.model.lm_head.weight", "language.model.model.embed_tokens.weight"
    assert (head in stored) != (embeddings in stored)  # tied: one copy on disk
    assert read_weights(tmp_path).keys() == stored.keys()
    torch.manual_seed(2)
    target = model()
    report = load_weights_from(target, tmp_path)
    assert report.fits and report.loaded == len(stored)
    assert_same_weights(source, target)
    language = target.language.model
    assert language.lm_head.weight is language.model.embed_tokens.weight  # still tied


def test_another_architecture_is_refused_with_a_report(tmp_path):
    save_weights(model(), tmp_path)
    wider = model(hidden_size=96, num_attention_heads=4)
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(ValueError, match="does not fit this model") as error:
        load_weights_from(wider, tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message
    assert "24 of another shape" in message
    assert "language.model.model.embed_tokens.weight: [32000, 64] vs [32000, 96]" in message
    assert_same_weights_dict(before, wider.state_dict())  # nothing loaded

    deeper = model(num_hidden_layers=3)
    report = load_weights_from(deeper, tmp_path, strict=False)
    assert not report.fits and report.unexpected == []
    assert report.missing and all(".layers.2." in key for key in report.missing)
    assert "missing" in str(report)


def assert_same_weights_dict(expected: dict, actual: dict) -> None:
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=key)


def test_position_embedding_follows_the_encoder_grid(tmp_path):
    """A 64 px stage's weights into a 128 px model: the position embedding is resampled."""
    torch.manual_seed(3)
    low = model()
    save_weights(low, tmp_path)
    high = model(image_size=128)
    report = load_weights_from(high, tmp_path)
    assert report.fits and report.resized == [
        "vision.visual.positional_embedding: 8x8 -> 16x16 patches"
    ]
    expected = interpolate_position_embedding(low.vision.visual.positional_embedding, 16)
    torch.testing.assert_close(high.vision.visual.positional_embedding, expected)
    torch.testing.assert_close(high.vision.visual.conv1.weight, low.vision.visual.conv1.weight)


def test_dense_checkpoint_upcycles_into_moe_experts(tmp_path):
    """Every expert starts as the dense FFN, so with renormalised top-2 routing the MoE model
    computes exactly the dense one; the router is reported as freshly initialised."""
    torch.manual_seed(4)
    dense = model()
    save_weights(dense, tmp_path)
    moe_args = dict(every=2, num_experts=4, top_k=2, init="random", backend="reference")
    sparse = model(moe=moe_args)
    report = load_weights_from(sparse, tmp_path)
    layer = "language.model.model.layers.1.mlp"
    assert report.fits and report.upcycled == [layer]
    assert report.fresh == [f"{layer}.router.weight"]
    mlp = dense.language.model.model.layers[1].mlp
    experts = sparse.get_submodule(layer)
    for e in range(4):
        torch.testing.assert_close(
            experts.gate_up_proj[e], torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
        )
        torch.testing.assert_close(experts.down_proj[e], mlp.down_proj.weight)
    embeds = torch.randn(2, 5, TINY_LLAMA["hidden_size"])
    torch.testing.assert_close(sparse.language(embeds), dense.language(embeds))


def test_unreadable_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        read_weights(tmp_path / "missing.ckpt")
    with pytest.raises(FileNotFoundError, match=r"model.safetensors missing\) nor a distributed"):
        read_weights(tmp_path)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        read_weights(tmp_path / "other.ckpt")
    assert load_weights(model(), {}, strict=False).missing  # nothing to load: all reported
