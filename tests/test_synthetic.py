import numpy as np
import torch

from mm15_components.data.synthetic.dataset import SyntheticDataset
from mm15_components.data.synthetic.shapes import COLOURS, draw_shapes, sample_shapes
from mm15_components.grounding.codec import BoxCodec
from mm15_components.metrics.grounding import GroundingAccuracy


def make(split="val", n=400, tasks=None):
    codec = BoxCodec()
    return SyntheticDataset(
        n, 64, tasks or {"grounding": 1.0}, lambda b, s: codec.encode(b, image_size=s), split=split
    )


def test_samples_are_deterministic_per_split_and_index():
    a, b, other = make(), make(), make("train")
    for i in (0, 7, 123):
        assert np.array_equal(np.asarray(a[i].images[0]), np.asarray(b[i].images[0]))
        assert a[i].turns == b[i].turns
    assert not np.array_equal(np.asarray(a[0].images[0]), np.asarray(other[0].images[0]))


def test_target_box_is_the_tight_box_of_the_drawn_shape():
    """The box in the answer is recovered from the pixels alone: the bounding box of the
    pixels of the shape's colour (shapes never overlap and colours are far apart)."""
    rng = np.random.default_rng()
    for _ in range(50):
        shapes = sample_shapes(rng, 64)
        pixels = np.asarray(draw_shapes(rng, shapes, 64)).astype(int)
        for shape in shapes:
            same = np.abs(pixels - COLOURS[shape.colour]).sum(-1) == 0
            others = [s for s in shapes if s.colour == shape.colour and s is not shape]
            if others:
                continue
            ys, xs = np.nonzero(same)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == shape.box


def test_constant_answer_baseline_is_weak():
    """The best constant box (mean of training boxes) scores <= 0.15 Acc@0.5 on validation."""
    mean = torch.tensor(make("train", 2000).mean_target_box()) * 64
    val = make("val", 400)
    targets = torch.tensor([val[i].target_box for i in range(len(val))])
    metric = GroundingAccuracy(0.5)
    metric.update(mean.expand_as(targets), targets)
    assert float(metric.compute()) <= 0.15


def test_task_mixture_follows_weights():
    data = make("train", 2000, {"grounding": 3.0, "text": 1.0})
    share = sum(data[i].target_box is not None for i in range(len(data))) / len(data)
    assert abs(share - 0.75) < 0.04  # 4 sigma at n=2000
