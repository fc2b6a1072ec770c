import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_model
from PIL import Image

from mm15_components import MM15Module
from mm15_components.cli import main
from mm15_components.data import QueryDataModule
from mm15_components.grounding import draw_boxes

RECIPES = Path(__file__).parents[1] / "recipes"
PREDICT = ["predict", "--config", str(RECIPES / "quickstart.yaml")]
PREDICT += ["--config", str(RECIPES / "snippets" / "predict.yaml")]
BACKGROUND = (90, 120, 150)
MAGENTA = (255, 0, 255)  # the first box's colour


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The quickstart model after one training step: random, but a real checkpoint."""
    root = tmp_path_factory.mktemp("fit")
    main(
        [
            "fit",
            "--config",
            str(RECIPES / "quickstart.yaml"),
            "--trainer.max_steps=1",
            "--trainer.limit_val_batches=0",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={root}",
        ]
    )
    return next(root.rglob("last.ckpt"))


@pytest.fixture
def image_file(tmp_path) -> Path:
    path = tmp_path / "shape.png"
    Image.new("RGB", (80, 48), BACKGROUND).save(path)
    return path


def predict(checkpoint, image_file, output, *extra):
    main(
        [
            *PREDICT,
            f"--ckpt_path={checkpoint}",
            f"--data.images=[{image_file}]",
            "--data.query=Where is the red circle?",
            f"--trainer.callbacks.output_dir={output}",
            "--trainer.enable_progress_bar=false",
            *extra,
        ]
    )
    return [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]


def test_predict_writes_answers_and_pngs(checkpoint, image_file, tmp_path):
    records = predict(
        checkpoint, image_file, tmp_path / "out", "--model.init_args.constrained_decoding=true"
    )
    assert len(records) == 1
    record = records[0]
    assert record["id"] == str(image_file)
    assert record["query"] == "Where is the red circle?"
    assert isinstance(record["answer"], str)
    png = tmp_path / "out" / record["png"]
    assert png.name == "shape_000.png" and png.is_file()
    assert Image.open(png).size == (80 * 6, 48 * 6)  # enlarged to a 256 px shorter side


def test_predicted_box_is_drawn_where_it_was_decoded(checkpoint, image_file, tmp_path, monkeypatch):
    monkeypatch.setattr(
        MM15Module, "generate", lambda self, ids, mask, pixels: ["It is at [100, 250, 600, 750]"]
    )
    (record,) = predict(checkpoint, image_file, tmp_path / "out")
    # Bin centres on the 80 x 48 image (1000 bins): x = (v + 0.5) * 80 / 1000, y likewise.
    assert record["boxes"] == [pytest.approx([8.04, 12.024, 48.04, 36.024])]
    drawn = np.asarray(Image.open(tmp_path / "out" / record["png"]).convert("RGB"))
    # Drawn 6x larger: corners at round(6 * value).
    x1, y1, x2, y2 = 48, 72, 288, 216
    assert (drawn[y2, x1 + 10 : x2 - 10] == MAGENTA).all()  # bottom edge
    assert (drawn[y1 + 10 : y2 - 10, x1] == MAGENTA).all()  # left edge
    assert (drawn[y1 + 10 : y2 - 10, x2] == MAGENTA).all()  # right edge
    assert (drawn[y1, x1 + 10 : x2 - 10] == MAGENTA).all()  # top edge, under the label
    assert (drawn[y1 + 5 : y2 - 4, x1 + 5 : x2 - 4] == BACKGROUND).all()  # inside: untouched
    changed = (drawn != BACKGROUND).any(-1)
    changed[:y1, :] = False  # the label sits above the box
    changed[y1 : y2 + 1, x1 : x2 + 1] = False
    assert not changed.any()  # nothing drawn elsewhere


def test_bad_inputs_are_named(checkpoint, image_file, tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(ValueError, match=f"image file '{missing}' does not exist"):
        predict(checkpoint, missing, tmp_path / "out")
    with pytest.raises(ValueError, match="the query is empty"):
        predict(checkpoint, image_file, tmp_path / "out", "--data.query= ")


def test_predict_without_trained_weights_says_they_are_random(image_file, tmp_path):
    random = r"RANDOM WEIGHTS: .* randomly initialised vision, connector, language weights"
    with pytest.warns(UserWarning, match=random):
        main(
            [
                *PREDICT,
                f"--data.images=[{image_file}]",
                "--data.query=Where is the red circle?",
                f"--trainer.callbacks.output_dir={tmp_path}",
                "--trainer.enable_progress_bar=false",
            ]
        )
    assert (tmp_path / "predictions.jsonl").is_file()


def test_query_data_module_errors(image_file, tmp_path):
    with pytest.raises(ValueError, match="give image files"):
        QueryDataModule(query="Where is the red circle?")
    with pytest.raises(ValueError, match="must not contain <image>"):
        QueryDataModule([str(image_file)], query="<image> Where is it?")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    data = QueryDataModule([str(broken)], query="Where is the red circle?")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        data.setup("predict")
    with pytest.warns(UserWarning, match=r"does not know \['giraffe'\]"):
        QueryDataModule([str(image_file)], query="Where is the giraffe?")


def test_video_frames_are_asked_one_by_one(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for index, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)]):
        Image.new("RGB", (40, 30), colour).save(folder / f"f{index}.png")
    data = QueryDataModule(video=str(folder), num_frames=2, query="Where is the red circle?")
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    assert batch["ids"] == [f"{folder}#frame=0", f"{folder}#frame=1"]
    assert batch["names"] == ["clip_000", "clip_001"]
    assert batch["image_sizes"].tolist() == [[30, 40], [30, 40]]
    # two segments of two frames each; the middle frame of each (1 and 3) is taken
    assert [im.getpixel((0, 0)) for im in batch["images"]] == [(0, 255, 0), (9, 9, 9)]
    assert batch["prompt_ids"].shape[0] == batch["pixel_values"].shape[0] == 2


def test_draw_boxes_scales_small_images_and_labels_each_box():
    image = Image.new("RGB", (100, 50), BACKGROUND)
    drawn = np.asarray(draw_boxes(image, [(10, 10, 40, 40), (60, 20, 90, 45)], ["a", "b"]))
    scale = math.ceil(256 / 50)
    assert drawn.shape == (50 * scale, 100 * scale, 3)
    assert tuple(drawn[40 * scale, 25 * scale]) == MAGENTA  # bottom edge of box 0
    assert tuple(drawn[45 * scale, 75 * scale]) == (0, 255, 255)  # bottom edge of box 1
    large = np.asarray(draw_boxes(Image.new("RGB", (400, 300), BACKGROUND), [(0, 0, 399, 299)]))
    assert large.shape == (300, 400, 3) and tuple(large[299, 200]) == MAGENTA
    reversed_corners = draw_boxes(image, [(40, 40, 10, 10)])
    assert np.array_equal(
        np.asarray(reversed_corners), np.asarray(draw_boxes(image, [(10, 10, 40, 40)]))
    )
    with pytest.raises(ValueError, match="2 boxes but 1 labels"):
        draw_boxes(image, [(0, 0, 1, 1), (0, 0, 2, 2)], ["a"])


def test_predict_step_returns_boxes_in_original_pixels(image_file, monkeypatch):
    data = QueryDataModule([str(image_file), str(image_file)], query="Where is the red circle?")
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    module = MM15Module(tiny_model(), data.tokenizer)
    module.generate = lambda ids, mask, pixels: ["[0, 0, 999, 999]", "no box here"]
    predictions = module.predict_step(batch, 0)
    assert predictions[0]["boxes"] == [pytest.approx((0.04, 0.024, 79.96, 47.976))]
    assert predictions[1] == {"id": str(image_file), "answer": "no box here", "boxes": []}
