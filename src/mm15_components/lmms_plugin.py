"""The ``mm15`` model of lmms-eval: an exported model directory evaluated by lmms-eval's tasks.

Installed with the ``eval`` extra and registered in lmms-eval's entry-point group
``lmms_eval.models`` (``manifest``), so that::

    lmms-eval --model mm15 --model_args pretrained=DIR --tasks TASKS

evaluates the directory ``mm15 export`` wrote. Questions are asked as in training
(:meth:`~mm15_components.pretrained.Pretrained.chat`: the task's text, then its images, in the
training chat template) and answered greedily.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest
from PIL import Image

from mm15_components.language.tokenizer import IMAGE_TOKEN
from mm15_components.pretrained import load_pretrained

MODEL_NAME = "mm15"


def manifest() -> ModelManifest:
    """What the ``lmms_eval.models`` entry point gives lmms-eval: the ``mm15`` model."""
    return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.MM15LMMs")


class MM15LMMs(lmms):
    """An exported model (``mm15 export``) as an lmms-eval model.

    Args (``--model_args key=value,...``):
        pretrained: the exported directory.
        device: where the model runs (lmms-eval's ``--device`` fills it); by default the
            GPU when there is one, else the CPU.
        dtype: ``float32`` (default), ``bfloat16`` or ``float16``.
        batch_size: questions generated together (lmms-eval's ``--batch_size``).
        max_new_tokens: answer budget when a task sets none (default: the export's).
    """

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        dtype: str = "float32",
        batch_size: int | str = 1,
        max_new_tokens: int | None = None,
        **unknown: Any,
    ) -> None:
        super().__init__()
        unknown.pop("max_batch_size", None)  # lmms-eval's, for automatic batch sizes
        if unknown:
            raise TypeError(
                f"mm15: unknown model_args {sorted(unknown)}; known: pretrained, device, dtype, "
                "batch_size, max_new_tokens"
            )
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"mm15: dtype={dtype!r} is not a torch dtype (e.g. bfloat16)")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.pretrained = load_pretrained(pretrained, device, getattr(torch, dtype))
        self.batch_size = int(batch_size)
        if max_new_tokens is not None:
            self.pretrained.max_new_tokens = int(max_new_tokens)

    def visuals(self, doc_to_visual: Any, doc_id: int, task: str, split: str) -> list[Image.Image]:
        """The images of one document (none when the task has no visuals)."""
        if doc_to_visual is None:
            return []
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
        for visual in visuals:
            if not isinstance(visual, Image.Image):
                raise TypeError(
                    f"mm15: task {task!r} document {doc_id} gives a {type(visual).__name__} "
                    "visual; only images are supported"
                )
        return list(visuals)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy answers, ``batch_size`` questions at a time (consecutive requests with the
        same generation settings), each cut at the first of the task's ``until`` strings."""
        answers: list[str] = []
        start = 0
        while start < len(requests):
            settings = requests[start].args[1]
            stop = start + 1
            while (
                stop < len(requests)
                and stop - start < self.batch_size
                and requests[stop].args[1] == settings
            ):
                stop += 1
            questions = [
                (self.visuals(*request.args[2:]), as_question(request.args[0]))
                for request in requests[start:stop]
            ]
            max_new_tokens, until = generation_settings(settings)
            generated = self.pretrained.chat_batch(questions, max_new_tokens)
            answers += [cut_at(answer, until) for answer in generated]
            start = stop
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """``(-log P(continuation | question), whether greedy decoding writes it)`` of each
        request: a multiple-choice option scored as the answer to the question. The answer
        starts its own turn, so the option's leading space (lmms-eval's target delimiter) is
        dropped.

        Two conventions of lmms-eval 0.7.3 shape the result. Its multiple-choice scoring picks
        the option with the *smallest* first value (its own models return a loss), so the
        first value is the negative log-likelihood, summed over the continuation's tokens.
        And it passes every model output through ``unwrap_generation_output``, which turns a
        bare ``(float, bool)`` into text, but hands the value of a ``GenerationResult`` on
        unchanged, so each pair is wrapped in one.
        """
        scores = []
        for request in requests:
            context, target, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            continuation = target if isinstance(target, str) else target(doc)
            images = self.visuals(doc_to_visual, doc_id, task, split)
            question = as_question(context)
            logprob, greedy = self.pretrained.loglikelihood(images, question, continuation.lstrip())
            scores.append(GenerationResult((-logprob, greedy)))
        return scores

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("mm15: multi-round generation is not supported")


def as_question(context: str) -> str:
    """The task's text as the question; images are placed after it, so any image placeholder
    a task writes into its text is removed."""
    return context.replace(IMAGE_TOKEN, "").strip()


def generation_settings(settings: dict[str, Any]) -> tuple[int | None, list[str]]:
    """``(max_new_tokens, until)`` of a task's generation settings; sampling is not
    supported (answers are greedy), which a warning says when a task asks for it."""
    if settings.get("do_sample") or (settings.get("temperature") or 0) > 0:
        warnings.warn(
            "mm15: answers are greedy; the task's sampling settings are ignored", stacklevel=3
        )
    until = settings.get("until") or []
    return settings.get("max_new_tokens"), [until] if isinstance(until, str) else list(until)


def cut_at(text: str, until: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any of ``until``."""
    for stop in until:
        if stop:
            text = text.split(stop, 1)[0]
    return text
