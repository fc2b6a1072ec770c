"""How an MM15Model runs at scale: activation checkpointing, FSDP2 sharding, mixed precision.

One place for what the training loop does to the model before its first step, applied by
``MM15Module.configure_model`` (Lightning calls it once the device mesh is known). The
model's weights stay fp32 (the master copy the optimizer updates); bf16 is a compute dtype.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointWrapper,
    checkpoint_wrapper,
)
from torch.distributed.device_mesh import DeviceMesh
from torch.nn.attention import SDPBackend, sdpa_kernel

from mm15_components.model import MM15Model

_SDPA_SWITCHES = {
    SDPBackend.FLASH_ATTENTION: torch.backends.cuda.flash_sdp_enabled,
    SDPBackend.EFFICIENT_ATTENTION: torch.backends.cuda.mem_efficient_sdp_enabled,
    SDPBackend.CUDNN_ATTENTION: torch.backends.cuda.cudnn_sdp_enabled,
    SDPBackend.MATH: torch.backends.cuda.math_sdp_enabled,
}


def parallelize(
    model: MM15Model,
    mesh: DeviceMesh | None = None,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype = torch.float32,
    activation_checkpointing: bool = False,
) -> None:
    """Prepare ``model`` for training, in place; calling it again changes nothing.

    Args:
        mesh: the data-parallel mesh to shard over with FSDP2; None leaves the model whole.
        param_dtype: the dtype FSDP2 gathers parameters in for compute (``bf16`` for
            ``bf16-mixed``); the sharded fp32 parameters stay the optimizer's master copy.
        reduce_dtype: the dtype gradients are reduced in across ranks.
        activation_checkpointing: keep only each vision block's and decoder layer's input
            in forward and recompute the rest in backward.
    """
    units = sharding_units(model)
    if activation_checkpointing:
        units = apply_activation_checkpointing(model, units)
    if mesh is not None:
        shard(model, units, mesh, param_dtype, reduce_dtype)


def sharding_units(model: MM15Model) -> list[nn.Module]:
    """The repeated blocks: every vision block and every decoder layer (found through
    transformers' ``_no_split_modules``). Each is one activation-checkpointing region and
    one FSDP2 unit."""
    return [*model.vision.blocks, *model.language.layers]


def apply_activation_checkpointing(model: nn.Module, units: list[nn.Module]) -> list[nn.Module]:
    """Wrap each unit in a non-reentrant checkpoint, in place; returns the wrappers.

    The recompute in backward runs under the scaled-dot-product-attention kernels that were
    active in forward (``MM15Model.forward`` may pick the math kernel, and backward runs
    outside that context): a different kernel saves different tensors, and torch then
    refuses the recomputed graph (``CheckpointError``). Autocast is restored by torch itself.
    """
    existing = [m for m in model.modules() if isinstance(m, CheckpointWrapper)]
    if existing:
        return existing
    wrapped = []
    for name, module in list(model.named_modules()):
        if any(module is unit for unit in units):
            wrapper = checkpoint_wrapper(module, context_fn=_recompute_with_same_attention)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, wrapper)
            wrapped.append(wrapper)
    return wrapped


def _recompute_with_same_attention() -> tuple[contextlib.AbstractContextManager, ...]:
    enabled = [backend for backend, is_on in _SDPA_SWITCHES.items() if is_on()]
    return contextlib.nullcontext(), sdpa_kernel(enabled)


def shard(
    model: MM15Model,
    units: list[nn.Module],
    mesh: DeviceMesh,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype = torch.float32,
) -> None:
    """FSDP2: one unit per block, one for the connector, the rest (patch embedding,
    embeddings, LM head) in the root unit, which gathers at ``MM15Model.forward`` and
    ``generate``. Gradients reach the fp32 shards in ``reduce_dtype``."""
    from torch.distributed.fsdp import (
        FSDPModule,
        MixedPrecisionPolicy,
        fully_shard,
        register_fsdp_forward_method,
    )

    if isinstance(model, FSDPModule):
        return
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    for unit in [*units, model.connector]:
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    register_fsdp_forward_method(model, "generate")
