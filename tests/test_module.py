import lightning as L
import pytest
import torch
from helpers import tiny_model

from mm15_components import MM15Module
from mm15_components.data import SyntheticDataModule


def test_validation_scores_decoded_answers_against_target_boxes():
    """With every answer fixed to (nearly) the whole image, Acc@0.5 and mean IoU must equal
    what the target boxes alone give, computed here by hand."""
    data = SyntheticDataModule(val_samples=48, batch_size=16, image_size=64)
    module = MM15Module(tiny_model(), data.tokenizer)
    seen_images = []

    def whole_image_answers(prompt_ids, prompt_mask, pixel_values):
        assert len(pixel_values) == len(prompt_ids)  # one image per grounding prompt
        seen_images.append(len(pixel_values))
        return ["[0, 0, 999, 999]"] * len(prompt_ids)

    module.generate = whole_image_answers
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    metrics = trainer.validate(module, data, verbose=False)[0]
    targets = torch.tensor([s.target_box for s in data.val_samples if s.target_box is not None])
    lo, hi = 0.5 * 64 / 1000, 999.5 * 64 / 1000  # bin centres of 0 and 999
    inside = targets.clamp(lo, hi)  # every target overlaps the answer box entirely but a rim
    inter = (inside[:, 2] - inside[:, 0]) * (inside[:, 3] - inside[:, 1])
    area = (targets[:, 2] - targets[:, 0]) * (targets[:, 3] - targets[:, 1])
    ious = inter / ((hi - lo) ** 2 + area - inter)
    assert sum(seen_images) == len(targets) > 0
    assert metrics["val/mean_iou"] == pytest.approx(float(ious.mean()), abs=1e-5)
    assert metrics["val/grounding_acc"] == pytest.approx(float((ious >= 0.5).float().mean()))
    assert 0 <= metrics["val/grounding_acc_const"] <= 0.15
    assert metrics["val/loss"] > 0


def test_unknown_component_names_are_rejected():
    data = SyntheticDataModule(val_samples=8)
    with pytest.raises(ValueError, match="unknown component 'vison'"):
        MM15Module(tiny_model(), data.tokenizer, freeze=["vison"])


def test_freezing_and_learning_rate_groups():
    data = SyntheticDataModule(val_samples=8)
    module = MM15Module(
        tiny_model(),
        data.tokenizer,
        freeze=["vision"],
        lr_multipliers={"connector": 10.0},
        optimizer=lambda groups: torch.optim.AdamW(groups, lr=1e-3),
        weight_decay=0.1,
    )
    optimizer = module.configure_optimizers()
    assert not any(p.requires_grad for p in module.model.vision.parameters())
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in module.model.vision.parameters()}
    connector = {id(p) for p in module.model.connector.parameters()}
    for group in optimizer.param_groups:
        on_connector = {id(p) for p in group["params"]} <= connector
        assert group["lr"] == pytest.approx(1e-2 if on_connector else 1e-3)
        assert group["weight_decay"] == (0.1 if group["params"][0].ndim >= 2 else 0.0)
