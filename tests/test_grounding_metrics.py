import math

import pytest
import torch
from torchvision.ops import box_iou as pairwise_iou_matrix

from mm15_components.grounding.codec import BoxCodec
from mm15_components.metrics.grounding import (
    GroundingAccuracy,
    MeanIoU,
    box_iou,
    first_boxes,
)

NAN_BOX = (math.nan,) * 4

# (prediction, ground truth, IoU worked out by hand)
IOU_TABLE = [
    ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),  # identical
    ((5, 0, 15, 10), (0, 0, 10, 10), 50 / 150),  # half overlap: 5*10 / (100 + 100 - 50)
    ((0, 0, 10, 5), (0, 0, 10, 10), 0.5),  # inside, half the area: 50 / 100, the boundary
    ((0, 0, 5, 5), (0, 0, 10, 10), 0.25),  # quarter inside: 25 / 100
    ((5, 5, 15, 15), (0, 0, 10, 10), 25 / 175),  # corner overlap: 5*5 / (100 + 100 - 25)
    ((0, 0, 10, 4.9), (0, 0, 10, 10), 0.49),  # just under the boundary: 49 / 100
    ((4, 6, 8, 12), (2, 4, 6, 10), 8 / 40),  # 2*4 / (24 + 24 - 8)
    ((10, 0, 20, 10), (0, 0, 10, 10), 0.0),  # touching edges share no area
    ((20, 20, 30, 30), (0, 0, 10, 10), 0.0),  # disjoint
    ((3, 3, 3, 3), (3, 3, 3, 3), 0.0),  # two points: zero union
    ((10, 0, 0, 10), (0, 0, 10, 10), 0.0),  # reversed prediction has no area
    (NAN_BOX, (0, 0, 10, 10), 0.0),  # a miss
]


def table_tensors(rows=IOU_TABLE):
    preds = torch.tensor([row[0] for row in rows], dtype=torch.float64)
    targets = torch.tensor([row[1] for row in rows], dtype=torch.float64)
    ious = torch.tensor([row[2] for row in rows], dtype=torch.float64)
    return preds, targets, ious


def random_boxes(count):
    corners = torch.rand(count, 2, 2) * torch.tensor([640.0, 427.0])
    return torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=1)


def test_box_iou_matches_hand_table():
    preds, targets, ious = table_tensors(IOU_TABLE[:-1])
    assert torch.allclose(box_iou(preds, targets), ious, atol=1e-12)


def test_box_iou_matches_torchvision_diagonal():
    a, b = random_boxes(500), random_boxes(500)
    b[:100] = a[:100] + torch.rand(100, 4)  # some pairs overlap heavily
    b[:100, 2:] = torch.maximum(b[:100, 2:], b[:100, :2])
    expected = pairwise_iou_matrix(a, b).diagonal()
    assert torch.allclose(box_iou(a, b), expected, atol=1e-6)
    assert box_iou(a, b).shape == (500,)


def test_box_iou_zero_area_is_zero_not_nan():
    degenerate = torch.tensor([[1.0, 1.0, 1.0, 5.0], [2.0, 2.0, 2.0, 2.0]])
    assert torch.equal(box_iou(degenerate, degenerate), torch.zeros(2))


def test_box_iou_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        box_iou(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        box_iou(torch.zeros(4), torch.zeros(4))


def test_metrics_against_hand_table():
    preds, targets, ious = table_tensors()
    accuracy, mean_iou = GroundingAccuracy(), MeanIoU()
    accuracy.update(preds, targets)
    mean_iou.update(preds, targets)
    # Hits at 0.5 by hand: the identical box and the exact-0.5 box; 0.49 is not one.
    assert accuracy.compute().item() == pytest.approx(2 / len(IOU_TABLE))
    assert mean_iou.compute().item() == pytest.approx(ious.sum().item() / len(IOU_TABLE))


@pytest.mark.parametrize(("threshold", "hits"), [(0.25, 5), (0.45, 3), (0.5, 2), (1.0, 1)])
def test_accuracy_threshold_boundaries(threshold, hits):
    # Counted by hand from the table's IoUs 1, 1/3, 0.5, 0.25, 1/7, 0.49, 0.2, 0, ...:
    # >= 0.25: 1, 1/3, 0.5, 0.25, 0.49; >= 0.45: 1, 0.5, 0.49; >= 0.5: 1, 0.5; >= 1: 1.
    preds, targets, _ = table_tensors()
    metric = GroundingAccuracy(iou_threshold=threshold)
    metric.update(preds, targets)
    assert metric.compute().item() == pytest.approx(hits / len(IOU_TABLE))


def test_any_non_finite_value_is_a_miss():
    target = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)
    preds = target.clone()
    preds[0, 2] = math.nan
    preds[1, 0] = -math.inf
    metric = GroundingAccuracy()
    metric.update(preds, target)
    assert metric.compute().item() == pytest.approx(1 / 3)


