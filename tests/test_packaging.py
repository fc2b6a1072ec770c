"""Recipes ship inside the package: ``--config recipes/NAME.yaml`` resolves from any directory,
and a wheel built from this tree trains from an empty directory."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mm15_components.cli import main
from mm15_components.recipe_files import RECIPES_DIR, with_packaged_recipes

REPO = Path(__file__).parents[1]
REPO_RECIPES = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "recipes").rglob("*.yaml"))


def test_config_resolves_to_a_local_file_first_then_the_packaged_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", "recipes/video.yaml", "-c=models/tiny.yaml", "--config", "my.yaml"]
    packaged = ["fit", "--config", str(RECIPES_DIR / "video.yaml"),
                f"-c={RECIPES_DIR / 'models/tiny.yaml'}", "--config", "my.yaml"]  # fmt: skip
    assert with_packaged_recipes(args) == packaged  # my.yaml: neither, left for the parser

    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes/video.yaml").write_text("seed_everything: 1\n")
    assert with_packaged_recipes(args)[2] == "recipes/video.yaml"  # the local copy wins
    # a path outside the packaged folder is never read from it
    assert with_packaged_recipes(["--config", "../pyproject.toml"])[1] == "../pyproject.toml"


def test_recipes_command_lists_every_recipe_and_copies_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["recipes"])
    listed = [line.strip() for line in capsys.readouterr().out.splitlines()[1:]]
    assert listed == REPO_RECIPES

    main(["recipes", "copy", "models/tiny.yaml"])
    copy = tmp_path / "recipes/models/tiny.yaml"
    assert capsys.readouterr().out.strip() == "recipes/models/tiny.yaml"
    assert copy.read_bytes() == (REPO / "recipes/models/tiny.yaml").read_bytes()
    with pytest.raises(SystemExit, match="exists"):
        main(["recipes", "copy", "models/tiny.yaml"])
    (tmp_path / "mine").mkdir()
    main(["recipes", "copy", "recipes/video.yaml", "mine"])
    assert (tmp_path / "mine/video.yaml").read_bytes() == (REPO / "recipes/video.yaml").read_bytes()
    with pytest.raises(SystemExit, match="no packaged recipe 'nope'"):
        main(["recipes", "copy", "nope"])


@pytest.mark.slow
def test_wheel_holds_the_recipes_and_trains_from_an_empty_directory(tmp_path):
    """Build the wheel from a copy of this tree, install it without dependencies (they are the
    test environment's), and run a packaged recipe where no recipes/ folder exists."""
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "src", source / "src", symlinks=True, ignore=ignore)
    shutil.copytree(REPO / "recipes", source / "recipes")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "-q"]
    wheels = tmp_path / "wheels"
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)]
    subprocess.run(build, check=True)
    (wheel,) = wheels.glob("*.whl")
    packed = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".yaml")}
    assert packed == {f"mm15_components/{name}" for name in REPO_RECIPES}

    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    run_dir = tmp_path / "empty"
    run_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "mm15_components", "fit", "--config=recipes/quickstart.yaml",
               "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
               "--trainer.enable_progress_bar=false", "--data.init_args.loader.batch_size=4",
               "--data.init_args.val_samples=4"]  # fmt: skip
    result = subprocess.run(command, cwd=run_dir, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    installed = site / "mm15_components/recipes/quickstart.yaml"
    assert f"the packaged recipe {installed}" in result.stdout + result.stderr
    assert list(run_dir.glob("runs/quickstart/**/last.ckpt"))
