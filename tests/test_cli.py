import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mm15_components.cli import build_from_config, main, missing_recipe

RECIPES_DIR = Path(__file__).parents[1] / "recipes"
RECIPES = sorted(RECIPES_DIR.glob("*.yaml"))
QUICKSTART = RECIPES_DIR / "quickstart.yaml"
TINY = [r for r in RECIPES if "pretrained" not in r.read_text()]
STAGE_DATA = {
    "pretrain": "pretrain_files",
    "continual_pretrain": "continual_pretrain_files",
    "sft": "sft_llava",
}
COMPOSITIONS = [
    *[
        (f"models/{model}.yaml", f"stages/{stage}.yaml", f"data/{data}.yaml")
        for model in ("mm15_1b", "mm15_3b", "mm15_1b_moe")
        for stage, data in STAGE_DATA.items()
    ],
    *[
        ("models/mm15_1b.yaml", f"stages/{stage}.yaml", "data/synthetic.yaml",
         "snippets/random_init.yaml", "snippets/shallow.yaml")
        for stage in STAGE_DATA
    ],
    ("models/tiny.yaml", "stages/sft.yaml", "data/synthetic.yaml", "snippets/random_init.yaml"),
    ("quickstart.yaml", "snippets/predict.yaml"),
    ("models/mm15_1b.yaml", "stages/ui.yaml", "data/ui_ferret.yaml"),
]  # fmt: skip


def test_help_and_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "mm15_components", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("fit", "validate", "test", "predict", "inspect", "recipes", "data"):
        assert f"\n    {command} " in out


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_parses(recipe, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(recipe), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].endswith("MM15Module")


def print_config(*files: str, capsys, overrides: list[str] = ()) -> dict:
    args = [arg for name in files for arg in ("--config", str(RECIPES_DIR / name))]
    command = "predict" if "snippets/predict.yaml" in files else "fit"
    with pytest.raises(SystemExit) as exit_info:
        main([command, *args, *overrides, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("files", COMPOSITIONS, ids=lambda f: "+".join(Path(n).stem for n in f))
def test_every_composition_parses(files, capsys):
    printed = print_config(*files, capsys=capsys)
    model = printed["model"]["init_args"]["model"]["init_args"]
    assert printed["model"]["class_path"].endswith("MM15Module")
    if "snippets/random_init.yaml" in files:
        assert model["vision"]["init_args"]["pretrained"] is None
        assert model["language"]["init_args"]["pretrained"] is None
        assert printed["data"]["init_args"]["encoding"]["tokenizer"] is None


def test_every_shipped_file_is_in_a_tested_composition():
    shipped = {str(p.relative_to(RECIPES_DIR)) for p in RECIPES_DIR.rglob("*.yaml")}
    tested = {name for files in COMPOSITIONS for name in files}
    evaluation = {name for name in shipped if name.startswith("eval/")}  # test_benchmarks.py
    assert shipped - tested - evaluation - {p.name for p in RECIPES} == set()


def test_sft_composition_reads_like_the_paper(capsys):
    """The stage sets what MM1.5 states; the model and the data add only their own parts."""
    printed = print_config("models/mm15_1b.yaml", "stages/sft.yaml", "data/sft_llava.yaml",
                           capsys=capsys)  # fmt: skip
    trainer, module = printed["trainer"], printed["model"]["init_args"]
    data = printed["data"]["init_args"]
    assert trainer["precision"] == "bf16-mixed" and trainer["max_steps"] == 23000
    assert module["optimizer"]["init_args"]["lr"] == 2.0e-5
    assert module["activation_checkpointing"] is True and module["freeze"] is None
    vision = module["model"]["init_args"]["vision"]["init_args"]
    assert (vision["model_name"], vision["pretrained"], vision["image_size"]) == (
        "ViT-H-14-378-quickgelu",
        "dfn5b",
        672,
    )
    encoding = data["encoding"]
    splitter = encoding["splitter"]["init_args"]
    assert (splitter["tile_size"], splitter["min_tiles"], splitter["max_tiles"]) == (672, 4, 9)
    assert encoding["image_size"] is None and encoding["image_tokens"] is None  # the model's
    assert data["train"]["groups"] == {"single_image": 0.8, "multi_image": 0.1, "text_only": 0.1}
    paths = [source["path"] for source in data["train"]["sources"]]
    assert len(paths) == 8 and all(p and not p.startswith("/") for p in paths)
    assert data["data_root"] == "/data/mm15"


def test_tiny_model_is_the_quickstarts():
    quickstart = yaml.safe_load(QUICKSTART.read_text())["model"]["init_args"]["model"]
    tiny = yaml.safe_load((RECIPES_DIR / "models/tiny.yaml").read_text())
    assert tiny["model"]["init_args"] == {"model": quickstart}


@pytest.mark.parametrize("recipe", TINY, ids=lambda p: p.name)
def test_tiny_recipes_run_one_step(recipe, tmp_path):
    main(
        [
            "fit",
            "--config",
            str(recipe),
            "--trainer.fast_dev_run=1",
            f"--trainer.default_root_dir={tmp_path}",
            "--data.init_args.loader.num_workers=0",
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
            "--data.init_args.loader.num_workers=0",
            "--data.init_args.loader.batch_size=4",
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


@pytest.mark.parametrize("value", ["null", "false"])
def test_no_pretrained_weights_from_the_command_line(value, capsys):
    """A nested class argument reaches jsonargparse's sub-parser as ``str(value)``: null must
    still be None (not the string "None"), false still False."""
    vision = "--model.init_args.model.init_args.vision.init_args.pretrained"
    language = "--model.init_args.model.init_args.language.init_args.pretrained"
    overrides = [f"{vision}={value}", f"{language}={value}"]
    files = ("models/mm15_1b.yaml", "stages/sft.yaml", "data/synthetic.yaml")
    printed = print_config(*files, capsys=capsys, overrides=overrides)
    model = printed["model"]["init_args"]["model"]["init_args"]
    expected = None if value == "null" else False
    assert model["vision"]["init_args"]["pretrained"] is expected
    assert model["language"]["init_args"]["pretrained"] is expected


def test_fit_without_a_recipe_says_how_to_pass_one():
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--trainer.max_steps=1"])
    message = exit_info.value.code
    assert isinstance(message, str)  # printed to stderr, exit status 1
    assert "--config" in message and "mm15 recipes" in message
    assert "mm15 fit --config recipes/quickstart.yaml" in message


@pytest.mark.parametrize(
    "argv",
    [
        ["fit", "--config=recipes/quickstart.yaml"],
        ["validate", "-c", "recipes/quickstart.yaml"],
        ["fit", "--model.class_path=MM15Module", "--data", "data.yaml"],
        ["predict", "--help"],
        ["inspect", "image.png"],
        [],
    ],
)
def test_a_recipe_or_a_command_without_one_is_passed_on(argv):
    assert missing_recipe(argv) is None


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
    module, data = build_from_config(str(QUICKSTART), "--data.init_args.loader.batch_size=5")
    assert sys.argv == script_argv
    assert not [w for w in recwarn if "args parameter" in str(w.message)]
    assert data.loader.batch_size == 5
    assert module.tokenizer is data.tokenizer
    embeddings = module.model.language.input_embeddings
    assert embeddings.num_embeddings == len(data.tokenizer)
