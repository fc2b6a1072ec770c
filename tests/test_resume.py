"""Exact resume: a run stopped at step k and resumed from its checkpoint reaches the same
weights at step n as a run that never stopped, mid-epoch and across epochs."""

import itertools
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from mm15_components.cli import build_from_config, main
from mm15_components.data.sampler import ResumableBatchSampler, ResumableLoader

RECIPES = Path(__file__).parents[1] / "recipes"
QUICKSTART = RECIPES / "quickstart.yaml"
STEPS = 6
BATCH = 4


def fit(
    root: Path,
    max_steps: int,
    train_samples: int,
    workers: int,
    ckpt: Path | None = None,
    recipe: Path = QUICKSTART,
):
    """``recipe`` (the quickstart), shrunk: no validation, no logger; ``last.ckpt`` (kept by
    the mm15 command) at the last step."""
    root.mkdir(exist_ok=True)
    override = root / "override.yaml"
    override.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "callbacks": [],
                    "enable_checkpointing": False,
                    "logger": False,
                    "enable_progress_bar": False,
                    "limit_val_batches": 0,
                }
            }
        )
    )
    args = [
        "fit",
        "--config",
        str(recipe),
        "--config",
        str(override),
        f"--trainer.max_steps={max_steps}",
        f"--trainer.default_root_dir={root}",
        f"--data.init_args.train_samples={train_samples}",
        f"--data.init_args.loader.batch_size={BATCH}",
        f"--data.init_args.loader.num_workers={workers}",
        f"--model.init_args.lr_scheduler.init_args.total_steps={STEPS}",
        "--model.init_args.lr_scheduler.init_args.warmup_steps=2",
    ]
    if ckpt is not None:
        args.append(f"--ckpt_path={ckpt}")
    main(args)
    return torch.load(root / "checkpoints" / "last.ckpt", weights_only=False)


@pytest.mark.parametrize(
    ("train_samples", "stop", "workers"),
    [
        (40, 3, 0),  # 10 batches per epoch: stopped mid-epoch 0
        (8, 3, 1),  # 2 batches per epoch: stopped mid-epoch 1, a worker prefetching ahead
        (8, 4, 0),  # stopped exactly at the end of epoch 1
    ],
)
def test_resumed_run_matches_uninterrupted(tmp_path, train_samples, stop, workers):
    reference = fit(tmp_path / "straight", STEPS, train_samples, workers)
    fit(tmp_path / "resumed", stop, train_samples, workers)
    resumed = fit(
        tmp_path / "resumed",
        STEPS,
        train_samples,
        workers,
        ckpt=tmp_path / "resumed" / "checkpoints" / "last.ckpt",
    )
    assert resumed["global_step"] == reference["global_step"] == STEPS
    per_epoch = train_samples // BATCH
    epoch = (STEPS - 1) // per_epoch
    loader_state = {"epoch": epoch, "consumed": STEPS - epoch * per_epoch}
    assert resumed["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [loader_state]
    assert reference["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [loader_state]
    expected, actual = reference["state_dict"], resumed["state_dict"]
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-7, msg=name)


def test_resumed_mixture_counts_match_uninterrupted(tmp_path):
    """The realised-share counts live in the loader's state: a run stopped mid-epoch and
    resumed ends with the counts of a run that never stopped, and both equal the categories
    of the first batches the data module gives (the counts do not lag the position)."""
    recipe, samples = RECIPES / "sft.yaml", 40
    reference = fit(tmp_path / "straight", STEPS, samples, 0, recipe=recipe)
    fit(tmp_path / "resumed", 3, samples, 0, recipe=recipe)
    last = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    resumed = fit(tmp_path / "resumed", STEPS, samples, 0, ckpt=last, recipe=recipe)
    _, data = build_from_config(
        str(recipe),
        f"--data.init_args.train_samples={samples}",
        f"--data.init_args.loader.batch_size={BATCH}",
    )
    data.setup("fit")
    batches = list(itertools.islice(data.train_dataloader(), STEPS))
    categories = Counter(c for batch in batches for c in batch["categories"])
    assert sum(categories.values()) == STEPS * BATCH and len(categories) > 1
    expected = {"epoch": 0, "consumed": STEPS, "counts": {"skipped": 0, "categories": categories}}
    for run in (reference, resumed):
        assert run["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [expected]


def test_loader_counts_consumed_batches_not_prefetched():
    """A worker prefetches batches ahead; the saved position counts only those handed out,
    and a new loader from that state yields exactly the rest of the epoch."""
    data = list(range(20))

    def loader(state=None):
        sampler = ResumableBatchSampler(len(data), 3, shuffle=True, seed=7)
        wrapped = ResumableLoader(
            torch.utils.data.DataLoader(data, batch_sampler=sampler, num_workers=1)
        )
        if state is not None:
            wrapped.load_state_dict(state)
        return wrapped

    full = [b.tolist() for b in loader()]
    first = loader()
    taken = []
    for batch in first:
        taken.append(batch.tolist())
        if len(taken) == 2:
            break
    assert first.state_dict() == {"epoch": 0, "consumed": 2}
    rest = [b.tolist() for b in loader(first.state_dict())]
    assert taken + rest == full
    assert sorted(i for b in full for i in b) == data
