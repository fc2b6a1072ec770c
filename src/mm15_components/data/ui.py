"""Mobile-UI data (MM1.5-UI): synthetic phone screens with Ferret-UI-style referring and
grounding questions, or conversation files converted from Ferret-UI's public data."""

from __future__ import annotations

from functools import partial

import lightning as L

from mm15_components.data.datamodule import EncodedDataset
from mm15_components.data.encoding import Encoding, ModelGeometry
from mm15_components.data.loader import Loader, LoadsEncodedSets
from mm15_components.data.synthetic.screen_tasks import TASKS, ScreenDataset, vocabulary
from mm15_components.data.synthetic.screens import WIDGETS


class UIDataModule(ModelGeometry, LoadsEncodedSets, L.LightningDataModule):
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
        train_samples / val_samples: split sizes.
        train_questions: questions per training screen (one turn each).
        seed: fixes every screen and the order of every epoch.
        encoding: tokenizer, codec, image geometry and splitter (``Encoding``; image size
            64 by default); the default tokenizer also knows the screens' words.
        loader: batching (``Loader``).
    """

    def __init__(
        self,
        tasks: dict[str, float] | None = None,
        screen_width: int = 128,
        widgets: list[str] | None = None,
        elements: tuple[int, int] = (3, 7),
        bars: bool = True,
        distinct: bool = False,
        points: float = 0.3,
        train_samples: int = 100_000,
        val_samples: int = 256,
        train_questions: int = 3,
        seed: int = 0,
        encoding: Encoding = Encoding(image_size=64),
        loader: Loader = Loader(),
    ) -> None:
        super().__init__()
        self.encoding, self.loader, self.seed = encoding, loader, seed
        self.codec = encoding.box_codec
        self.tokenizer = encoding.build_tokenizer(vocabulary())
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
        self.train_set = EncodedDataset(self.train_samples, self.encoding.encoder(self.tokenizer))
        names = self.train_samples.task_names
        grounded = {"find_text", "find_icon", "find_widget"} & set(names)
        baseline = self.train_samples.mean_target_box() if grounded else None
        if "widget" in names:
            self.val_samples.widget_baseline = self.train_samples.majority_widget()
        self.val_set = EncodedDataset(
            self.val_samples, self.encoding.encoder(self.tokenizer, baseline_box=baseline)
        )
