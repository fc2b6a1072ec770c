import pytest
import torch
from helpers import TINY_LLAMA

from mm15_components import MM15Model, MM15Module
from mm15_components.connectors import MLPProjector
from mm15_components.data import Loader, SyntheticDataModule
from mm15_components.data.collate import collate
from mm15_components.data.packing import collate_packed, pack_rows
from mm15_components.language import CausalLM
from mm15_components.vision import OpenCLIPVisionEncoder


@pytest.fixture(scope="module")
def data():
    data = SyntheticDataModule(train_samples=16, val_samples=4, seed=2)
    data.setup("fit")
    return data


def module_with(data, attn_implementation: str) -> MM15Module:
    torch.manual_seed(0)
    model = MM15Model(
        OpenCLIPVisionEncoder("mm15-tiny-vit"),
        CausalLM(config=TINY_LLAMA, attn_implementation=attn_implementation),
        lambda i, o: MLPProjector(i, o, pool=2),
    )
    return MM15Module(model, data.tokenizer).eval()


def test_pack_rows_first_fit():
    assert pack_rows([5, 3, 4, 2, 6, 1], 8) == [[0, 1], [2, 3, 5], [4]]


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@torch.no_grad()
def test_packed_forward_equals_each_sample_alone(data, attn_implementation):
    module = module_with(data, attn_implementation)
    items = [data.train_set[i] for i in range(6)]
    packed = collate_packed(items, data.tokenizer.pad_token_id, row_length=100)
    assert packed["input_ids"].shape[0] < len(items)  # several samples share a row
    logits = module.model(packed["input_ids"], None, packed["pixel_values"], packed["position_ids"])
    rows = pack_rows([len(it["input_ids"]) for it in items], 100)
    assert packed["ids"] == [items[i]["id"] for row in rows for i in row]
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            ids = items[i]["input_ids"]
            n = len(ids)
            assert packed["input_ids"][r, start : start + n].tolist() == ids.tolist()
            alone = module.model(ids[None], None, items[i]["pixel_values"])[0]
            torch.testing.assert_close(logits[r, start : start + n], alone, atol=1e-5, rtol=1e-5)
            start += n


@torch.no_grad()
def test_packed_loss_equals_unpacked_loss(data):
    module = module_with(data, "sdpa")
    items = [data.train_set[i] for i in range(8)]
    pad = data.tokenizer.pad_token_id
    packed_sum, packed_count, _ = module.answer_loss(collate_packed(items, pad, row_length=120))
    plain_sum, plain_count, _ = module.answer_loss(collate(items, pad))
    assert int(packed_count) == int(plain_count) > 0
    torch.testing.assert_close(packed_sum, plain_sum, atol=1e-4, rtol=1e-5)


def test_sample_longer_than_a_row_is_named(data):
    item = data.train_set[0]
    with pytest.raises(ValueError, match=f"sample '{item['id']}' has"):
        collate_packed([item], 0, row_length=len(item["input_ids"]) - 1)


def test_datamodule_packs_training_batches_only():
    data = SyntheticDataModule(
        train_samples=12, val_samples=4, loader=Loader(batch_size=6, pack=90)
    )
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["input_ids"].shape[1] <= 90 and len(batch["ids"]) == 6
    assert batch["input_ids"].shape[0] < 6
    val_batch = next(iter(data.val_dataloader()))
    assert val_batch["position_ids"] is None and val_batch["attention_mask"] is not None
