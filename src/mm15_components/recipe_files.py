"""The recipes shipped inside the package, so ``--config recipes/NAME.yaml`` runs from any
directory after ``pip install``.

The wheel holds the repository's ``recipes/`` folder as ``mm15_components/recipes/`` (in the
source tree that path is a link to ``recipes/``, so an editable install reads the same files).
A ``--config`` path that names a local file is read as it is; one that does not, but names a
packaged recipe (with or without the leading ``recipes/``), is read from the package.
``mm15 recipes`` lists them and ``mm15 recipes copy NAME`` writes a copy to edit.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_info

RECIPES_DIR = Path(__file__).parent / "recipes"
CONFIG_FLAGS = ("--config", "-c")


def packaged_recipes() -> list[str]:
    """Every packaged recipe, named by its path under ``recipes/`` (``models/tiny.yaml``)."""
    return sorted(path.relative_to(RECIPES_DIR).as_posix() for path in RECIPES_DIR.rglob("*.yaml"))


def packaged_recipe(name: str) -> Path | None:
    """The packaged file of a recipe named ``recipes/video.yaml``, ``video.yaml`` or ``video``."""
    name = name.removeprefix("recipes/")
    if not name.endswith(".yaml"):
        name += ".yaml"
    path = RECIPES_DIR / name
    inside = path.resolve().is_relative_to(RECIPES_DIR.resolve())
    return path if inside and path.is_file() else None


def resolve_config(path: str) -> str:
    """A local file of that path wins; else the packaged recipe of that name; else the path as
    given, for the parser to report. The log says which file a recipe name was read from."""
    packaged = packaged_recipe(path)
    if packaged is None:
        return path
    if Path(path).is_file():
        if not Path(path).samefile(packaged):  # in a clone they are one file
            rank_zero_info(f"--config {path}: the local file, not the packaged recipe")
        return path
    rank_zero_info(f"--config {path}: the packaged recipe {packaged}")
    return str(packaged)


def with_packaged_recipes(args: list[str]) -> list[str]:
    """Command-line arguments with every ``--config``/``-c`` value resolved by
    :func:`resolve_config`."""
    resolved = list(args)
    for i, arg in enumerate(resolved):
        flag, equals, value = arg.partition("=")
        if flag not in CONFIG_FLAGS:
            continue
        if equals:
            resolved[i] = f"{flag}={resolve_config(value)}"
        elif i + 1 < len(resolved):
            resolved[i + 1] = resolve_config(resolved[i + 1])
    return resolved


def copy_recipe(name: str, dest: str | None = None) -> Path:
    """Write the packaged recipe ``name`` to ``dest`` (default ``recipes/<name>`` here, which
    ``--config recipes/<name>`` then reads instead of the packaged one). A directory ``dest``
    receives the file under its own name; an existing file is not overwritten."""
    source = packaged_recipe(name)
    if source is None:
        raise SystemExit(
            f"mm15 recipes copy: no packaged recipe {name!r}; `mm15 recipes` lists them"
        )
    target = Path(dest) if dest else Path("recipes") / source.relative_to(RECIPES_DIR)
    if target.is_dir():
        target = target / source.name
    if target.exists():
        raise SystemExit(f"mm15 recipes copy: {target} exists; give another DEST")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def recipes_command(args: list[str]) -> None:
    """``mm15 recipes``: list the packaged recipes; ``mm15 recipes copy NAME [DEST]``: write
    an editable copy of one."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="mm15 recipes", description=recipes_command.__doc__)
    commands = parser.add_subcommands(required=False)
    copy = ArgumentParser(description=copy_recipe.__doc__)
    copy.add_argument("name", type=str, help="a recipe as `mm15 recipes` lists it")
    copy.add_argument("dest", type=str | None, nargs="?", default=None, help="file or folder")
    commands.add_subcommand("copy", copy)
    config = parser.parse_args(args)
    if config.get("subcommand") == "copy":
        print(copy_recipe(config.copy.name, config.copy.dest))
        return
    print(f"packaged recipes ({RECIPES_DIR}):")
    for name in packaged_recipes():
        print(f"  recipes/{name}")
