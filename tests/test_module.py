import json
from functools import partial

import lightning as L
import pytest
import torch
from helpers import tiny_model, tiny_module
from lightning.pytorch.loggers import CSVLogger
from PIL import Image
from torch.utils.data import DataLoader

from mm15_components import MM15Module
from mm15_components.data import Encoding, Loader, SyntheticDataModule, VideoDataModule
from mm15_components.data.collate import SampleEncoder, collate
from mm15_components.data.prompt import question_turn
from mm15_components.data.schema import Sample, Turn
from mm15_components.language import build_word_tokenizer
from mm15_components.vision.encoder import CLIP_MEAN, CLIP_STD


def test_validation_scores_decoded_answers_against_target_boxes():
    """With every answer fixed to (nearly) the whole image, Acc@0.5 and mean IoU must equal
    what the target boxes alone give, computed here by hand."""
    data = SyntheticDataModule(
        val_samples=48, encoding=Encoding(image_size=64), loader=Loader(batch_size=16)
    )
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


class SampleList(L.LightningDataModule):
    """Validation batches of two made from hand-written samples."""

    def __init__(self, samples, tokenizer, box=None) -> None:
        super().__init__()
        self.samples = samples
        self.encoder = SampleEncoder(tokenizer, 64, 16, CLIP_MEAN, CLIP_STD, baseline_box=box)
        self.pad = tokenizer.pad_token_id

    def val_dataloader(self) -> DataLoader:
        items = [self.encoder(sample) for sample in self.samples]
        return DataLoader(items, batch_size=2, collate_fn=partial(collate, pad_token_id=self.pad))


def ask(question: str, answer: str, **fields) -> Sample:
    image = Image.new("RGB", (80, 60), (20, 90, 200))
    turns = [question_turn(question), Turn("assistant", answer)]
    return Sample(turns=turns, images=[image], id=question, **fields)


def test_each_sample_is_scored_by_its_metric_beside_its_baseline(tmp_path):
    words = ("Button", "Text", "Icon", "What", "is", "it", "Where")
    module = tiny_module(words)
    widget = {"metric": "widget_acc", "baseline_answer": "Button"}
    box = {"target_box": (0.0, 0.0, 40.0, 30.0)}  # the top-left quarter
    samples = [
        ask("What is it", "Button", answers=["Button"], **widget),
        ask("What is it", "Text", answers=["Text"], **widget),
        ask("Where is it", "[0, 0, 500, 500]", **box),
        ask("Where is it", "[0, 0, 500, 500]", metric="ui_grounding_acc", **box),
        ask("What is it", "Icon"),  # nothing to score
    ]
    answers = iter(["button", "Icon", "[0, 0, 499, 499]", "no box"])
    module.generate = lambda ids, mask, pixels: [next(answers) for _ in range(len(ids))]
    data = SampleList(samples, module.tokenizer, box=(0.0, 0.0, 1.0, 1.0))  # the whole image
    trainer = L.Trainer(
        accelerator="cpu",
        logger=CSVLogger(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    metrics = trainer.validate(module, data, verbose=False)[0]
    assert next(answers, None) is None  # the unscored sample was not asked
    assert metrics == pytest.approx(
        {
            "val/loss": metrics["val/loss"],
            "val/widget_acc": 0.5,  # "button" matches Button (case-insensitive), Icon not Text
            "val/widget_acc_majority": 0.5,  # always "Button": right once
            "val/grounding_acc": 1.0,
            "val/mean_iou": pytest.approx(1.0, abs=0.02),  # bin centres: nearly exact
            "val/grounding_acc_const": 0.0,  # the whole image: IoU 0.25 with the quarter
            "val/ui_grounding_acc": 0.0,  # no box in the answer: a miss
            "val/ui_grounding_acc_const": 0.0,
        }
    )
    (path,) = tmp_path.rglob("predictions/val_epoch0_step0_rank0.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["metric"], r["answer"], r["score"]) for r in records] == [
        ("widget_acc", "button", 1.0),
        ("widget_acc", "Icon", 0.0),
        ("grounding_acc", "[0, 0, 499, 499]", 1.0),
        ("ui_grounding_acc", "no box", 0.0),
    ]
    assert records[0]["question"] == "What is it" and records[0]["references"] == ["Button"]
    assert records[3]["box"] is None and records[3]["references"] == [[0.0, 0.0, 40.0, 30.0]]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"answers": ["x"]}, "has answers but no metric"),
        ({"answers": ["x"], "metric": "bleu"}, "unknown metric 'bleu'"),
        ({"metric": "anls"}, "metric 'anls' scores answers, but it has none"),
        (
            {"answers": ["x"], "metric": "ui_grounding_acc"},
            "scores a box, but it has no target_box",
        ),
    ],
)
def test_a_sample_that_cannot_be_scored_is_named(fields, message):
    tokenizer = build_word_tokenizer(["What"])
    encoder = SampleEncoder(tokenizer, 64, 16, CLIP_MEAN, CLIP_STD)
    with pytest.raises(ValueError, match=f"sample 'What'.* {message}"):
        encoder(ask("What", "x", **fields))


def test_video_validation_reports_answer_accuracy():
    data = VideoDataModule(
        num_frames=4, val_samples=6, encoding=Encoding(image_tokens=16), loader=Loader(batch_size=3)
    )
    module = MM15Module(tiny_model(), data.tokenizer)
    truth = [data.val_samples[i].answers[0] for i in range(6)]
    answers = iter(truth[:4] + ["sideways", "none"])
    module.generate = lambda ids, mask, pixels: [next(answers) for _ in range(len(ids))]
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    metrics = trainer.validate(module, data, verbose=False)[0]
    assert metrics["val/video_acc"] == pytest.approx(4 / 6)
    assert data.val_samples[0].metric == "video_acc"
