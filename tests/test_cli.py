import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mm15_components.cli import build_from_config, main

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
QUICKSTART = Path(__file__).parents[1] / "recipes" / "quickstart.yaml"
TINY = [r for r in RECIPES if "pretrained" not in r.read_text()]


def test_help_and_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "mm15_components", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("fit", "validate", "test", "predict"):
        assert command in out


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_parses(recipe, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(recipe), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].endswith("MM15Module")


@pytest.mark.parametrize("recipe", TINY, ids=lambda p: p.name)
def test_tiny_recipes_run_one_step(recipe, tmp_path):
    main(
        [
            "fit",
            "--config",
            str(recipe),
            "--trainer.fast_dev_run=1",
            f"--trainer.default_root_dir={tmp_path}",
            "--data.init_args.num_workers=0",
        ]
    )


def test_config_and_latest_checkpoint_are_saved_with_each_run(tmp_path):
    """The resolved config is saved, and last.ckpt is the latest step even when validation
    never improves (an untrained model scores 0 grounding accuracy at every check)."""
    main(
        [
            "fit",
            "--config",
            str(QUICKSTART),
            "--trainer.max_steps=3",
            "--trainer.val_check_interval=1",
            "--trainer.limit_val_batches=1",
            "--trainer.log_every_n_steps=1",
            f"--trainer.default_root_dir={tmp_path}",
            "--data.init_args.num_workers=0",
            "--data.init_args.batch_size=4",
            "--data.init_args.val_samples=4",
            "--data.init_args.tasks={grounding: 1.0}",
            "--trainer.logger=CSVLogger",
            f"--trainer.logger.save_dir={tmp_path}",
        ]
    )
    saved = list(tmp_path.rglob("config.yaml"))
    assert saved, "no config.yaml written"
    config = yaml.safe_load(saved[0].read_text())
    assert config["trainer"]["max_steps"] == 3
    assert list(tmp_path.rglob("metrics.csv"))
    (last,) = tmp_path.rglob("last.ckpt")
    assert torch.load(last, weights_only=False)["global_step"] == 3


def test_config_key_typo_is_named(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(QUICKSTART), "--model.init_args.optimzer.lr=1"])
    assert "optimzer" in capsys.readouterr().err


def test_inspect_command(tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "wide.png"
    Image.new("RGB", (1000, 600), (200, 30, 30)).save(image)
    out = tmp_path / "tiles.png"
    main(["inspect", str(image), "--tile_size", "378", "--output", str(out)])
    report = capsys.readouterr().out
    # Eq. 1 by hand: 2x3 is the least-padding grid that covers 1000x600 at scale 567/500
    assert "2 rows x 3 cols" in report and "1008 (7 x 144)" in report
    assert Image.open(out).size[0] > 0


def test_build_from_config_links_data_to_model_and_takes_overrides(monkeypatch, recwarn):
    script_argv = ["script.py", "run.ckpt", "--steps", "3"]  # a script's own arguments
    monkeypatch.setattr(sys, "argv", list(script_argv))
    module, data = build_from_config(str(QUICKSTART), "--data.init_args.batch_size=5")
    assert sys.argv == script_argv
    assert not [w for w in recwarn if "args parameter" in str(w.message)]
    assert data.batch_size == 5
    assert module.tokenizer is data.tokenizer
    embeddings = module.model.language.model.get_input_embeddings()
    assert embeddings.num_embeddings == len(data.tokenizer)
