"""Ferret-UI-style questions about synthetic screens, as conversation samples.

Referring tasks name an element by its box or its centre point (written by the data's
``BoxCodec``, as in grounding answers) and ask what it is, says or shows; grounding tasks name
an element and are answered with its box. A screen carries several questions, one per turn,
each about a different element; the last one is scored in validation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mm15_components.data.prompt import question_turn
from mm15_components.data.schema import Sample, Turn
from mm15_components.data.synthetic.dataset import SeededDataset, sampling_probabilities
from mm15_components.data.synthetic.glyphs import GLYPHS
from mm15_components.data.synthetic.screens import (
    BARS,
    WIDGETS,
    WORDS,
    Element,
    Screen,
    draw_screen,
    sample_screen,
)

GROUNDING_METRIC = "ui_grounding_acc"
WIDGET_METRIC = "widget_acc"
REFERRING_METRIC = "ui_referring_acc"

QUESTIONS = {
    "widget": "What kind of element is at {where}?",
    "ocr": "What text is at {where}?",
    "icon": "What icon is at {where}?",
    "find_text": 'Where is the element that says "{text}"?',
    "find_icon": "Where is the {name} icon?",
    "find_widget": "Where is the {kind}?",
    "list_widgets": "List every {kind}.",
    "describe": "Describe the screen.",
}
TASKS = tuple(QUESTIONS)
NONE_FOUND = "none"
TEXT_KINDS = ("button", "textfield", "text", "listitem", "card", "navbar")
"""Classes whose ``text`` is words shown on the screen (OCR and find-text targets)."""


@dataclass(frozen=True)
class Question:
    """One question about a screen with its answer, how validation scores it and the
    element it is about (None: the whole screen or a class)."""

    question: str
    answer: str
    metric: str | None = None
    target_box: tuple[float, float, float, float] | None = None
    element: Element | None = None


EncodeBox = Callable[[tuple, tuple[int, int]], str]


class ScreenAsker:
    """Writes the questions of every task about one screen; boxes and points go through the
    codec's ``encode`` / ``encode_point`` so questions and answers share one convention."""

    def __init__(self, encode_box: EncodeBox, encode_point: EncodeBox, points: float) -> None:
        self.encode_box = encode_box
        self.encode_point = encode_point
        self.points = points

    def ask(self, rng: np.random.Generator, task: str, screen: Screen) -> Question | None:
        """A question of ``task`` about ``screen``; None when the screen has nothing to ask it
        about (no icon for ``icon``)."""
        return getattr(self, task)(rng, screen)

    def ask_many(
        self,
        rng: np.random.Generator,
        screen: Screen,
        tasks: list[str],
        probabilities: np.ndarray,
        count: int,
    ) -> list[Question]:
        """Up to ``count`` questions of tasks drawn with ``probabilities``, no two about the
        same element (a later turn would give the earlier answer away); fewer when the
        screen has too little to ask about (``8 * count`` draws at most)."""
        asked: list[Question] = []
        for _ in range(8 * count):
            if len(asked) == count:
                break
            task = tasks[int(rng.choice(len(tasks), p=probabilities))]
            question = self.ask(rng, task, screen)
            if question is not None and not any(_same_subject(question, q) for q in asked):
                asked.append(question)
        return asked

    def _where(self, rng: np.random.Generator, element: Element, screen: Screen) -> str:
        size = (screen.height, screen.width)
        if rng.random() < self.points:
            x1, y1, x2, y2 = element.box
            return self.encode_point(((x1 + x2) / 2, (y1 + y2) / 2), size)
        return self.encode_box(element.box, size)

    def _box(self, element: Element, screen: Screen) -> str:
        return self.encode_box(element.box, (screen.height, screen.width))

    @staticmethod
    def _pick(rng: np.random.Generator, elements: list[Element]) -> Element | None:
        return elements[int(rng.integers(len(elements)))] if elements else None

    def _refer(
        self,
        rng: np.random.Generator,
        task: str,
        candidates: list[Element],
        screen: Screen,
        metric: str,
        answer: str = "text",
    ) -> Question | None:
        """A ``task`` question naming one of ``candidates`` by box or point, answered with
        the element's ``answer`` attribute."""
        element = self._pick(rng, candidates)
        if element is None:
            return None
        question = QUESTIONS[task].format(where=self._where(rng, element, screen))
        return Question(question, getattr(element, answer), metric, element=element)

    def widget(self, rng: np.random.Generator, screen: Screen) -> Question | None:
        candidates = [e for e in screen.elements if e.kind not in BARS]
        return self._refer(rng, "widget", candidates, screen, WIDGET_METRIC, answer="kind")

    def ocr(self, rng: np.random.Generator, screen: Screen) -> Question | None:
        candidates = [e for e in screen.elements if e.kind in TEXT_KINDS]
        return self._refer(rng, "ocr", candidates, screen, REFERRING_METRIC)

    def icon(self, rng: np.random.Generator, screen: Screen) -> Question | None:
        return self._refer(rng, "icon", screen.of_kind("icon"), screen, REFERRING_METRIC)

    def _grounded(self, question: str, element: Element, screen: Screen) -> Question:
        box = tuple(float(v) for v in element.box)
        return Question(question, self._box(element, screen), GROUNDING_METRIC, box, element)

    def find_text(self, rng: np.random.Generator, screen: Screen) -> Question | None:
        element = self._pick(rng, [e for e in screen.elements if e.kind in TEXT_KINDS])
        if element is None:
            return None
        return self._grounded(QUESTIONS["find_text"].format(text=element.text), element, screen)

    def find_icon(self, rng: np.random.Generator, screen: Screen) -> Question | None:
        counts = Counter(e.text for e in screen.of_kind("icon"))
        unique = [e for e in screen.of_kind("icon") if counts[e.text] == 1]
        element = self._pick(rng, unique)
        if element is None:
            return None
        return self._grounded(QUESTIONS["find_icon"].format(name=element.text), element, screen)

    def find_widget(self, rng: np.random.Generator, screen: Screen) -> Question | None:
        counts = Counter(e.kind for e in screen.elements)
        unique = [e for e in screen.elements if counts[e.kind] == 1]
        element = self._pick(rng, unique)
        if element is None:
            return None
        return self._grounded(QUESTIONS["find_widget"].format(kind=element.kind), element, screen)

    def list_widgets(self, rng: np.random.Generator, screen: Screen) -> Question:
        kinds = sorted({e.kind for e in screen.elements if e.kind not in BARS})
        kind = kinds[int(rng.integers(len(kinds)))] if kinds else "button"
        found = [self._box(e, screen) for e in screen.of_kind(kind)]
        return Question(QUESTIONS["list_widgets"].format(kind=kind), " ".join(found) or NONE_FOUND)

    def describe(self, rng: np.random.Generator, screen: Screen) -> Question:
        return Question(QUESTIONS["describe"], describe(screen))


