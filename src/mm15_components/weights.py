"""MM15Model weights on disk: the one place that reads (and writes) them.

Three layouts hold the weights of an ``MM15Model``:

- a Lightning checkpoint file (``*.ckpt``): ``state_dict`` of ``MM15Module``, the model's keys
  under ``model.``;
- an FSDP2 distributed checkpoint directory, as ``ModelParallelStrategy`` saves it (a
  ``.metadata`` file and one shard file per rank): the same keys under ``state_dict.model.``;
- an exported model directory: ``model.safetensors`` holding ``MM15Model.state_dict()``
  (no prefix; of tied tensors, such as the LM's input and output embeddings, one copy).

``read_weights`` turns any of them into ``MM15Model`` state-dict keys; ``load_weights`` copies
them into a model and says what it did; ``save_weights`` writes the exported layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mm15_components.moe.convert import upcycle_experts
from mm15_components.moe.layer import MoEFeedForward
from mm15_components.vision.encoder import OpenCLIPVisionEncoder, interpolate_position_embedding

EXPORT_WEIGHTS = "model.safetensors"
"""File name of the weights in an exported model directory."""
MODULE_PREFIX = "model."
"""Where ``MM15Module`` keeps its ``MM15Model`` (``self.model``) in its state dict."""
DISTRIBUTED_PREFIX = "state_dict." + MODULE_PREFIX
"""The same, in a distributed checkpoint saved by Lightning's ``ModelParallelStrategy``."""
POSITION_EMBEDDING = "vision." + OpenCLIPVisionEncoder.POSITION_EMBEDDING


