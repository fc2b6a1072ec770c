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
from mm15_components.data.encoding import Encoding, ModelGeometry
from mm15_components.data.images import load_image
from mm15_components.data.loader import Loader
from mm15_components.data.prompt import question_sample
from mm15_components.data.schema import PredictBatch, QueryItem
from mm15_components.data.video import sample_frames
from mm15_components.language.tokenizer import IMAGE_TOKEN


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
        encoding: as in the model's training recipe (``Encoding``; the defaults match the
            quickstart's); unset geometry takes the model's. Words outside the tokenizer's
            vocabulary are read as unknown, with a warning.
        loader: its ``batch_size`` and ``num_workers``.
    """

    def __init__(
        self,
        images: list[str] | None = None,
        query: str = "",
        video: str | None = None,
        num_frames: int = 8,
        encoding: Encoding = Encoding(),
        loader: Loader = Loader(batch_size=8),
    ) -> None:
        super().__init__()
        self.encoding, self.loader = encoding, loader
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
        self.codec = encoding.box_codec
        self.tokenizer = encoding.build_tokenizer()
        self._warn_unknown_words()

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
        encoder = self.encoding.encoder(self.tokenizer)
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
            batch_size=self.loader.batch_size,
            num_workers=self.loader.num_workers,
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
