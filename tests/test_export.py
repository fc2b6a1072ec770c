"""``mm15 export`` and ``load_pretrained``: the exported model holds the checkpoint's tensors
exactly, answers as the Lightning path does, asks in the training template, and names what is
wrong with a broken directory."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import build_chatml_tokenizer, tiny_module, training_turn
from lightning.pytorch import LightningDataModule
from PIL import Image

from mm15_components import load_pretrained
from mm15_components.cli import build_from_config, main
from mm15_components.data.synthetic.dataset import vocabulary
from mm15_components.export import export_pretrained
from mm15_components.pretrained import EXPORT_CONFIG, EXPORT_TOKENIZER
from mm15_components.weights import EXPORT_WEIGHTS, read_weights, save_weights

RECIPES = Path(__file__).parents[1] / "recipes"
QUICKSTART = str(RECIPES / "quickstart.yaml")
QUESTION = "Where is the red circle?"
QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(last.ckpt of 2 quickstart steps, its export)."""
    root = tmp_path_factory.mktemp("export")
    steps = ["--data.init_args.loader.batch_size=4", "--trainer.max_steps=2"]
    steps += ["--trainer.limit_val_batches=0", f"--trainer.default_root_dir={root}"]
    main(["fit", "--config", QUICKSTART, *steps, *QUIET])
    (checkpoint,) = root.rglob("last.ckpt")
    main(
        ["export", "--config", QUICKSTART, f"--ckpt_path={checkpoint}", f"--output={root}/exported"]
    )
    return checkpoint, root / "exported"


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    generator = torch.Generator().manual_seed(0)
    return [
        Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=generator).byte().numpy())
        for h, w in ((48, 80), (64, 64), (90, 30))
    ]


def test_export_holds_the_checkpoints_tensors_exactly(exported):
    checkpoint, directory = exported
    files = {EXPORT_WEIGHTS, EXPORT_CONFIG, EXPORT_TOKENIZER}
    assert {path.name for path in directory.iterdir()} == files
    expected = read_weights(checkpoint)
    state = load_pretrained(directory).model.state_dict()
    assert expected.keys() == state.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def test_exported_answers_equal_mm15_predict(exported, images, tmp_path):
    """Greedy answers of ``chat``/``chat_batch`` equal those of ``mm15 predict`` given the
    export directory as ``init_from`` (in fp32: the exported model's dtype)."""
    files = []
    for k, image in enumerate(images):
        files.append(tmp_path / f"image{k}.png")
        image.save(files[-1])
    recipes = ["--config", QUICKSTART, "--config", str(RECIPES / "snippets" / "predict.yaml")]
    query = [f"--data.images=[{','.join(map(str, files))}]", f"--data.query={QUESTION}"]
    source = [f"--model.init_args.init_from={exported[1]}", "--trainer.precision=32-true"]
    output = [f"--trainer.callbacks.output_dir={tmp_path}", "--trainer.enable_progress_bar=false"]
    main(["predict", *recipes, *query, *source, *output])
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    predicted = [json.loads(line)["answer"] for line in lines]
    pretrained = load_pretrained(exported[1])
    batched = pretrained.chat_batch([([image], QUESTION) for image in images])
    one_by_one = [pretrained.chat([image], QUESTION) for image in images]
    assert predicted == batched == one_by_one
    assert len(set(predicted)) > 1  # the images differ, so do the answers


def test_loglikelihood_ranks_the_greedy_word_first(exported, images):
    """The one-token greedy answer is the most likely one-token continuation."""
    pretrained = load_pretrained(exported[1])
    answer = pretrained.chat([images[0]], QUESTION, max_new_tokens=1)
    logprob, greedy = pretrained.loglikelihood([images[0]], QUESTION, answer)
    assert greedy and logprob < 0
    for other in ("circle", "square", "[", "7"):
        if other != answer:
            other_logprob, other_greedy = pretrained.loglikelihood([images[0]], QUESTION, other)
            assert other_logprob < logprob and not other_greedy