def read_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """The ``MM15Model`` state dict stored at ``path`` (any layout of the module docstring,
    or a bare ``.safetensors`` file), on the CPU."""
    path = Path(path)
    if path.is_dir():
        if (path / EXPORT_WEIGHTS).is_file():
            return load_file(path / EXPORT_WEIGHTS)
        if (path / ".metadata").is_file():
            return _read_distributed(path)
        raise FileNotFoundError(
            f"{path} is neither an exported model ({EXPORT_WEIGHTS} missing) nor a distributed "
            "checkpoint (.metadata missing)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.suffix == ".safetensors":
        return load_file(path)
    checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if state is None:
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    weights = {k[len(MODULE_PREFIX) :]: v for k, v in state.items() if k.startswith(MODULE_PREFIX)}
    if not weights:
        raise ValueError(f"{path} holds no '{MODULE_PREFIX}*' weights of an MM15Module")
    return weights


def _read_distributed(path: Path) -> dict[str, Tensor]:
    """The model's tensors of a distributed checkpoint, gathered whole in this process."""
    from torch.distributed.checkpoint import FileSystemReader, load
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = FileSystemReader(path)
    state = {
        key: torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in reader.read_metadata().state_dict_metadata.items()
        if key.startswith(DISTRIBUTED_PREFIX) and isinstance(meta, TensorStorageMetadata)
    }
    if not state:
        raise ValueError(f"{path} holds no '{DISTRIBUTED_PREFIX}*' weights of an MM15Module")
    load(state, storage_reader=reader, no_dist=True)
    return {key[len(DISTRIBUTED_PREFIX) :]: value for key, value in state.items()}


def save_weights(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write ``model.state_dict()`` (whole, not sharded) as ``directory/model.safetensors``;
    of a parameter held under several names (tied embeddings) the first is kept. Returns
    the file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    duplicates = set(dict(model.named_parameters(remove_duplicate=False))) - set(
        dict(model.named_parameters())
    )
    weights = {
        key: value.detach().contiguous().cpu()
        for key, value in model.state_dict().items()
        if key not in duplicates
    }
    file = directory / EXPORT_WEIGHTS
    save_file(weights, file, metadata={"format": "pt"})
    return file


@dataclass
class LoadReport:
    """What ``load_weights`` found and did, readable with ``str()``."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    upcycled: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    loaded: int = 0

    @property
    def fits(self) -> bool:
        """Every weight of the model came from the checkpoint (or its dense FFN), and every
        weight of the checkpoint went somewhere."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"{self.loaded} tensors loaded"]
        for title, keys in (
            ("in the model, not in the checkpoint (missing)", self.missing),
            ("in the checkpoint, not in the model (unexpected)", self.unexpected),
            ("of another shape (checkpoint vs model)", self.mismatched),
            ("position embeddings resampled to the encoder's grid", self.resized),
            ("MoE layers whose experts copy the checkpoint's dense FFN", self.upcycled),
            ("kept as initialised (no dense counterpart)", self.fresh),
        ):
            if keys:
                shown = keys if len(keys) <= 8 else [*keys[:8], f"... {len(keys) - 8} more"]
                lines.append(f"{len(keys)} {title}:\n  " + "\n  ".join(shown))
        return "\n".join(lines)


def load_weights(model: nn.Module, weights: dict[str, Tensor], strict: bool = True) -> LoadReport:
    """Copy ``weights`` (``MM15Model`` state-dict keys) into ``model``, in place.

    Two differences are bridged, and reported: a vision position embedding of another patch
    grid is resampled to the encoder's (e.g. 378 px pre-training into a 672 px stage), and an
    MoE layer whose checkpoint holds a dense FFN gets that FFN in every expert (sparse
    upcycling; its router keeps its initialisation). Anything else that does not fit is
    reported; with ``strict`` nothing is loaded then and ``ValueError`` says what differs.
    """
    weights = dict(weights)
    own = model.state_dict()
    report = LoadReport()
    _resample_position_embedding(model, weights, own, report)
    upcycle = _dense_ffns_for_experts(model, weights, own, report)
    covered = {key for name in upcycle for key in own if key.startswith(name + ".")}
    tied = _tied_keys(model)
    for key, value in weights.items():
        if key not in own:
            report.unexpected.append(key)
        elif value.shape != own[key].shape:
            report.mismatched.append(f"{key}: {list(value.shape)} vs {list(own[key].shape)}")
    present = set(weights)
    report.missing = [
        key
        for key in own
        if key not in present and key not in covered and not tied.get(key, set()) & present
    ]
    if strict and not report.fits:
        raise ValueError(
            "the checkpoint does not fit this model (another architecture, vocabulary or "
            f"image size?):\n{report}"
        )
    for name, (gate, up, down) in upcycle.items():
        upcycle_experts(model.get_submodule(name), gate, up, down)
    usable = {
        key: value for key, value in weights.items() if key in own and value.shape == own[key].shape
    }
    model.load_state_dict(usable, strict=False)
    report.loaded = len(usable)
    return report


def _resample_position_embedding(
    model: nn.Module, weights: dict[str, Tensor], own: dict[str, Tensor], report: LoadReport
) -> None:
    stored, wanted = weights.get(POSITION_EMBEDDING), own.get(POSITION_EMBEDDING)
    if stored is None or wanted is None or stored.shape == wanted.shape:
        return
    if stored.shape[1:] != wanted.shape[1:]:
        return  # another width: reported as a mismatch
    side = model.vision.grid_size[0]
    old = int((stored.shape[0] - 1) ** 0.5)
    weights[POSITION_EMBEDDING] = interpolate_position_embedding(stored, side)
    report.resized.append(f"{POSITION_EMBEDDING}: {old}x{old} -> {side}x{side} patches")


def _dense_ffns_for_experts(
    model: nn.Module, weights: dict[str, Tensor], own: dict[str, Tensor], report: LoadReport
) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """``{moe layer: (gate, up, down)}`` of the MoE layers whose checkpoint entry is a dense
    SwiGLU FFN; those dense weights leave ``weights``."""
    found = {}
    for name, module in model.named_modules():
        dense = [f"{name}.{proj}.weight" for proj in ("gate_proj", "up_proj", "down_proj")]
        if isinstance(module, MoEFeedForward) and all(key in weights for key in dense):
            found[name] = tuple(weights.pop(key) for key in dense)
            report.upcycled.append(name)
            experts = {f"{name}.gate_up_proj", f"{name}.down_proj"}
            report.fresh += [k for k in own if k.startswith(name + ".") and k not in experts]
    return found


def _tied_keys(model: nn.Module) -> dict[str, set[str]]:
    """Each name of a parameter the model holds under several names -> the other names."""
    names: dict[int, set[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), set()).add(name)
    return {key: group - {key} for group in names.values() if len(group) > 1 for key in group}


def load_weights_from(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> LoadReport:
    """``load_weights(model, read_weights(path), strict)``, naming ``path`` in its errors."""
    try:
        return load_weights(model, read_weights(path), strict)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
