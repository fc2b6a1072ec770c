"""The ``mm15`` command: LightningCLI over MM15Module and any LightningDataModule."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any

import yaml
from jsonargparse import ArgumentParser, get_loader, set_loader
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from mm15_components.checkpoint import LastCheckpoint
from mm15_components.export import export_command
from mm15_components.module import MM15Module
from mm15_components.recipe_files import recipes_command, with_packaged_recipes

PARSER_MODE = "mm15_yaml"
SUBCOMMANDS = ("fit", "validate", "test", "predict")
"""LightningCLI's subcommands, each of which builds a model and data from a recipe."""
_load_yaml = get_loader("yaml")


def load_yaml(text: str) -> Any:
    """YAML as jsonargparse reads it, with a plain ``None`` read as null. jsonargparse hands a
    value given to an argument of a class nested in another (``--model.init_args.model.
    init_args.vision.init_args.pretrained=null``) on as ``str(value)``, and ``str(None)`` is
    ``None``, which YAML would read as a string."""
    value = _load_yaml(text)
    return None if value == "None" and text.strip() == "None" else value


# a value that is not YAML stays the text it is, as in jsonargparse's own yaml mode
set_loader(PARSER_MODE, load_yaml, exceptions=(yaml.YAMLError,))


class MM15CLI(LightningCLI):
    """``mm15 fit|validate|test|predict --config recipes/X.yaml``.

    Model and data are chosen by ``class_path`` (subclass mode), so a downstream subclass of any
    component plugs in from YAML. The data's tokenizer is handed to the model when both are
    built, which sizes the vocabulary and learns the special-token ids, and so is its box
    codec, so answers are read with the convention they were written in. Every run keeps a
    ``last.ckpt`` to resume from (``LastCheckpoint``, options under ``last_checkpoint:``).
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        for name in ("tokenizer", "codec"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        """Lightning's subcommands, and :data:`COMMANDS` listed beside them in ``mm15 --help``
        (``main`` runs those before LightningCLI parses anything)."""
        super()._add_subcommands(parser, **kwargs)
        for name, command in COMMANDS.items():
            summary = command.__doc__.split("\n\n")[0].replace("``", "")
            parser._subcommands_action.add_subcommand(name, ArgumentParser(), help=summary)

    def before_predict(self) -> None:
        """Predictions from weights nothing trained are noise: say so before making them."""
        config = self.config["predict"]
        if config.get("ckpt_path") is None and config.get("model.init_args.init_from") is None:
            warnings.warn(random_weights_warning(self.model), stacklevel=1)


def random_weights_warning(module: MM15Module) -> str:
    """What ``mm15 predict`` without ``--ckpt_path`` or ``init_from`` answers with."""
    model = module.model
    pretrained = [
        name for name in ("vision", "language") if getattr(getattr(model, name), "pretrained", 0)
    ]
    random = [name for name in ("vision", "connector", "language") if name not in pretrained]
    return (
        f"RANDOM WEIGHTS: mm15 predict without --ckpt_path or --model.init_args.init_from "
        f"answers with randomly initialised {', '.join(random)} weights"
        + (f" (pretrained: {', '.join(pretrained)})" if pretrained else "")
        + ", so the answers are noise; pass --ckpt_path=<run>/checkpoints/last.ckpt"
    )


def inspect_command(args: list[str]) -> None:
    """``mm15 inspect IMAGE``: the splitter's plan for one image, and a PNG of its tiles."""
    from mm15_components.vision.anyres import AnyResSplitter
    from mm15_components.vision.inspect import inspect_image

    parser = ArgumentParser(prog="mm15 inspect", description=inspect_command.__doc__)
    parser.add_argument("image", type=str, help="image file to plan and split")
    parser.add_argument("--tokens_per_image", type=int, default=144, help="tokens per tile")
    parser.add_argument("--output", type=str | None, default=None, help="PNG path")
    parser.add_class_arguments(AnyResSplitter, skip={"mean", "std", "max_images_to_split"})
    config = parser.parse_args(args).as_dict()
    image, tokens, output = (config.pop(k) for k in ("image", "tokens_per_image", "output"))
    print(inspect_image(image, AnyResSplitter(**config), tokens, output))


def data_command(args: list[str]) -> None:
    """``mm15 data optimize INPUT OUTPUT_DIR``: a data file and its images into litdata chunks."""
    from mm15_components.data.stream import optimize_command

    if args[:1] != ["optimize"]:
        raise SystemExit(
            "usage: mm15 data optimize INPUT OUTPUT_DIR (see mm15 data optimize --help)"
        )
    optimize_command(args[1:])


# commands beside LightningCLI's fit/validate/test/predict: name -> function of the arguments
# that follow the name
COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "inspect": inspect_command,
    "recipes": recipes_command,
    "data": data_command,
    "export": export_command,
}


def _cli(args: list[str] | None, **kwargs: Any) -> MM15CLI:
    """LightningCLI over ``args`` (``sys.argv`` when None), each ``--config`` resolved to a
    local file or a packaged recipe."""
    if args is None:
        sys.argv[1:] = with_packaged_recipes(sys.argv[1:])
    else:
        args = with_packaged_recipes(args)
    return MM15CLI(
        MM15Module,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        parser_kwargs={
            "parser_mode": PARSER_MODE,
            **{name: {"parser_mode": PARSER_MODE} for name in SUBCOMMANDS},
        },
        **kwargs,
    )


def build_from_config(config: str, *overrides: str) -> tuple[MM15Module, LightningDataModule]:
    """A recipe's model and data, built as ``mm15 fit --config CONFIG OVERRIDES...`` builds
    them (tokenizer and codec linked, the data given the model's image geometry), without
    training: for scripts and notebooks. The calling script's own command-line arguments are
    not read."""
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        cli = _cli(["--config", config, *overrides], run=False)
    finally:
        sys.argv = argv
    adopt = getattr(cli.datamodule, "adopt_geometry", None)
    if adopt is not None:
        adopt(cli.model.model)
    return cli.model, cli.datamodule


def missing_recipe(argv: list[str]) -> str | None:
    """What to do when a subcommand is given neither a ``--config`` nor ``--model`` or
    ``--data`` arguments (jsonargparse would only say ``required: fit.data, fit.model``);
    None when it is given one, or is not such a subcommand."""
    if not argv or argv[0] not in SUBCOMMANDS:
        return None
    given = {arg.split("=")[0].split(".")[0] for arg in argv[1:] if arg.startswith("-")}
    if given & {"-c", "--config", "--model", "--data", "-h", "--help"}:
        return None
    command = argv[0]
    return (
        f"mm15 {command} builds the model and data from a recipe: pass one with --config, "
        f"e.g. the quickstart, mm15 {command} --config recipes/quickstart.yaml "
        "(a local file of that path, else the packaged recipe). mm15 recipes lists the "
        "packaged recipes."
    )


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    problem = missing_recipe(argv)
    if problem is not None:
        raise SystemExit(f"error: {problem}")
    _cli(args, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