def test_chat_asks_in_the_tokenizers_own_template_as_training_does(tmp_path):
    """A tokenizer with its own chat template: the exported model's prompt is the prompt of a
    training conversation with that question and image, token for token."""
    tokenizer = build_chatml_tokenizer(vocabulary())
    tokenizer.save_pretrained(tmp_path / "tok")
    recipe = [f"--data.init_args.encoding.tokenizer={tmp_path / 'tok'}"]
    module, _ = build_from_config(QUICKSTART, *recipe)
    save_weights(module.model, tmp_path / "weights")
    paths = [f"--ckpt_path={tmp_path}/weights", f"--output={tmp_path}/exported"]
    main(["export", "--config", QUICKSTART, *recipe, *paths])
    pretrained = load_pretrained(tmp_path / "exported")

    image, trained = training_turn(tmp_path, QUESTION, str(tmp_path / "tok"), image_tokens=64)
    asked = pretrained.encode([image], QUESTION)
    prompt = asked["input_ids"][: asked["prompt_length"]].tolist()
    assert prompt == trained["input_ids"][: trained["prompt_length"]].tolist()
    tokens = pretrained.tokenizer.convert_ids_to_tokens(prompt)
    assert tokens[:2] == ["<|im_start|>", "user"] and tokens[-2:] == ["<|im_start|>", "assistant"]
    assert torch.equal(asked["pixel_values"], trained["pixel_values"])


def broken_copy(directory: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(directory, copy)
    edit(copy)
    return copy


def edit_config(change):
    def edit(copy: Path) -> None:
        config = json.loads((copy / EXPORT_CONFIG).read_text())
        change(config)
        (copy / EXPORT_CONFIG).write_text(json.dumps(config))

    return edit


@pytest.mark.parametrize(
    "edit, error, message",
    [
        (lambda d: (d / EXPORT_WEIGHTS).unlink(), FileNotFoundError, EXPORT_WEIGHTS),
        (lambda d: (d / EXPORT_CONFIG).unlink(), FileNotFoundError, EXPORT_CONFIG),
        (lambda d: shutil.rmtree(d / EXPORT_TOKENIZER), FileNotFoundError, "tokenizer"),
        (edit_config(lambda c: c.pop("codec")), ValueError, "key 'codec' is missing"),
        (edit_config(lambda c: c["image"].pop("std")), ValueError, "key 'image.std'"),
        (edit_config(lambda c: c["chat_template"].update(kind="x")), ValueError, "chat_template"),
        (
            edit_config(
                lambda c: c["model"]["init_args"]["language"]["init_args"]["config"].update(
                    num_hidden_layers=3
                )
            ),
            ValueError,
            r"language\.model\.model\.layers\.3",
        ),
    ],
    ids=["weights", "config", "tokenizer", "codec", "image", "template", "architecture"],
)
def test_broken_directory_is_named(exported, tmp_path, edit, error, message):
    copy = broken_copy(exported[1], tmp_path, edit)
    with pytest.raises(error, match=message) as raised:
        load_pretrained(copy)
    assert str(copy) in str(raised.value)


def test_export_refuses_a_checkpoint_of_another_model(exported, tmp_path):
    smaller = ["--model.init_args.model.init_args.language.init_args.config.num_hidden_layers=2"]
    with pytest.raises(ValueError, match=r"unexpected[\s\S]*layers\.2"):
        paths = [f"--ckpt_path={exported[0]}", f"--output={tmp_path}/out"]
        main(["export", "--config", QUICKSTART, *smaller, *paths])
    assert not (tmp_path / "out").exists()


def test_export_names_what_the_data_module_lacks(tmp_path):
    with pytest.raises(ValueError, match=r"LightningDataModule has no \['tokenizer', 'image_size'"):
        export_pretrained(tiny_module(), LightningDataModule(), {}, tmp_path)
    assert not any(tmp_path.iterdir())


def test_export_gathers_a_distributed_checkpoint(exported, tmp_path):
    """A distributed checkpoint directory (the layout of ``ModelParallelStrategy``; FSDP2 runs
    writing it are in test_fsdp.py) exports to the same tensors as the single file."""
    from torch.distributed.checkpoint import FileSystemWriter, save

    checkpoint, _ = exported
    weights = read_weights(checkpoint)
    state = {"state_dict": {f"model.{key}": value for key, value in weights.items()}}
    save(state, storage_writer=FileSystemWriter(tmp_path / "distributed"), no_dist=True)
    paths = [f"--ckpt_path={tmp_path}/distributed", f"--output={tmp_path}/out"]
    main(["export", "--config", QUICKSTART, *paths])
    state = load_pretrained(tmp_path / "out").model.state_dict()
    assert weights.keys() == state.keys()
    for key, value in weights.items():
        assert torch.equal(state[key], value), key
