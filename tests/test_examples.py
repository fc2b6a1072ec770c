"""Every example in examples/ runs as its README says, for two steps with tiny settings, from a
directory without a recipes/ folder (the packaged recipes are read)."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image, ImageDraw

from mm15_components.cli import main

EXAMPLES = Path(__file__).parents[1] / "examples"
SHORT = [
    "--trainer.max_steps=2",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.logger=CSVLogger",
    "--trainer.logger.save_dir=logs",
]
SMALL_DATA = ["--data.init_args.loader.batch_size=4", "--trainer.limit_val_batches=0"]

pytestmark = pytest.mark.slow


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_custom_connector_plugs_in_by_class_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(EXAMPLES / "custom_connector"))
    connector = str(EXAMPLES / "custom_connector/connector.yaml")
    main(["fit", "--config", "recipes/quickstart.yaml", "--config", connector, *SHORT, *SMALL_DATA])
    (config,) = tmp_path.rglob("config.yaml")
    model = yaml.safe_load(config.read_text())["model"]["init_args"]["model"]["init_args"]
    assert model["connector"]["class_path"] == "my_connectors.NormedMLPProjector"
    checkpoint = next(tmp_path.rglob("last.ckpt"))
    weights = torch.load(checkpoint, weights_only=True)["state_dict"]
    in_dim = weights["model.connector.mlp.0.weight"].shape[1]  # the vision width
    assert weights["model.connector.norm.weight"].shape == (in_dim,)


def test_own_data_trains_the_tiny_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    load_script("own_data/make_data").main(["own_data", "--samples", "8", "--val_samples", "2"])
    data = str(EXAMPLES / "own_data/data.yaml")
    main(["fit", "--config", "recipes/models/tiny.yaml", "--config", data, *SHORT,
          "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1"])  # fmt: skip
    (metrics,) = tmp_path.rglob("metrics.csv")
    assert [r for r in csv.DictReader(metrics.open()) if r["val/loss"]]  # on val.jsonl
    # the model is sized to the data's own tokenizer: 4 specials, 0..999, 16 punctuation
    # marks, the 7 words make_data.py writes, <image>
    checkpoint = next(tmp_path.rglob("*.ckpt"))  # any of them: same vocabulary
    weights = torch.load(checkpoint, weights_only=True)["state_dict"]
    (embeddings,) = [w for name, w in weights.items() if name.endswith("embed_tokens.weight")]
    assert embeddings.shape[0] == 4 + 1000 + 16 + 7 + 1


@pytest.fixture(scope="module")
def anchored_run(tmp_path_factory):
    """Two steps of the quickstart with examples/subclass_module.py's AnchoredModule."""
    run = tmp_path_factory.mktemp("anchored")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.chdir(run)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    layer = str(EXAMPLES / "subclass_module.yaml")
    try:
        main(["fit", "--config", "recipes/quickstart.yaml", "--config", layer, *SHORT, *SMALL_DATA])
    finally:
        monkeypatch.undo()
    return run


def test_subclass_module_adds_its_loss_term(anchored_run):
    (metrics,) = anchored_run.rglob("metrics.csv")
    rows = [r for r in csv.DictReader(metrics.open()) if r["train/anchor_penalty"]]
    penalties = [float(r["train/anchor_penalty"]) for r in rows]
    # the connector starts at its anchor; one AdamW step (lr 3e-3 on the connector) moves it
    assert len(penalties) == 2 and penalties[0] == 0.0 and penalties[1] > 0.0


def test_inference_answers_as_mm15_predict_does(anchored_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    checkpoint = next(anchored_run.rglob("last.ckpt"))
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((8, 8, 30, 30), fill="red")
    image.save("shapes.png")
    questions = ["Where is the red circle?", "Where is the blue square?"]
    load_script("inference").main([str(checkpoint), "shapes.png", *questions, "--out", "out"])
    printed = [line for line in capsys.readouterr().out.splitlines() if " -> " in line]
    assert len(printed) == 2 and sorted(p.name for p in Path("out").glob("*.png")) == [
        "answer_0.png",
        "answer_1.png",
    ]
    main(["predict", "--config", "recipes/quickstart.yaml",
          "--config", "recipes/snippets/predict.yaml", f"--ckpt_path={checkpoint}",
          "--data.images=[shapes.png]", f"--data.query={questions[0]}"])  # fmt: skip
    (record,) = map(json.loads, Path("predictions/predictions.jsonl").read_text().splitlines())
    assert printed[0] == f"{questions[0]} -> {record['answer']!r}, boxes {record['boxes']}"
