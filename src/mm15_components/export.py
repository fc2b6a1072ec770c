"""``mm15 export``: a trained model as a self-contained directory that
:func:`~mm15_components.pretrained.load_pretrained` reads without a trainer (the layout is
described in :mod:`mm15_components.pretrained`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule

from mm15_components.language.chat import ChatTemplate, ConversationTemplate, chat_template_for
from mm15_components.module import MM15Module
from mm15_components.pretrained import (
    EXPORT_CONFIG,
    EXPORT_TOKENIZER,
    FORMAT_VERSION,
    chat_template_config,
)
from mm15_components.weights import load_weights_from, save_weights

DEFAULT_CODEC = {"class_path": "mm15_components.grounding.BoxCodec"}
DATA_SETTINGS = ("tokenizer", "image_size", "image_tokens", "mean", "std")
"""What an exported model needs from the data module (besides its recipe arguments)."""


def export_pretrained(
    module: MM15Module,
    data: LightningDataModule,
    config: dict[str, Any],
    output: str | os.PathLike,
) -> Path:
    """Write ``module``'s model, with the tokenizer, image settings, codec and chat template of
    ``data``, to the directory ``output``; ``config`` is the recipe as the CLI resolved it
    (``model``/``data`` with ``class_path``/``init_args``). Returns the directory."""
    missing = [key for key in DATA_SETTINGS if not hasattr(data, key)]
    if missing:
        raise ValueError(
            f"{type(data).__name__} has no {missing}: export reads the tokenizer and the image "
            "settings from the data module the model was trained with"
        )
    output = Path(output)
    model = module.model
    encoding = config.get("data", {}).get("init_args", {}).get("encoding") or {}
    settings = {
        "format_version": FORMAT_VERSION,
        "model": random_init_config(config["model"]["init_args"]["model"], model),
        "image": {
            "image_size": data.image_size,
            "image_tokens": data.image_tokens,
            "mean": list(data.mean),
            "std": list(data.std),
            "splitter": encoding.get("splitter"),
            "tile_indicators": getattr(data, "tile_indicators", "none"),
        },
        "codec": encoding.get("codec") or DEFAULT_CODEC,
        "chat_template": chat_template_config(data_chat_template(data)),
        "generation": {
            "max_new_tokens": module.max_new_tokens,
            "constrained_decoding": module.box_processor is not None,
        },
    }
    if data.image_tokens != model.tokens_per_image:
        raise ValueError(
            f"data image_tokens={data.image_tokens} disagrees with the model's "
            f"tokens_per_image={model.tokens_per_image}"
        )
    save_weights(model, output)
    data.tokenizer.save_pretrained(output / EXPORT_TOKENIZER)
    text = json.dumps(settings, indent=2, default=list)
    (output / EXPORT_CONFIG).write_text(text + "\n", encoding="utf-8")
    return output


def random_init_config(model_config: dict[str, Any], model: Any) -> dict[str, Any]:
    """The model's configuration with nothing to download: the encoder's and the LM's
    ``pretrained`` off (the weights come from the export), the LM's architecture the one it
    was built with."""
    model_config = json.loads(json.dumps(model_config, default=list))  # a deep copy
    parts = model_config["init_args"]
    vision_args = parts["vision"].setdefault("init_args", {})
    if "pretrained" in vision_args:
        vision_args["pretrained"] = None
    language_args = parts["language"].setdefault("init_args", {})
    language_args["pretrained"] = None
    architecture = model.language.config.to_diff_dict()
    architecture.pop("transformers_version", None)
    language_args["config"] = architecture
    return model_config


def data_chat_template(data: LightningDataModule) -> ConversationTemplate:
    """The template the data writes conversations in: the one it was given
    (``ConversationDataModule.chat_template``), the plain one when it was told not to use the
    tokenizer's (``encoding.use_tokenizer_template=False``), else the tokenizer's own when it
    has one."""
    template = getattr(data, "chat_template", None)
    if template is None and getattr(data, "use_tokenizer_template", True) is False:
        template = ChatTemplate()
    return template or chat_template_for(data.tokenizer)


def export_command(args: list[str]) -> None:
    """``mm15 export --config RECIPE [--config ...] --ckpt_path CK --output DIR``: the weights of
    CK (a Lightning checkpoint, a distributed checkpoint directory or an exported directory) in
    the model of RECIPE, written with its tokenizer and settings to DIR."""
    from mm15_components.cli import _cli

    parser = argparse.ArgumentParser(
        prog="mm15 export",
        description=export_command.__doc__,
        epilog="Other arguments (--config, --model.*, --data.*) are read as `mm15 fit` reads them.",
    )
    parser.add_argument("--ckpt_path", required=True, help="checkpoint to export")
    parser.add_argument("--output", required=True, help="directory to write")
    known, recipe = parser.parse_known_args(args)
    argv, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI reads only ``recipe``
    try:
        cli = _cli(recipe, run=False)
    finally:
        sys.argv = argv
    adopt = getattr(cli.datamodule, "adopt_geometry", None)
    if adopt is not None:
        adopt(cli.model.model)
    report = load_weights_from(cli.model.model, known.ckpt_path)
    output = export_pretrained(cli.model, cli.datamodule, cli.config.as_dict(), known.output)
    print(f"{known.ckpt_path}: {report}\nexported to {output}")
