"""One way to ask a question about images, shared by the synthetic training data, ``mm15
predict``, benchmark evaluation and exported models, so a model is always asked in the form
it was trained on.

The chat template is the other half: :class:`~mm15_components.data.collate.SampleEncoder`
writes every sample in the tokenizer's own template when it has one (``chat_template_for``),
so the prompt of :func:`question_sample` encodes to the same token ids as the prompt of a
training sample with that question and those images.
"""

from __future__ import annotations

from PIL import Image

from mm15_components.data.schema import Sample, Turn
from mm15_components.language.tokenizer import IMAGE_TOKEN


def question_turn(question: str, images: int = 1, placeholder: str = IMAGE_TOKEN) -> Turn:
    """The user turn asking ``question`` about ``images`` images: the question first, then
    one ``placeholder`` per image, each on its own line, so that image tokens can attend to
    what is asked (causal attention)."""
    if IMAGE_TOKEN in question or placeholder in question:
        raise ValueError(
            f"the question must not contain {placeholder}; the images are placed after it, "
            f"got {question!r}"
        )
    return Turn("user", "\n".join([question, *[placeholder] * images]))


def question_sample(question: str, images: list[Image.Image], id: str = "") -> Sample:
    """A sample asking ``question`` about ``images``, with an empty answer to generate."""
    turns = [question_turn(question, len(images)), Turn("assistant", "")]
    return Sample(turns=turns, images=list(images), id=id)