def test_batches_accumulate_and_states_merge_like_one_pass():
    # Random IoUs: one pass over everything equals two batches, and equals two metrics
    # (as on two ranks) merged through their reduction functions.
    preds, targets = random_boxes(64), random_boxes(64)
    preds[::5] = math.nan
    preds[1::7] = targets[1::7] + 3 * torch.rand(len(targets[1::7]), 4)
    for metric_class in (GroundingAccuracy, MeanIoU):
        whole = metric_class()
        whole.update(preds, targets)
        batched = metric_class()
        batched.update(preds[:20], targets[:20])
        batched.update(preds[20:], targets[20:])
        rank0, rank1 = metric_class(), metric_class()
        rank0.update(preds[:37], targets[:37])
        rank1.update(preds[37:], targets[37:])
        rank0.merge_state(rank1)
        assert torch.allclose(batched.compute(), whole.compute())
        assert torch.allclose(rank0.compute(), whole.compute())
        assert whole.compute().ndim == 0


def test_first_boxes():
    answers = [[(1, 2, 3, 4), (5, 6, 7, 8)], [], [(0.5, 0, 1, 1)]]
    boxes = first_boxes(answers)
    assert boxes.shape == (3, 4)
    assert boxes[0].tolist() == [1, 2, 3, 4]
    assert boxes[1].isnan().all()
    assert boxes[2].tolist() == [0.5, 0, 1, 1]
    assert first_boxes([]).shape == (0, 4)
    with pytest.raises(ValueError, match="answer 1"):
        first_boxes([[(1, 2, 3, 4)], [(1, 2)]])


def test_decoded_answers_end_to_end():
    # (height, width) = (2000, 1000): value v is x = v + 0.5 and y = 2v + 1 after decoding.
    codec = BoxCodec()
    image_size = (2000, 1000)
    answers = [
        "It is at [0, 0, 99, 49] or maybe [500, 500, 999, 999].",  # first box is the answer
        "I cannot find it.",  # unparseable: a miss
        "[0, 0, 99]",  # partial: a miss
        "[200, 100, 299, 149]",  # same size as the target, shifted off it
    ]
    targets = torch.tensor([[0.0, 0.0, 100.0, 100.0]] * 4)
    preds = first_boxes([codec.decode(answer, image_size) for answer in answers])
    # First answer decodes to (0.5, 1, 99.5, 99): 99 * 98 / 10000 = 0.9702; the last to
    # (200.5, 201, 299.5, 299), disjoint from the target.
    metric, mean_iou = GroundingAccuracy(), MeanIoU()
    metric.update(preds, targets)
    mean_iou.update(preds, targets)
    assert metric.compute().item() == pytest.approx(1 / 4)
    assert mean_iou.compute().item() == pytest.approx(0.9702 / 4)


def test_update_rejects_bad_inputs():
    metric = GroundingAccuracy()
    boxes = torch.rand(2, 4)
    with pytest.raises(TypeError, match="preds"):
        metric.update([[(1, 2, 3, 4)], []], boxes)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        metric.update(torch.rand(3, 4), boxes)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        metric.update(torch.rand(2, 2), torch.rand(2, 2))
    with pytest.raises(ValueError, match="targets"):
        metric.update(boxes, torch.full((2, 4), math.nan))


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_threshold_must_be_in_unit_interval(threshold):
    with pytest.raises(ValueError, match="iou_threshold"):
        GroundingAccuracy(iou_threshold=threshold)
