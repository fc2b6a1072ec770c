"""One question about a few images or the frames of a video: the data of ``mm15 predict``."""

from __future__ import annotations

import string
import warnings
from functools import partial
from pathlib import Path

import lightning as L
from PIL import Image
from torch.utils.data import DataLoader

from mm15_components.data.collate import SampleEncoder, collate
from mm15_components.data.datamodule import ModelGeometry, data_tokenizer
from mm15_components.data.images import load_image
from mm15_components.data.prompt import question_sample
from mm15_components.data.schema import PredictBatch, QueryItem
from mm15_components.data.video import sample_frames
from mm15_components.grounding.codec import BoxCodec
from mm15_components.language.chat import ChatTemplate
from mm15_components.language.tokenizer import IMAGE_TOKEN
from mm15_components.vision.anyres import AnyResSplitter, IndicatorStyle


class QueryDataModule(ModelGeometry, L.LightningDataModule):
    """Asks ``query`` about each image (or each sampled video frame) on its own.

    The prompt is the one a training sample with this question and image has
    (:func:`~mm15_components.data.prompt.question_sample`: the question, then the image, in
    the tokenizer's chat template when it has one), and batches carry the original images,
    the query and a file-name stem per image for
    :class:`~mm15_components.predict.PredictionWriter`.

    Args:
        images: image files; each one is a separate prediction.
        query: the question, e.g. ``"Where is the red circle?"``.
        video: a video file or a folder of frames instead of (or beside) ``images``; each of
            ``num_frames`` frames sampled uniformly over it is a separate prediction.
        num_frames: frames taken from ``video``.
        tokenizer, codec, splitter, tile_indicators: as in the model's training recipe (the
            defaults match the quickstart's). Words outside the tokenizer's vocabulary are
            read as unknown, with a warning.
        image_size, image_tokens, mean, std: None takes the model's (``adopt_geometry``).
        use_tokenizer_template: as in :class:`~mm15_components.data.ConversationDataModule`:
            False asks in the plain template even when the tokenizer has its own.
        batch_size / num_workers: loader settings.
    """

    def __init__(
        self,
        images: list[str] | None = None,
        query: str = "",
        video: str | None = None,
        num_frames: int = 8,
        tokenizer: str | None = None,
        codec: BoxCodec | None = None,
        image_size: int | None = None,
        image_tokens: int | None = None,
        splitter: AnyResSplitter | None = None,
        tile_indicators: IndicatorStyle = "none",
        use_tokenizer_template: bool = True,
        batch_size: int = 8,
        num_workers: int = 0,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ) -> None:
        super().__init__()
        self.splitter = splitter
        self._state_geometry(image_size=image_size, image_tokens=image_tokens, mean=mean, std=std)
        self.images = list(images or [])
        if not self.images and video is None:
            raise ValueError("QueryDataModule: give image files (images=[...]) or a video")
        for path in self.images:
            if not Path(path).is_file():
                raise FileNotFoundError(f"QueryDataModule: image file {path!r} does not exist")
        if not query.strip():
            raise ValueError(
                "QueryDataModule: the query is empty; ask something, e.g. "
                "query='Where is the red circle?'"
            )
        if IMAGE_TOKEN in query:
            raise ValueError(
                f"QueryDataModule: the query must not contain {IMAGE_TOKEN}; the image is "
                f"placed after it, got {query!r}"
            )
        self.query = query
        self.video = video
        self.num_frames = num_frames
        self.codec = codec or BoxCodec()
        self.tokenizer = data_tokenizer(tokenizer, self.codec)
        self._warn_unknown_words()
        self.tile_indicators = tile_indicators
        self.use_tokenizer_template = use_tokenizer_template
        self.batch_size = batch_size
        self.num_workers = num_workers

    def _warn_unknown_words(self) -> None:
        unknown = self.tokenizer.unk_token_id
        ids = self.tokenizer(self.query, add_special_tokens=False).input_ids
        if unknown is not None and unknown in ids:
            words = [
                word
                for word in (w.strip(string.punctuation) for w in self.query.split())
                if unknown in self.tokenizer(word, add_special_tokens=False).input_ids
            ]
            warnings.warn(
                f"QueryDataModule: the tokenizer does not know {words} in the query "
                f"{self.query!r}; the model reads them as {self.tokenizer.unk_token}",
                stacklevel=3,
            )

    def setup(self, stage: str) -> None:
        """Read every image (and sample the video) now, so a bad file fails before predicting."""
        self._adopt_trainer_geometry()
        encoder = SampleEncoder(
            self.tokenizer,
            self.image_size,
            self.image_tokens,
            self.mean,
            self.std,
            template=None if self.use_tokenizer_template else ChatTemplate(),
            splitter=self.splitter,
            tile_indicators=self.tile_indicators,
        )
        inputs: list[tuple[str, str, Image.Image]] = []
        for index, path in enumerate(self.images):
            try:
                image = load_image(path)
            except (OSError, ValueError, SyntaxError) as error:
                raise ValueError(f"QueryDataModule: cannot read image {path!r}: {error}") from error
            inputs.append((path, f"{Path(path).stem}_{index:03d}", image))
        if self.video is not None:
            frames = sample_frames(self.video, self.num_frames)
            stem = Path(self.video).stem
            for index, frame in enumerate(frames):
                image = Image.fromarray(frame.permute(1, 2, 0).numpy())
                inputs.append((f"{self.video}#frame={index}", f"{stem}_{index:03d}", image))
        self.predict_set = [self._encode(encoder, *item) for item in inputs]

    def _encode(self, encoder: SampleEncoder, id: str, name: str, image: Image.Image) -> QueryItem:
        item = encoder(question_sample(self.query, [image], id=id))
        return {**item, "image": image, "name": name, "query": self.query}

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(
            self.predict_set,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=partial(collate_query, pad_token_id=self.tokenizer.pad_token_id),
        )


def collate_query(items: list[QueryItem], pad_token_id: int) -> PredictBatch:
    """:func:`collate`, plus the original images, their output names and queries."""
    return {
        **collate(items, pad_token_id),
        "images": [it["image"] for it in items],
        "names": [it["name"] for it in items],
        "queries": [it["query"] for it in items],
    }
