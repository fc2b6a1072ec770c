"""Activation checkpointing: same gradients as without it, under bf16-mixed on CPU."""

import copy

import torch
from helpers import tiny_model
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

from mm15_components import MM15Module
from mm15_components.data import Loader, SyntheticDataModule
from mm15_components.parallelize import parallelize


def gradients(module: MM15Module, batch: dict) -> dict[str, torch.Tensor]:
    """Gradients of the mean answer loss, computed as Lightning's bf16-mixed does on CPU."""
    module.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_sum, count, _ = module.answer_loss(batch)
    (loss_sum / count).backward()
    return {
        name.replace("_checkpoint_wrapped_module.", ""): p.grad.clone()
        for name, p in module.named_parameters()
        if p.grad is not None
    }


def test_checkpointed_gradients_match_under_bf16_mixed():
    torch.manual_seed(int(torch.randint(0, 2**31, ())))
    data = SyntheticDataModule(
        val_samples=4, train_samples=4, loader=Loader(batch_size=4, shuffle=False)
    )
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    plain = MM15Module(tiny_model(), data.tokenizer)
    checkpointed = copy.deepcopy(plain)
    parallelize(checkpointed.model, activation_checkpointing=True)
    parallelize(checkpointed.model, activation_checkpointing=True)  # a second call: no-op

    wrapped = [m for m in checkpointed.modules() if isinstance(m, CheckpointWrapper)]
    units = len(plain.model.vision.blocks) + len(plain.model.language.layers)
    assert len(wrapped) == units == 6  # 4 vision blocks, 2 decoder layers, each wrapped once
    assert checkpointed.model.state_dict().keys() == plain.model.state_dict().keys()

    expected, actual = gradients(plain, batch), gradients(checkpointed, batch)
    assert actual.keys() == expected.keys() and len(expected) > 50
    for name, grad in expected.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(actual[name], grad, rtol=1e-5, atol=1e-7, msg=name)
