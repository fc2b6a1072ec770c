"""Conversations to token ids: chat templates (plain, or the tokenizer's own), answer-only
labels, image expansion."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from transformers import PreTrainedTokenizerBase

from mm15_components.labels import IGNORE_INDEX
from mm15_components.language.tokenizer import IMAGE_TOKEN

if TYPE_CHECKING:  # data.schema -> data/__init__ -> collate -> chat would be circular
    from mm15_components.data.schema import Turn


@dataclass(frozen=True)
class EncodedConversation:
    """Token ids of one conversation; ``labels`` hold ``IGNORE_INDEX`` outside answers.

    ``prompt_length`` is where the last answer starts: ``input_ids[:prompt_length]`` is the
    prompt that generation continues from.
    """

    input_ids: list[int]
    labels: list[int]
    prompt_length: int


@dataclass(frozen=True)
class Segment:
    """A piece of a conversation's text that is tokenised on its own: a conversation's ids are
    its segments' ids, one after the other. ``answer`` pieces carry the loss; ``end_token``
    adds the tokenizer's end-of-sequence id after the piece's ids (part of the answer)."""

    text: str
    answer: bool = False
    end_token: bool = False


class ConversationTemplate(ABC):
    """Writes a conversation as token ids with answer-only labels; subclasses choose how the
    text is cut into segments (``segments``)."""

    def encode(
        self,
        tokenizer: PreTrainedTokenizerBase,
        turns: Sequence[Turn],
        image_tokens: Sequence[Sequence[int]],
        where: str = "sample",
    ) -> EncodedConversation:
        """Tokenise ``turns`` and replace the k-th ``<image>`` by the ids ``image_tokens[k]``
        (its image tokens, and any tile indicators between them). ``where`` names the sample
        in error messages."""
        input_ids, labels, prompt_length = self.text_ids(tokenizer, turns, where)
        image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        input_ids, labels, prompt_length = expand_image_tokens(
            input_ids, labels, prompt_length, image_token_id, image_tokens, where
        )
        return EncodedConversation(input_ids, labels, prompt_length)

    def text_ids(
        self, tokenizer: PreTrainedTokenizerBase, turns: Sequence[Turn], where: str
    ) -> tuple[list[int], list[int], int]:
        """``(input_ids, labels, prompt_length)`` of the text, each ``<image>`` one token."""
        input_ids: list[int] = []
        labels: list[int] = []
        prompt_length = 0
        for segment in self.checked_segments(tokenizer, turns, where):
            ids = tokenizer(segment.text, add_special_tokens=False).input_ids
            if segment.answer:
                prompt_length = len(input_ids)
            ids += [tokenizer.eos_token_id] if segment.end_token else []
            input_ids += ids
            labels += ids if segment.answer else [IGNORE_INDEX] * len(ids)
        return input_ids, labels, prompt_length

    def text_lengths(
        self, tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Sequence[Turn]]
    ) -> list[int]:
        """``len(text_ids(...)[0])`` of each conversation, the text of all of them tokenised
        in one batch (the fast tokenizers' parallel path)."""
        segments = [self.checked_segments(tokenizer, turns, "sample") for turns in conversations]
        texts = [segment.text for pieces in segments for segment in pieces]
        # ids alone: building attention masks costs as much as tokenising
        ids = (
            tokenizer(
                texts,
                add_special_tokens=False,
                return_attention_mask=False,
                return_token_type_ids=False,
            ).input_ids
            if texts
            else []
        )
        lengths = iter(map(len, ids))
        return [sum(next(lengths) + segment.end_token for segment in pieces) for pieces in segments]

    def checked_segments(
        self, tokenizer: PreTrainedTokenizerBase, turns: Sequence[Turn], where: str
    ) -> list[Segment]:
        """``segments``, for a conversation that ends with an assistant turn."""
        if not turns or turns[-1].role != "assistant":
            raise ValueError(f"{where}: a conversation must end with an assistant turn")
        return self.segments(tokenizer, turns, where)

    @abstractmethod
    def segments(
        self, tokenizer: PreTrainedTokenizerBase, turns: Sequence[Turn], where: str
    ) -> list[Segment]:
        """The conversation's text, cut where the template tokenises separately."""


@dataclass(frozen=True)
class ChatTemplate(ConversationTemplate):
    """A plain template that works with any tokenizer: ``User: ...`` / ``Assistant: ...</s>``.

    Each answer ends with the tokenizer's end-of-sequence token, which is also what stops
    generation. Loss is taken on the answer text and that end token only.
    """

    user_prefix: str = "User: "
    assistant_prefix: str = "Assistant: "
    separator: str = "\n"

    def segments(
        self, tokenizer: PreTrainedTokenizerBase, turns: Sequence[Turn], where: str
    ) -> list[Segment]:
        segments = []
        for turn in turns:
            if turn.role == "user":
                segments.append(Segment(self.user_prefix + turn.content + self.separator))
            elif turn.role == "assistant":
                segments += [
                    Segment(self.assistant_prefix),
                    Segment(turn.content, answer=True, end_token=True),
                    Segment(self.separator),
                ]
            else:
                raise ValueError(f"{where}: unknown role {turn.role!r} (expected user/assistant)")
        return segments


@dataclass(frozen=True)
class TokenizerChatTemplate(ConversationTemplate):
    """The tokenizer's own chat template (``tokenizer.chat_template``, Jinja), with loss on
    the assistant turns only.

    Each assistant turn's text is what the template adds after the generation prompt: the
    answer and the template's end-of-turn marker (e.g. ``<|im_end|>``), so the model learns to
    stop where the template says a turn ends. Templates must render every conversation prefix
    as a prefix of the whole conversation (all common ones do); one that does not is an error.
    """

    def segments(
        self, tokenizer: PreTrainedTokenizerBase, turns: Sequence[Turn], where: str
    ) -> list[Segment]:
        messages = [{"role": turn.role, "content": turn.content} for turn in turns]
        segments = []
        rendered = ""
        for k, turn in enumerate(turns):
            if turn.role != "assistant":
                continue
            prompt = tokenizer.apply_chat_template(
                messages[:k], tokenize=False, add_generation_prompt=True
            )
            whole = tokenizer.apply_chat_template(messages[: k + 1], tokenize=False)
            if not (prompt.startswith(rendered) and whole.startswith(prompt)):
                raise ValueError(
                    f"{where}: the tokenizer's chat template does not render each turn as a "
                    "continuation of the previous ones; use the plain ChatTemplate"
                )
            segments += [Segment(prompt[len(rendered) :]), Segment(whole[len(prompt) :], True)]
            rendered = whole
        return segments


def chat_template_for(tokenizer: PreTrainedTokenizerBase) -> ChatTemplate | TokenizerChatTemplate:
    """The tokenizer's own template when it has one, the plain ``ChatTemplate`` otherwise."""
    return TokenizerChatTemplate() if tokenizer.chat_template else ChatTemplate()


def expand_image_tokens(
    input_ids: list[int],
    labels: list[int],
    prompt_length: int,
    image_token_id: int,
    expansions: Sequence[Sequence[int]],
    where: str = "sample",
) -> tuple[list[int], list[int], int]:
    """Replace the k-th image token by ``expansions[k]`` (labels stay ignored there)."""
    positions = [i for i, t in enumerate(input_ids) if t == image_token_id]
    if len(positions) != len(expansions):
        raise ValueError(
            f"{where}: the text has {len(positions)} {IMAGE_TOKEN} placeholder(s) "
            f"but the sample has {len(expansions)} image(s)"
        )
    out_ids: list[int] = []
    out_labels: list[int] = []
    start = 0
    new_prompt_length = prompt_length
    for position, expansion in zip(positions, expansions, strict=True):
        out_ids += input_ids[start:position] + list(expansion)
        out_labels += labels[start:position] + [IGNORE_INDEX] * len(expansion)
        if position < prompt_length:
            new_prompt_length += len(expansion) - 1
        start = position + 1
    out_ids += input_ids[start:]
    out_labels += labels[start:]
    return out_ids, out_labels, new_prompt_length
