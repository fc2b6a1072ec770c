"""Initial embeddings for coordinate tokens that already know which bins are neighbours."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from mm15_components.grounding.codec import BoxCodec


def coordinate_token_ids(tokenizer: PreTrainedTokenizerBase, codec: BoxCodec) -> list[int] | None:
    """Token id of each bin value ``0..bins-1`` when every value is one token, else None.

    That holds for dedicated ``<coord_k>`` tokens and for word-level vocabularies with whole
    numbers; BPE tokenizers split numbers into digits, which this does not apply to.
    """
    texts = codec.coordinate_tokens() or [str(v) for v in range(codec.bins)]
    ids = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    if any(len(i) != 1 for i in ids) or tokenizer.unk_token_id in [i[0] for i in ids]:
        return None
    return [i[0] for i in ids]


@torch.no_grad()
def init_sinusoidal(weight: torch.Tensor, token_ids: Sequence[int]) -> None:
    """Set row ``token_ids[v]`` of ``weight`` to a sinusoidal encoding of ``v``.

    Dot products of such rows depend only on ``|v - v'|`` and fall off smoothly, so with a tied
    LM head a hidden state that scores bin v high also scores its neighbours high: a model
    trained from scratch localises coarsely before it learns the exact bin, instead of
    collapsing onto one average box. Rows keep the mean norm of the other rows.
    """
    dim = weight.shape[1]
    values = torch.arange(len(token_ids), dtype=torch.float32)[:, None]
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    angles = values * freqs
    rows = torch.zeros(len(token_ids), dim)
    rows[:, 0::2] = torch.sin(angles)
    rows[:, 1::2] = torch.cos(angles[:, : dim // 2])
    norm = weight.float().norm(dim=1).mean()
    rows *= norm / rows.norm(dim=1, keepdim=True)
    weight[torch.tensor(list(token_ids))] = rows.to(weight.dtype)