def _same_subject(a: Question, b: Question) -> bool:
    """Whether two questions are the same or about the same element."""
    return a.question == b.question or (a.element is not None and a.element == b.element)


def describe(screen: Screen) -> str:
    """A one-sentence summary: theme, title and how many elements of each class, in the
    order of ``WIDGETS``, e.g. "A dark screen titled Music with 2 buttons and 1 toggle."."""
    counts = Counter(e.kind for e in screen.elements if e.kind not in BARS)
    parts = [f"{counts[k]} {plural(k, counts[k])}" for k in WIDGETS if counts[k]]
    listed = ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else "".join(parts)
    return f"A {screen.theme.name} screen titled {screen.title} with {listed or 'no elements'}."


def plural(kind: str, count: int) -> str:
    if count == 1:
        return kind
    return kind + ("es" if kind.endswith("x") else "s")


class ScreenDataset(SeededDataset):
    """``num_samples`` screens with up to ``questions`` questions each; sample ``i`` of a
    split depends only on ``(seed, split, i)``.

    Args:
        width: screen width in pixels (the height follows the device's aspect ratio).
        tasks: task name -> sampling weight (``QUESTIONS``' keys).
        encode_box / encode_point: the codec's writers of pixel boxes and points.
        questions: questions per screen (``ScreenAsker.ask_many``); the last is the one
            validation scores.
        widgets / elements / bars / distinct: the screens' layout (``sample_screen``).
        points: share of referring questions that name an element by its centre point.
        widget_baseline: the answer scored beside the model on widget questions (validation's
            ``val/widget_acc_majority``): the most common class of the training split.
    """

    def __init__(
        self,
        num_samples: int,
        width: int,
        tasks: dict[str, float],
        encode_box: EncodeBox,
        encode_point: EncodeBox,
        seed: int = 0,
        split: str = "train",
        questions: int = 1,
        widgets: tuple[str, ...] = WIDGETS,
        elements: tuple[int, int] = (3, 7),
        bars: bool = True,
        distinct: bool = False,
        points: float = 0.3,
        widget_baseline: str | None = None,
    ) -> None:
        if questions < 1:
            raise ValueError(f"questions must be at least 1, got {questions}")
        self.task_names, self.task_probs = sampling_probabilities(tasks, TASKS, "screen tasks")
        super().__init__(num_samples, seed, split)
        self.width = width
        self.asker = ScreenAsker(encode_box, encode_point, points)
        self.questions = questions
        self.layout = {
            "widgets": tuple(widgets),
            "elements": tuple(elements),
            "bars": bars,
            "distinct": distinct,
        }
        self.widget_baseline = widget_baseline

    def plan(self, index: int) -> tuple[Screen, list[Question]]:
        """Screen ``index`` and its questions, without drawing it."""
        rng = self.generator(index)
        screen = sample_screen(rng, self.width, **self.layout)
        asked = self.asker.ask_many(rng, screen, self.task_names, self.task_probs, self.questions)
        if not asked:  # every weighted task needs what this screen lacks
            asked.append(self.asker.describe(rng, screen))
        return screen, asked

    def __getitem__(self, index: int) -> Sample:
        screen, asked = self.plan(index)
        turns: list[Turn] = []
        for number, q in enumerate(asked):
            user = question_turn(q.question) if number == 0 else Turn("user", q.question)
            turns += [user, Turn("assistant", q.answer)]
        last = asked[-1]
        sample = Sample(
            turns=turns,
            images=[draw_screen(screen)],
            id=f"screen-{self.split}-{index}",
            target_box=last.target_box,
            metric=last.metric,
            answers=[last.answer] if last.metric and last.target_box is None else [],
        )
        if last.metric == WIDGET_METRIC:
            sample.baseline_answer = self.widget_baseline
        return sample

    def mean_target_box(self, limit: int = 2000) -> tuple[float, float, float, float]:
        """Mean answer box of the grounding questions of the first ``limit`` screens, as
        fractions of the screen: the best constant answer, the grounding baseline."""
        boxes = []
        for index in range(min(limit, len(self))):
            screen, asked = self.plan(index)
            scale = np.array([screen.width, screen.height] * 2, dtype=float)
            boxes += [np.array(q.target_box) / scale for q in asked if q.target_box is not None]
        if not boxes:
            raise ValueError("the screens have no grounding questions")
        return tuple(float(v) for v in np.mean(boxes, axis=0))

    def majority_widget(self, limit: int = 2000) -> str:
        """The most common answer of the widget questions of the first ``limit`` screens."""
        answers = Counter(
            q.answer
            for index in range(min(limit, len(self)))
            for q in self.plan(index)[1]
            if q.metric == WIDGET_METRIC
        )
        if not answers:
            raise ValueError("the screens have no widget questions")
        return answers.most_common(1)[0][0]


def vocabulary() -> set[str]:
    """Every word the screen tasks write."""
    words = set(WORDS) | set(GLYPHS) | set(WIDGETS) | set(BARS) | {NONE_FOUND}
    words |= {plural(k, 2) for k in WIDGETS} | {"on", "off", "checked", "unchecked"}
    words |= {"A", "light", "dark", "screen", "titled", "with", "and", "no", "elements"}
    for template in QUESTIONS.values():
        text = template.format(where="", text="", name="", kind="")
        words |= set(text.replace("?", " ").replace(".", " ").replace('"', " ").split())
    return words
