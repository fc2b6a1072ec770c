import pytest
import torch
from torch.utils.data import DataLoader

from mm15_components.data import Loader, SyntheticDataModule
from mm15_components.data.batching import TokenBudgetBatchSampler, token_budget_batches
from mm15_components.data.sampler import ResumableBatchSampler, ResumableLoader


def test_token_budget_batches_hand_computed():
    # sorted lengths 3, 3, 5, 8, 10 under 12 padded tokens: [3, 3] (6), then 3 x 5 = 15 > 12
    # closes it; [5], then 2 x 8 = 16 > 12; [8]; [10]
    batches = token_budget_batches([5, 3, 8, 3, 10], max_tokens=12, seed=0)
    assert [sorted(b) for b in batches] == [[1, 3], [0], [2], [4]]


def test_token_budget_batches_fit_and_cover():
    lengths = torch.randint(1, 300, (500,)).tolist()
    batches = token_budget_batches(lengths, max_tokens=1024, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 1024
    # greedy: a batch could not take the next sample of the sorted order
    for batch, following in zip(batches, batches[1:], strict=False):
        longest = max(lengths[i] for i in following)
        assert (len(batch) + 1) * max(longest, *(lengths[i] for i in batch)) > 1024
    assert token_budget_batches(lengths, 1024, seed=3) == batches


def test_sample_over_the_budget_is_named():
    with pytest.raises(ValueError, match="sample 2 has 50 tokens, more than max_tokens=40"):
        token_budget_batches([10, 20, 50, 60], max_tokens=40)


@pytest.mark.parametrize("make", ["fixed", "budget"])
def test_epochs_ranks_and_resume(make):
    lengths = torch.randint(1, 100, (101,)).tolist()

    def sampler(rank=0, world=1):
        if make == "fixed":
            return ResumableBatchSampler(len(lengths), 8, seed=5, num_replicas=world, rank=rank)
        return TokenBudgetBatchSampler(lengths, 256, seed=5, num_replicas=world, rank=rank)

    one = ResumableLoader(DataLoader(range(len(lengths)), batch_sampler=sampler(), collate_fn=list))
    epoch0 = list(one)
    epoch1 = list(one)  # iterating past the end starts the next epoch
    assert one.state_dict() == {"epoch": 1, "consumed": len(epoch1)}
    assert epoch0 != epoch1
    for epoch in (epoch0, epoch1):
        assert sorted(i for b in epoch for i in b) == list(range(len(lengths)))
    if make == "budget":  # the same batches every epoch, in a new order
        assert sorted(map(sorted, epoch0)) == sorted(map(sorted, epoch1))

    # three ranks: equal counts, together every batch of the epoch (the first ones repeated)
    ranks = [list(sampler(rank, 3)) for rank in range(3)]
    assert len({len(r) for r in ranks}) == 1
    dealt = [b for step in zip(*ranks, strict=True) for b in step]
    assert dealt[: len(epoch0)] == epoch0
    assert dealt[len(epoch0) :] == epoch0[: len(dealt) - len(epoch0)]

    # resume mid-epoch 1 from a saved position
    resumed = sampler()
    resumed.load_state_dict({"epoch": 1, "consumed": 4})
    resumed.set_epoch(2)  # a begun epoch is finished first
    assert list(resumed) == epoch1[4:]
    fresh = sampler()
    fresh.set_epoch(1)
    assert list(fresh) == epoch1


def test_datamodule_batches_by_token_budget():
    data = SyntheticDataModule(
        train_samples=40, val_samples=8, seed=1, loader=Loader(max_tokens=100)
    )
    data.setup("fit")
    lengths = data.train_set.lengths()
    assert lengths.tolist() == [len(data.train_set[i]["input_ids"]) for i in range(40)]
    seen = []
    for batch in data.train_dataloader():
        assert batch["input_ids"].numel() <= 100
        assert batch["attention_mask"].sum(1).tolist() == [
            lengths[int(i.rsplit("-", 1)[1])] for i in batch["ids"]
        ]
        seen += batch["ids"]
    assert sorted(seen) == sorted(f"synthetic-train-{i}" for i in range(40))
