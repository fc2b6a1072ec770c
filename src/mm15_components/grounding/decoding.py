"""Constrained box decoding: once a box has started, only tokens that continue it are allowed.

A model that writes boxes as text can still emit a box that does not parse (``[12, 40, 7``,
``<coord_3><coord_9>`` and then a word), which grounding metrics score as a miss whatever the
model knew. :class:`BoxLogitsProcessor` masks the logits inside a box so that the box is always
completed in the codec's grammar; outside boxes the logits are left untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from mm15_components.grounding.codec import BoxCodec
from mm15_components.grounding.embeddings import coordinate_token_ids

COORDINATE = -1
"""Grammar slot that takes any coordinate token (the others take one fixed token id)."""


class BoxLogitsProcessor(LogitsProcessor):
    """A transformers ``LogitsProcessor`` that makes every box the model starts parse.

    Where a box starts and what follows:

    - ``tokens`` style: any coordinate token starts a box; the next three tokens must be
      coordinate tokens too (``x1, y1, x2, y2``). A fifth coordinate token starts the next box.
    - ``text`` style: ``"["`` starts a box; then ``num "," num "," num "," num "]"``, each
      ``num`` one coordinate token (the tokenizer must write every value ``0..bins-1`` as one
      token, as the word tokenizer of the synthetic data does).

    The end-of-sequence token is masked inside a box too. A box cut off by the token budget
    (``max_new_tokens``) stays unfinished. Point answers (two coordinates) are not supported:
    every coordinate run is completed to a box.

    Each row's state is read from its own tokens at every step (the open box is found by
    looking back from the last token), nothing is carried between calls: batched,
    left-padded, sampled and beam-search generation all work, and the same processor serves
    any number of ``generate`` calls.

    Args:
        tokenizer: the tokenizer the model writes with.
        codec: the box codec; its style and bins define the grammar.
        ordered: for ``x2`` and ``y2``, also mask the values below ``x1`` and ``y1``, so boxes
            come out ordered (the codec orders corners when decoding anyway).

    Raises:
        ValueError: the tokenizer does not write every coordinate value as one token (it
            splits numbers into digits, or lacks the ``<coord_k>`` tokens), or, in the text
            style, writes ``[``, ``,`` or ``]`` as more than one token.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, codec: BoxCodec, ordered: bool = True
    ) -> None:
        ids = coordinate_token_ids(tokenizer, codec)
        if ids is None:
            fix = (
                "add codec.coordinate_tokens() to the tokenizer"
                if codec.style == "tokens"
                else "use BoxCodec(style='tokens') and add its coordinate tokens to the tokenizer"
            )
            raise ValueError(
                f"BoxLogitsProcessor: the tokenizer does not write every coordinate value "
                f"0..{codec.bins - 1} of {codec!r} as one token (it splits numbers into "
                f"digits, or lacks the coordinate tokens); constrained decoding needs one "
                f"token per value: {fix}"
            )
        self.codec = codec
        self.ordered = ordered
        self.coordinate_ids = torch.tensor(ids)
        self.values = {token_id: value for value, token_id in enumerate(ids)}
        if codec.style == "tokens":
            self.grammar = [COORDINATE] * 4
        else:
            opening, comma, closing = (_single_token(tokenizer, text) for text in "[,]")
            self.grammar = [opening]
            for _ in range(3):
                self.grammar += [COORDINATE, comma]
            self.grammar += [COORDINATE, closing]

    def open_box(self, tokens: Sequence[int]) -> list[int]:
        """The tokens of the box still open at the end of ``tokens``; empty outside a box."""
        if self.codec.style == "tokens":
            run = 0
            while run < len(tokens) and tokens[-1 - run] in self.values:
                run += 1
            return list(tokens[len(tokens) - run % 4 :]) if run % 4 else []
        for start in range(len(tokens) - 1, max(len(tokens) - len(self.grammar), -1), -1):
            if tokens[start] == self.grammar[0]:
                box = list(tokens[start:])
                return box if all(map(self._fits, self.grammar, box)) else []
        return []

    def allowed_tokens(self, tokens: Sequence[int]) -> torch.Tensor | None:
        """Token ids that may follow ``tokens``; None when any token may (outside a box)."""
        box = self.open_box(tokens)
        if not box:
            return None
        slot = self.grammar[len(box)]
        if slot != COORDINATE:
            return torch.tensor([slot])
        values = [
            self.values[t] for t, s in zip(box, self.grammar, strict=False) if s == COORDINATE
        ]
        # x2 and y2 are the third and fourth coordinates; they start at x1 and y1.
        lowest = values[len(values) - 2] if self.ordered and len(values) >= 2 else 0
        return self.coordinate_ids[lowest:]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        blocked = None
        for row, tokens in enumerate(input_ids.tolist()):
            allowed = self.allowed_tokens(tokens)
            if allowed is None:
                continue
            if blocked is None:
                blocked = torch.zeros_like(scores, dtype=torch.bool)
            blocked[row] = True
            blocked[row, allowed.to(scores.device)] = False
        return scores if blocked is None else scores.masked_fill(blocked, float("-inf"))

    def _fits(self, slot: int, token: int) -> bool:
        return token in self.values if slot == COORDINATE else token == slot


def _single_token(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ValueError(
            f"BoxLogitsProcessor: the text style needs {text!r} to be one token, but the "
            f"tokenizer writes it as {ids}"
        )
    return ids[0]
