"""Video question answering data: synthetic motion clips or LLaVA-Video-style JSON files.

Every video becomes a multi-image sample: ``num_frames`` frames sampled uniformly over the
clip, each one image of ``image_tokens`` tokens, never split into tiles (MM1.5-Video). Frames
are decoded or rendered per sample, in ``__getitem__``, so memory does not grow with the data.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from PIL import Image
from torch.utils.data import Dataset

from mm15_components.data.datamodule import EncodedDataset
from mm15_components.data.encoding import Encoding, ModelGeometry
from mm15_components.data.formats import (
    ROLES,
    BadSampleError,
    BadSamplePolicy,
    OnBadSample,
    check_answers,
    read_json_records,
)
from mm15_components.data.loader import Loader, LoadsEncodedSets
from mm15_components.data.prompt import question_turn
from mm15_components.data.schema import Sample, Turn
from mm15_components.data.synthetic.dataset import SeededDataset, sampling_probabilities
from mm15_components.data.synthetic.motion import QUESTIONS, question_answer, render_clip
from mm15_components.data.video import VIDEO_TOKEN, VideoDecodeError, frame_turns, sample_clip


class BadVideoError(BadSampleError, VideoDecodeError):
    """A video that cannot be used: a bad sample (``unreadable_video``, ``video_too_short``)
    for the policy, and a ``VideoDecodeError`` for callers that catch that."""


VIDEO_METRIC = "video_acc"
"""Validation scores each video answer by exact match (``ExactMatch``): ``val/video_acc``."""


class MotionDataset(SeededDataset):
    """``num_samples`` video question-answer samples; sample ``i`` of a split depends only on
    ``(seed, split, i)``, like ``SyntheticDataset``. Frames are rendered in ``__getitem__``.

    Args:
        num_frames: frames per clip (each becomes one image of the sample).
        questions: question kind -> sampling weight (``direction``, ``order``, ``count``).
        fps: the clip's frame rate, for the timestamps (frame ``k`` is shown at ``k / fps``).
        timestamp_format: see ``frame_turns``; None writes no timestamps.
    """

    def __init__(
        self,
        num_samples: int,
        image_size: int,
        num_frames: int,
        questions: dict[str, float],
        seed: int = 0,
        split: str = "train",
        fps: float = 2.0,
        timestamp_format: str | None = None,
    ) -> None:
        self.question_names, self.question_probs = sampling_probabilities(
            questions, QUESTIONS, "motion questions"
        )
        super().__init__(num_samples, seed, split)
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.image_size = image_size
        self.num_frames = num_frames
        self.fps = fps
        self.timestamp_format = timestamp_format

    def __getitem__(self, index: int) -> Sample:
        rng = self.generator(index)
        clip = render_clip(rng, self.image_size, self.num_frames)
        kind = self.question_names[int(rng.choice(len(self.question_names), p=self.question_probs))]
        question, answer = question_answer(rng, clip, kind)
        timestamps = [k / self.fps for k in range(self.num_frames)]
        sample_id = f"motion-{self.split}-{index}"
        turns = frame_turns(
            [question_turn(question, placeholder=VIDEO_TOKEN), Turn("assistant", answer)],
            timestamps,
            self.timestamp_format,
            where=sample_id,
        )
        return Sample(
            turns=turns, images=clip.frames, id=sample_id, answers=[answer], metric=VIDEO_METRIC
        )


class VideoJSONDataset(Dataset):
    """LLaVA-Video-style records, one video each, frames decoded when a sample is read.

    A record is ``{"id": ..., "video": path, "conversations": [{"from": "human" | "gpt",
    "value": ...}, ...]}``; one human value holds the ``<video>`` (or ``<image>``) placeholder.
    A ``.jsonl`` file holds one record per line, a ``.json`` file a list of records. Records are
    checked when the file is read, so a malformed one fails before training starts; videos are
    opened only in ``__getitem__``.

    Args:
        path: the ``.json`` or ``.jsonl`` file.
        video_root: the folder record paths are relative to (default: the file's folder).
        num_frames: frames sampled per video (`sample_clip`).
        timestamp_format: text before each frame, see `frame_turns`; None writes none.
        folder_fps: frame rate assumed for frame folders (their timestamps).
        min_frames: fewest distinct frames a video must have; shorter videos are bad samples
            (``video_too_short``). A video with at least ``min_frames`` but fewer than
            ``num_frames`` distinct frames is used with frames repeated to make up the count,
            counted in ``repeated`` and warned about once.
        policy: what a bad video does (``formats.BadSamplePolicy``): ``raise`` (default), or
            ``skip`` to the next record, counted against this file's budget.

    Raises:
        ValueError: the file is missing or a record is malformed; the message names the file
            and line (``.jsonl``) or record index (``.json``).
        BadVideoError: from ``__getitem__`` under ``raise``, when a video is missing,
            truncated, empty, unreadable or too short; the message names the record's line and
            the video.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        video_root: str | os.PathLike | None = None,
        num_frames: int = 24,
        timestamp_format: str | None = None,
        folder_fps: float = 1.0,
        min_frames: int = 1,
        policy: BadSamplePolicy | None = None,
    ) -> None:
        if not 1 <= min_frames <= num_frames:
            raise ValueError(f"need 1 <= min_frames <= num_frames, got {min_frames}, {num_frames}")
        self.path = Path(path)
        self.video_root = Path(video_root) if video_root is not None else self.path.parent
        self.num_frames = num_frames
        self.timestamp_format = timestamp_format
        self.folder_fps = folder_fps
        self.min_frames = min_frames
        self.policy = policy or BadSamplePolicy("raise")
        self.records = [parse_record(r, where) for r, where in read_json_records(self.path)]
        self.repeated = 0

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        """Record ``index``'s sample; under ``skip``, a bad video's is the next good one's."""
        for attempt in range(len(self)):
            self.policy.read(str(self.path))
            try:
                return self._read((index + attempt) % len(self))
            except BadSampleError as error:
                self.policy.handle(error, str(self.path), len(self))
        raise BadVideoError("unreadable_video", f"{self.path}: no record has a usable video")

    def _read(self, index: int) -> Sample:
        where, sample_id, video, turns = self.records[index]
        path = self.video_root / video
        try:
            clip = sample_clip(path, self.num_frames, folder_fps=self.folder_fps)
        except VideoDecodeError as error:
            raise BadVideoError("unreadable_video", f"{where}: {error}") from error
        timestamps = clip.timestamps.tolist()
        distinct = len(set(timestamps))
        if distinct < self.min_frames:
            raise BadVideoError(
                "video_too_short",
                f"{where}: {path}: {distinct} distinct frame(s), fewer than min_frames="
                f"{self.min_frames}",
            )
        if distinct < self.num_frames:
            if not self.repeated:
                warnings.warn(
                    f"{where}: {path}: {distinct} distinct frame(s) for num_frames="
                    f"{self.num_frames}; frames repeat to make up the count (warned once; "
                    "set min_frames to make such videos bad samples)",
                    stacklevel=3,
                )
            self.repeated += 1
        images = [Image.fromarray(frame.permute(1, 2, 0).numpy()) for frame in clip.frames]
        answer = turns[-1].content
        turns = frame_turns(turns, timestamps, self.timestamp_format, where)
        return Sample(
            turns=turns, images=images, id=sample_id, answers=[answer], metric=VIDEO_METRIC
        )


