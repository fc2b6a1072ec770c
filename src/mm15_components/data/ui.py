"""Mobile-UI data (MM1.5-UI): synthetic phone screens with Ferret-UI-style referring and
grounding questions, or conversation files converted from Ferret-UI's public data."""

from __future__ import annotations

from functools import partial

from mm15_components.data.datamodule import EncodedDataset, SyntheticDataModule
from mm15_components.data.synthetic.screen_tasks import TASKS, ScreenDataset, vocabulary
from mm15_components.data.synthetic.screens import WIDGETS
from mm15_components.grounding.codec import BoxCodec
from mm15_components.vision.anyres import AnyResSplitter, IndicatorStyle


class UIDataModule(SyntheticDataModule):
    """Synthetic portrait phone screens, each with several questions (widget classification,
    OCR and icon recognition at a box or point, find-text / find-icon / find-widget grounding,
    widget listing, a short description), rendered on the fly and deterministic by seed.

    Screens are tall: with a ``splitter`` they become a tall grid of tiles plus an overview
    (MM1.5's dynamic splitting); without one, each is squeezed into one square. Validation
    asks one question per screen and logs ``val/ui_grounding_acc`` beside the best constant
    box (``_const``, the mean training answer box) and ``val/widget_acc`` beside the most
    common training class (``_majority``); OCR and icon answers are ``val/ui_referring_acc``.

    Args:
        tasks: task -> sampling weight (``screen_tasks.TASKS``); default: all equally.
        screen_width: rendered width in pixels (height: the device's aspect ratio, 2.16 or
            2.22); tiles are cut from the screen at this size.
        widgets: the content classes screens are built from (``screens.WIDGETS``); fewer make
            an easier start.
        elements: ``(fewest, most)`` content elements per screen; fewer are larger.
        bars: draw the status, navigation and tab bars (the tab bar holds icons).
        distinct: no content class twice on a screen.
        points: share of referring questions naming an element by its centre point.
        train_questions: questions per training screen (one turn each).

    The other arguments are ``SyntheticDataModule``'s.
    """

    tokenizer_words = frozenset(vocabulary())

    def __init__(
        self,
        tokenizer: str | None = None,
        tasks: dict[str, float] | None = None,
        screen_width: int = 128,
        widgets: list[str] | None = None,
        elements: tuple[int, int] = (3, 7),
        bars: bool = True,
        distinct: bool = False,
        points: float = 0.3,
        image_size: int = 64,
        image_tokens: int | None = None,
        splitter: AnyResSplitter | None = None,
        tile_indicators: IndicatorStyle = "none",
        codec: BoxCodec | None = None,
        train_samples: int = 100_000,
        val_samples: int = 256,
        train_questions: int = 3,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ) -> None:
        super().__init__(
            tokenizer=tokenizer,
            image_size=image_size,
            image_tokens=image_tokens,
            splitter=splitter,
            tile_indicators=tile_indicators,
            codec=codec,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            shuffle=shuffle,
            mean=mean,
            std=std,
        )
        make = partial(
            ScreenDataset,
            width=screen_width,
            tasks=tasks or dict.fromkeys(TASKS, 1.0),
            encode_box=self.codec.encode,
            encode_point=self.codec.encode_point,
            seed=seed,
            widgets=tuple(widgets or WIDGETS),
            elements=tuple(elements),
            bars=bars,
            distinct=distinct,
            points=points,
        )
        self.train_samples = make(train_samples, split="train", questions=train_questions)
        self.val_samples = make(val_samples, split="val")

    def setup(self, stage: str) -> None:
        self._adopt_trainer_geometry()
        self.train_set = EncodedDataset(self.train_samples, self._encoder())
        names = self.train_samples.task_names
        grounded = {"find_text", "find_icon", "find_widget"} & set(names)
        baseline = self.train_samples.mean_target_box() if grounded else None
        if "widget" in names:
            self.val_samples.widget_baseline = self.train_samples.majority_widget()
        self.val_set = EncodedDataset(self.val_samples, self._encoder(baseline))
