"""The ``mm15`` command: LightningCLI over MM15Module and any LightningDataModule."""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from mm15_components.module import MM15Module


class MM15CLI(LightningCLI):
    """``mm15 fit|validate|test|predict --config recipes/X.yaml``.

    Model and data are chosen by ``class_path`` (subclass mode), so a downstream subclass of any
    component plugs in from YAML. The data's tokenizer is handed to the model when both are
    built, which sizes the vocabulary and learns the special-token ids, and so is its box
    codec, so answers are read with the convention they were written in.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in ("tokenizer", "codec"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")


def inspect_command(args: list[str]) -> None:
    """``mm15 inspect IMAGE``: the splitter's plan for one image, and a PNG of its tiles."""
    from jsonargparse import ArgumentParser

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


def _cli(args: list[str] | None, **kwargs: Any) -> MM15CLI:
    return MM15CLI(
        MM15Module,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        **kwargs,
    )


def build_from_config(config: str, *overrides: str) -> tuple[MM15Module, LightningDataModule]:
    """A recipe's model and data, built as ``mm15 fit --config CONFIG OVERRIDES...`` builds
    them (tokenizer and codec linked), without training: for scripts and notebooks. The
    calling script's own command-line arguments are not read."""
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        cli = _cli(["--config", config, *overrides], run=False)
    finally:
        sys.argv = argv
    return cli.model, cli.datamodule


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else args
    if argv[:1] == ["inspect"]:
        return inspect_command(argv[1:])
    if argv[:2] == ["data", "optimize"]:
        from mm15_components.data.stream import optimize_command

        return optimize_command(argv[2:])
    _cli(args, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
