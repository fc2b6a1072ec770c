"""last.ckpt survives a kill: real ``mm15 fit`` processes are killed (SIGKILL during a step and
during a save, SIGTERM) and resumed, and the resumed run reaches the weights of a run that
never stopped."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mm15_components.checkpoint import AtomicCheckpointIO, partial_path

QUICKSTART = Path(__file__).parents[1] / "recipes" / "quickstart.yaml"
END = 8
"""Steps of the reference run and of every resumed run."""
MODEL = "--model.init_args.model.init_args"


def fit_args(root: Path, max_steps: int, every: int) -> list[str]:
    """The quickstart recipe shrunk (a 2-layer LM of width 64, 32 px images, batches of 2, fp32),
    without validation or logger; the schedule is fixed so that runs of any ``max_steps`` take
    the same steps."""
    return [
        "fit",
        f"--config={QUICKSTART}",
        "--trainer.callbacks=[]",
        "--trainer.enable_checkpointing=false",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.limit_val_batches=0",
        f"--trainer.max_steps={max_steps}",
        f"--trainer.default_root_dir={root}",
        "--trainer.precision=32-true",
        f"{MODEL}.language.init_args.config.hidden_size=64",
        f"{MODEL}.language.init_args.config.intermediate_size=128",
        f"{MODEL}.language.init_args.config.num_hidden_layers=2",
        f"{MODEL}.vision.init_args.image_size=32",
        "--data.init_args.encoding.image_size=32",
        "--data.init_args.encoding.image_tokens=16",
        "--data.init_args.train_samples=24",
        "--data.init_args.loader.batch_size=2",
        "--data.init_args.loader.num_workers=0",
        "--model.init_args.lr_scheduler.init_args.total_steps=12",
        "--model.init_args.lr_scheduler.init_args.warmup_steps=2",
        f"--last_checkpoint.every_n_train_steps={every}",
    ]


def last(root: Path) -> Path:
    return root / "checkpoints" / "last.ckpt"


def command(args: list[str]) -> list[str]:
    """``mm15 ARGS`` in a process of its own, as a user runs it: every run compared here
    starts from the same fresh process state."""
    return [sys.executable, "-m", "mm15_components", *args]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def fit_to_end(root: Path, resume: bool = False) -> dict:
    """``mm15 fit`` to step ``END`` (resumed from ``last.ckpt``), and its last checkpoint."""
    args = fit_args(root, END, every=0)
    args += [f"--ckpt_path={last(root)}"] if resume else []
    run = subprocess.run(command(args), env=ENV, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return torch.load(last(root), weights_only=False)


def start(root: Path, every: int) -> subprocess.Popen:
    """``mm15 fit`` in a process of its own, running far past ``END``."""
    root.mkdir()
    with open(root / "log.txt", "wb") as log:  # the child writes to its own copy
        return subprocess.Popen(
            command(fit_args(root, 1000, every)), env=ENV, stdout=log, stderr=subprocess.STDOUT
        )


def wait_for_step(process: subprocess.Popen, root: Path, step: int, timeout: float = 240) -> int:
    """Wait until ``last.ckpt`` holds step ``step`` or later; its step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, (root / "log.txt").read_text()
        if last(root).exists():
            saved = torch.load(last(root), weights_only=False)["global_step"]
            if saved >= step:
                return saved
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"no checkpoint of step {step} in {timeout} s")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    return fit_to_end(tmp_path_factory.mktemp("straight"))


def assert_same_weights(actual: dict, expected: dict) -> None:
    assert actual["global_step"] == expected["global_step"] == END
    assert actual["state_dict"].keys() == expected["state_dict"].keys()
    for name, value in expected["state_dict"].items():
        torch.testing.assert_close(actual["state_dict"][name], value, rtol=0, atol=0, msg=name)


@pytest.mark.slow
def test_sigkill_during_a_step_resumes_exactly(tmp_path, reference):
    process = start(tmp_path / "run", every=2)
    wait_for_step(process, tmp_path / "run", 2)
    time.sleep(random.uniform(0, 0.05))
    process.kill()
    assert process.wait() == -signal.SIGKILL
    saved = torch.load(last(tmp_path / "run"), weights_only=False)["global_step"]
    assert 2 <= saved < END
    assert_same_weights(fit_to_end(tmp_path / "run", resume=True), reference)


@pytest.mark.slow
def test_sigkill_during_a_save_keeps_the_previous_checkpoint(tmp_path, reference):
    root = tmp_path / "run"
    process = start(root, every=1)
    wait_for_step(process, root, 1)
    partial = partial_path(last(root))
    while True:  # catch a save in the act: freeze the process while its partial file exists
        assert process.poll() is None, (root / "log.txt").read_text()
        if partial.exists():
            process.send_signal(signal.SIGSTOP)
            if partial.exists():
                break
            process.send_signal(signal.SIGCONT)
    before = torch.load(last(root), weights_only=False)["global_step"]
    process.kill()
    process.wait()
    assert partial.exists()  # the cut write is left; last.ckpt is the previous one, whole
    assert torch.load(last(root), weights_only=False)["global_step"] == before < END
    assert_same_weights(fit_to_end(root, resume=True), reference)
    assert not partial.exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_saves_the_current_step_and_exits_nonzero(tmp_path, reference, signum):
    root = tmp_path / "run"
    process = start(root, every=3)
    first = wait_for_step(process, root, 3)
    process.send_signal(signum)
    assert process.wait(timeout=120) == 128 + signum, (root / "log.txt").read_text()
    saved = torch.load(last(root), weights_only=False)["global_step"]
    assert first < saved < END  # saved at the step the signal found, not the periodic one
    assert not partial_path(last(root)).exists()
    if signum == signal.SIGTERM:  # the same code path: resuming once is enough
        assert_same_weights(fit_to_end(root, resume=True), reference)


def test_atomic_write_keeps_the_old_file_when_a_save_fails(tmp_path):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        io.save_checkpoint({"step": 2, "bad": Unpicklable()}, path)
    assert torch.load(path) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
