import math

import pytest
import torch
from helpers import tiny_model

from mm15_components import MM15Module
from mm15_components.data import Encoding, Loader, SyntheticDataModule
from mm15_components.grounding import BoxCodec
from mm15_components.grounding.head import CoordinateGroundingHead


def soft_cross_entropy_by_hand(scores: list[float], target_bin: int, sigma: float) -> float:
    weights = [math.exp(-0.5 * ((b - target_bin) / sigma) ** 2) for b in range(len(scores))]
    total = sum(weights)
    log_norm = math.log(sum(math.exp(s) for s in scores))
    return -sum(w / total * (s - log_norm) for w, s in zip(weights, scores, strict=True))


def test_soft_label_loss_matches_a_hand_computation_and_skips_other_positions():
    # vocabulary of 8: tokens 3..7 are the coordinate bins 0..4, the rest are not
    head = CoordinateGroundingHead(sigma=1.5, weight=0.5)
    head.bind([3, 4, 5, 6, 7])
    logits = torch.randn(2, 3, 8)
    labels = torch.tensor([[5, 1, -100], [0, 7, 2]])  # bins 2 (row 0) and 4 (row 1)
    expected = sum(
        soft_cross_entropy_by_hand(logits[r, t, 3:].tolist(), b, 1.5)
        for r, t, b in [(0, 0, 2), (1, 1, 4)]
    )
    assert float(head(logits, labels)) == pytest.approx(0.5 * expected, rel=1e-5)
    # changing the scores of non-coordinate tokens or of non-coordinate positions changes nothing
    edited = logits.clone()
    edited[..., :3] += 5.0
    edited[0, 1] += torch.randn(8)
    assert float(head(edited, labels)) == pytest.approx(float(head(logits, labels)), rel=1e-6)


def test_near_misses_cost_less_than_far_ones():
    head = CoordinateGroundingHead(sigma=2.0)
    head.bind(list(range(100)))
    labels = torch.tensor([[50]])

    def loss_when_peaked_at(bin_: int) -> float:
        logits = torch.zeros(1, 1, 100)
        logits[0, 0, bin_] = 10.0
        return float(head(logits, labels))

    assert loss_when_peaked_at(50) < loss_when_peaked_at(52) < loss_when_peaked_at(60)


def test_head_needs_bind_and_valid_settings():
    with pytest.raises(ValueError, match="sigma > 0"):
        CoordinateGroundingHead(sigma=0.0)
    with pytest.raises(RuntimeError, match="bind"):
        CoordinateGroundingHead()(torch.zeros(1, 1, 4), torch.zeros(1, 1, dtype=torch.long))


@pytest.mark.parametrize("style", ["text", "tokens"])
def test_training_loss_adds_the_head_term_normalised_like_the_answer_loss(style):
    data = SyntheticDataModule(
        val_samples=8, encoding=Encoding(codec=BoxCodec(style=style)), loader=Loader(batch_size=8)
    )
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    head = CoordinateGroundingHead(sigma=4.0, weight=2.0)
    module = MM15Module(tiny_model(), data.tokenizer, codec=data.codec, grounding_head=head)
    module.trainer = type("T", (), {"world_size": 1})()  # training_step reads world_size
    module.log = lambda *args, **kwargs: None
    module.all_gather = lambda t: t
    # the parts training_step combined, recorded from its own forward pass
    parts = []
    answer_loss = module.answer_loss

    def recorded_answer_loss(*args, **kwargs):
        parts.append(answer_loss(*args, **kwargs))
        return parts[-1]

    module.answer_loss = recorded_answer_loss
    loss = module.training_step(batch, 0).detach()
    ((loss_sum, count, head_sum),) = parts
    assert head_sum is not None and float(head_sum.detach()) > 0
    assert float(loss) == pytest.approx(float((loss_sum + head_sum).detach() / count), rel=1e-6)
    # every coordinate label of the batch is seen by the head: 4 per grounding sample
    grounding = torch.isfinite(batch["target_boxes"]).all(-1).sum()
    assert int((head.bin_of_token(batch["labels"]) >= 0).sum()) == 4 * grounding


def test_head_refuses_tokenizers_that_split_coordinates():
    data = SyntheticDataModule(
        val_samples=8, encoding=Encoding(codec=BoxCodec(bins=2000))
    )  # numbers end at 1999
    bigger = BoxCodec(bins=4000)  # ... so values 2000.. are not single tokens
    with pytest.raises(ValueError, match="one token per coordinate"):
        MM15Module(
            tiny_model(), data.tokenizer, codec=bigger, grounding_head=CoordinateGroundingHead()
        )
