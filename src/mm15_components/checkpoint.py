"""Training state that survives a kill: ``last.ckpt`` kept at a regular interval of steps and
of time, written atomically, and saved on SIGTERM/SIGINT before the process exits non-zero.

``weights.py`` reads and writes model weights; this module keeps the whole training state
(weights, optimizer, schedule, loop and data positions) that ``--ckpt_path`` resumes.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

PARTIAL = ".partial"
"""Suffix of a checkpoint being written (``.NAME.partial`` beside ``NAME``)."""
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def partial_path(path: Path) -> Path:
    """Where ``path`` is written before it is renamed into place: the same folder, so the
    rename is atomic; a fixed name, so a write cut short is replaced by the next one."""
    return path.with_name(f".{path.name}{PARTIAL}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes a local checkpoint to ``partial_path`` in its own
    folder and renames it into place (``os.replace``): a reader sees the previous file or the
    new one, whole. (The default writes through a temporary file in the system's temporary
    folder and moves it, a copy when that is another file system.) Remote paths are written
    as before."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_path(path)
        try:
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise


class LastCheckpoint(Callback):
    """Keeps ``DIRPATH/last.ckpt``, the full training state that ``--ckpt_path`` resumes.

    It is saved after every ``every_n_train_steps``-th optimizer step, after the first step
    that ends ``every_n_minutes`` after the previous save, at the end of training, and on
    SIGTERM or SIGINT: training stops after the optimizer step in progress (with gradient
    accumulation, at the end of the accumulation), saves, and exits with status 128 +
    signal (143, 130). A second signal of the same kind stops at once. A signal during
    validation takes effect at the next optimizer step.

    The file is written atomically (``AtomicCheckpointIO``; a sharded checkpoint folder is
    written beside and swapped in), so a kill at any moment leaves the previous
    ``last.ckpt`` or the new one, and a write cut short leaves ``.last.ckpt.partial``, which
    the next save replaces and the next run removes. The mm15 command adds this callback to
    every ``fit`` (options under ``last_checkpoint:``).

    Args:
        dirpath: the folder; None: ``<trainer.default_root_dir>/checkpoints``, the same for
            every run in that root (a run resumed after preemption finds it at the same path).
        every_n_train_steps: steps between saves (None or 0: no step interval).
        every_n_minutes: minutes between saves (None or 0: no time interval).
        filename: the checkpoint's file name.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        every_n_train_steps: int | None = 25,
        every_n_minutes: float | None = 30.0,
        filename: str = "last.ckpt",
    ) -> None:
        self.dirpath = dirpath
        self.every_n_train_steps = every_n_train_steps or 0
        self.every_n_minutes = every_n_minutes or 0.0
        self.filename = filename
        self._signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._saved_step = -1
        self._saved_time = 0.0
        self._step_seen = 0

    @property
    def path(self) -> Path:
        if self.dirpath is None:
            raise RuntimeError("LastCheckpoint.path is known once the trainer has set it up")
        return Path(self.dirpath) / self.filename

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
        self.dirpath = trainer.strategy.broadcast(self.dirpath)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.is_global_zero:
            _recover(self.path)
        trainer.strategy.barrier()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._step_seen = self._saved_step = trainer.global_step
        self._saved_time = time.monotonic()
        self._signal = None
        if threading.current_thread() is not threading.main_thread():
            return  # Python takes signal handlers in the main thread only
        for signum in STOP_SIGNALS:  # replaces Lightning's SIGTERM handler for the run
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._signal == signum:  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self._signal = signum
        rank_zero_info(
            f"{signal.Signals(signum).name}: saving {self.path} after this step, then exiting"
        )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if trainer.global_step == self._step_seen:
            return  # inside a gradient accumulation: no optimizer step yet
        self._step_seen = trainer.global_step
        strategy = trainer.strategy
        signalled = strategy.reduce_boolean_decision(self._signal is not None, all=False)
        due = bool(self.every_n_train_steps) and not (
            trainer.global_step % self.every_n_train_steps
        )
        if self.every_n_minutes:
            late = time.monotonic() - self._saved_time >= 60 * self.every_n_minutes
            due = due or strategy.broadcast(late)
        if due or signalled:
            self.save(trainer)
        if signalled:
            signum = self._signal or signal.SIGTERM
            raise SystemExit(128 + signum)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer)
        self._restore_handlers()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()

    def save(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` at the current step (once per step)."""
        if self._saved_step == trainer.global_step and self.path.exists():
            return
        path = self.path
        if _saves_folder(trainer):
            _save_folder(trainer, path)
        else:
            trainer.save_checkpoint(path, weights_only=False)  # the whole state
        self._saved_step, self._saved_time = trainer.global_step, time.monotonic()

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            if signal.getsignal(signum) == self._on_signal:
                signal.signal(signum, handler)
        self._previous_handlers.clear()


def _saves_folder(trainer: pl.Trainer) -> bool:
    """Whether the strategy writes a checkpoint as a folder of shards."""
    strategy = trainer.strategy
    return bool(
        getattr(strategy, "_save_distributed_checkpoint", False)
        or getattr(strategy, "_state_dict_type", None) == "sharded"
    )


def _save_folder(trainer: pl.Trainer, path: Path) -> None:
    """A sharded checkpoint written by every rank to ``partial_path`` and swapped in: the old
    folder is renamed aside, the new one into place, the old one removed."""
    partial = partial_path(path)
    if trainer.is_global_zero:
        _remove(partial)
    trainer.strategy.barrier()
    trainer.save_checkpoint(partial, weights_only=False)
    if trainer.is_global_zero:
        old = _old_path(path)
        _remove(old)
        if path.exists():
            os.replace(path, old)
        os.replace(partial, path)
        _remove(old)
    trainer.strategy.barrier()


def _old_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def _recover(path: Path) -> None:
    """Undo what a save killed midway left: a partial write is removed; a sharded folder
    renamed aside but not yet replaced is put back."""
    _remove(partial_path(path))
    old = _old_path(path)
    if old.exists() and not path.exists():
        os.replace(old, path)
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
