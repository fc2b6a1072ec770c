"""The ``mm15`` command: LightningCLI over MM15Module and any LightningDataModule."""

from __future__ import annotations

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from mm15_components.module import MM15Module


class MM15CLI(LightningCLI):
    """``mm15 fit|validate|test|predict --config recipes/X.yaml``.

    Model and data are chosen by ``class_path`` (subclass mode), so a downstream subclass of any
    component plugs in from YAML. The data's tokenizer is handed to the model when both are
    built, which sizes the vocabulary and learns the special-token ids.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.tokenizer", "model.init_args.tokenizer", apply_on="instantiate")


def main(args: list[str] | None = None) -> None:
    MM15CLI(
        MM15Module,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
