import numpy as np
import torch

from mm15_components.data.synthetic.dataset import SyntheticDataset
from mm15_components.data.synthetic.shapes import COLOURS, draw_shapes, sample_shapes
from mm15_components.grounding.codec import BoxCodec
from mm15_components.metrics.grounding import GroundingAccuracy


def make(split="val", n=400, tasks=None, questions=1):
    codec = BoxCodec()
    return SyntheticDataset(
        n,
        64,
        tasks or {"grounding": 1.0},
        lambda b, s: codec.encode(b, image_size=s),
        split=split,
        questions=questions,
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
        assert len({s.colour for s in shapes}) == len(shapes)  # the colour names the shape
        pixels = np.asarray(draw_shapes(rng, shapes, 64)).astype(int)
        for shape in shapes:
            same = np.abs(pixels - COLOURS[shape.colour]).sum(-1) == 0
            others = [s for s in shapes if s.colour == shape.colour and s is not shape]
            if others:
                continue
            ys, xs = np.nonzero(same)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == shape.box


def test_drawn_shapes_are_the_shapes_in_the_sample_image():
    """Each drawn shape is the tight box of the pixels of its colour in the rendered image,
    and no other shape colour appears there."""
    data = make(n=40, tasks={"grounding": 1.0, "referring": 1.0, "find_all": 1.0, "text": 1.0})
    drawn = [data.drawn_shapes(i) for i in range(len(data))]
    assert any(drawn) and not all(drawn)  # shape tasks and the text task both drawn
    for index, shapes in enumerate(drawn):
        if not shapes:
            continue
        pixels = np.asarray(data[index].images[0]).astype(int)
        for colour, value in COLOURS.items():
            ys, xs = np.nonzero(np.abs(pixels - value).sum(-1) == 0)
            boxes = [s.box for s in shapes if s.colour == colour]
            assert boxes == ([(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)] if len(xs) else [])


def test_more_questions_ask_about_each_shape_once_and_keep_the_first_turn():
    """Each extra turn asks about another shape of the same image; the answers are the boxes
    of the shapes named (found by colour in the pixels); the first turn is the one-question
    sample's, so ``questions`` only adds turns."""
    codec = BoxCodec()
    one, three = make("train", 40), make("train", 40, questions=3)
    for i in range(len(three)):
        sample = three[i]
        assert sample.turns[:2] == one[i].turns
        pixels = np.asarray(sample.images[0]).astype(int)
        questions, answers = sample.turns[0::2], sample.turns[1::2]
        colours = [q.content.split()[3] for q in questions]
        assert len(set(colours)) == len(colours) and 1 <= len(colours) <= 3
        assert "<image>" not in "".join(q.content for q in questions[1:])
        for colour, answer in zip(colours, answers, strict=True):
            ys, xs = np.nonzero(np.abs(pixels - COLOURS[colour]).sum(-1) == 0)
            drawn = codec.encode((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), (64, 64))
            assert answer.content == drawn
        assert codec.encode(sample.target_box, (64, 64)) == answers[-1].content
    assert np.mean([len(three[i].turns) // 2 for i in range(len(three))]) > 1.5  # most have 2+


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


def test_referring_question_box_points_at_a_shape_of_the_answered_colour():
    """The box written in the question is read back with the codec; the pixels inside it are
    mostly the colour the answer names."""
    codec = BoxCodec()
    data = make(tasks={"referring": 1.0}, n=60)
    for sample in data:
        question, answer = sample.turns[0].content, sample.turns[1].content
        (box,) = codec.decode(question, image_size=(64, 64))
        x1, y1, x2, y2 = (round(v) for v in box)
        crop = np.asarray(sample.images[0]).astype(int)[y1:y2, x1:x2]
        share = (np.abs(crop - COLOURS[answer]).sum(-1) == 0).mean()
        assert share > 0.4, (question, answer, share)


def test_find_all_answers_every_shape_of_the_kind_left_to_right():
    """Each answered box is filled mostly by one shape colour, boxes come ordered by x1, and
    the answer is "none" exactly when it holds no box; both kinds of answer occur."""
    codec = BoxCodec()
    data = make(tasks={"find_all": 1.0}, n=60)
    answers = {"none": 0, "some": 0}
    for sample in data:
        answer = sample.turns[1].content
        boxes = codec.decode(answer, image_size=(64, 64))
        answers["none" if answer == "none" else "some"] += 1
        assert (answer == "none") == (not boxes)
        assert [b[0] for b in boxes] == sorted(b[0] for b in boxes)
        pixels = np.asarray(sample.images[0]).astype(int)
        for box in boxes:
            x1, y1, x2, y2 = (round(v) for v in box)
            crop = pixels[y1:y2, x1:x2]
            in_colour = [(np.abs(crop - c).sum(-1) == 0).mean() for c in COLOURS.values()]
            assert max(in_colour) > 0.4
    assert answers["none"] > 0 and answers["some"] > 0