def parse_record(record: Any, where: str) -> tuple[str, str, str, list[Turn]]:
    """``(where, id, video path, turns)`` of one record; raises naming ``where``."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: a record must be a JSON object")
    video = record.get("video")
    if not isinstance(video, str) or not video:
        raise ValueError(f"{where}: 'video' must be a non-empty path string")
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise ValueError(f"{where}: 'conversations' must be a non-empty list")
    turns = []
    for message in conversations:
        if not isinstance(message, dict) or message.get("from") not in ROLES:
            raise ValueError(f"{where}: each message needs 'from' in {sorted(ROLES)}")
        if not isinstance(message.get("value"), str):
            raise ValueError(f"{where}: each message needs a string 'value'")
        turns.append(Turn(ROLES[message["from"]], message["value"]))
    if turns[-1].role != "assistant":
        raise ValueError(f"{where}: the conversation must end with a 'gpt' message")
    check_answers(turns, where)
    frame_turns(turns, [], where=where)  # checks the placeholder now, not mid-epoch
    return where, str(record.get("id", where)), video, turns


class VideoDataModule(ModelGeometry, LoadsEncodedSets, L.LightningDataModule):
    """Video question answering: each split from synthetic motion clips (direction of
    motion, order of appearance, counting) or, when given, a LLaVA-Video-style JSON file.

    By default it builds the synthetic word tokenizer, as ``SyntheticDataModule`` does, so a
    model trained on the synthetic image tasks validates on video without training. Frames
    are never split (no AnyRes): each frame is one image of ``image_tokens`` tokens.

    Args:
        train_json / val_json: ``.json``/``.jsonl`` files for that split; None renders
            synthetic motion clips.
        video_root: folder the JSON video paths are relative to (default: each file's folder).
        num_frames: frames per video (MM1.5: 24).
        timestamp_format: text before each frame, formatted with ``seconds`` and ``index``,
            e.g. ``"{seconds:.1f} s:"``; None writes none.
        folder_fps: frame rate assumed for JSON records that point at frame folders.
        min_frames: fewest distinct frames a JSON video must have (``VideoJSONDataset``).
        on_bad_sample: ``raise`` stops at a missing, truncated, empty or too short video;
            ``skip`` moves to the next record and counts it.
        max_bad_fraction: under ``skip``, the largest share of a file's videos that may be
            bad (``formats.BadSamplePolicy``).
        questions: synthetic question kind -> weight (``direction``, ``order``, ``count``).
        fps: frame rate of the synthetic clips (their timestamps).
        train_samples / val_samples: synthetic split sizes.
        seed: fixes every synthetic sample and the order of every epoch.
        encoding: tokenizer, codec and frame geometry (``Encoding``); synthetic clips are
            rendered at ``image_size`` (default 64), frames of files resized to it.
        loader: batching (``Loader``; 8 videos per batch by default).
    """

    def __init__(
        self,
        train_json: str | None = None,
        val_json: str | None = None,
        video_root: str | None = None,
        num_frames: int = 24,
        timestamp_format: str | None = None,
        folder_fps: float = 1.0,
        min_frames: int = 1,
        on_bad_sample: OnBadSample = "skip",
        max_bad_fraction: float = 0.1,
        questions: dict[str, float] | None = None,
        fps: float = 2.0,
        train_samples: int = 100_000,
        val_samples: int = 128,
        seed: int = 0,
        encoding: Encoding = Encoding(image_size=64),
        loader: Loader = Loader(batch_size=8),
    ) -> None:
        super().__init__()
        self.encoding, self.loader, self.seed = encoding, loader, seed
        self.codec = encoding.box_codec
        self.tokenizer = encoding.build_tokenizer()
        questions = questions or dict.fromkeys(QUESTIONS, 1.0)

        def source(json_path: str | None, size: int, split: str) -> Dataset:
            if json_path is not None:
                policy = BadSamplePolicy(on_bad_sample, max_bad_fraction)
                return VideoJSONDataset(
                    json_path,
                    video_root,
                    num_frames,
                    timestamp_format,
                    folder_fps,
                    min_frames,
                    policy,
                )
            return MotionDataset(
                size, self.image_size, num_frames, questions, seed, split, fps, timestamp_format
            )

        self.train_samples = source(train_json, train_samples, "train")
        self.val_samples = source(val_json, val_samples, "val")

    def setup(self, stage: str) -> None:
        self._adopt_trainer_geometry()
        self.train_set = EncodedDataset(self.train_samples, self.encoding.encoder(self.tokenizer))
        self.val_set = EncodedDataset(self.val_samples, self.encoding.encoder(self.tokenizer))
