"""Uniform frame sampling for MM1.5-Video: N frames (24 by default) spread over the whole clip.

"Uniformly" means the centres of N equal segments: the clip ``[0, D)`` is cut into N segments
of length ``D / N`` and sample ``i`` is the frame on screen at ``t_i = D * (2i + 1) / (2N)``,
i.e. the last frame whose timestamp is ``<= t_i``. For a constant-rate clip of F frames this is
frame ``floor(F * (2i + 1) / (2N))`` (`uniform_indices`), the same rule a frame folder uses.
When the clip has fewer than N frames, every frame appears at least once, in order, with
repeats, so the result always has N frames.

Videos are read with PyAV by seeking: for each target time the demuxer jumps to the nearest
preceding keyframe and decoding runs forward only until the target is passed, so the cost
grows with the number of samples and the keyframe spacing, not with the length of the clip.
Only the sampled frames are kept in memory.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from mm15_components.data.images import load_image
from mm15_components.data.schema import Turn
from mm15_components.language.tokenizer import IMAGE_TOKEN

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


class VideoDecodeError(ValueError):
    """A video or frame folder that cannot be sampled; the message names the file and why."""


@dataclass(frozen=True)
class SampledClip:
    """Sampled frames with the time each one is shown.

    Attributes:
        frames: uint8 ``[N, 3, H, W]`` RGB frames, all at the size of the first sampled frame.
        timestamps: float64 ``[N]`` seconds from the clip start at which each frame is shown.
        duration: Clip length in seconds.
    """

    frames: torch.Tensor
    timestamps: torch.Tensor
    duration: float


def uniform_indices(num_items: int, num_samples: int) -> list[int]:
    """Index of the item covering the centre of each of ``num_samples`` equal segments."""
    if num_items < 1 or num_samples < 1:
        raise ValueError(
            f"need num_items >= 1 and num_samples >= 1, got {num_items} and {num_samples}"
        )
    return [num_items * (2 * i + 1) // (2 * num_samples) for i in range(num_samples)]


def sample_frames(path: str | os.PathLike, num_frames: int = 24) -> torch.Tensor:
    """Sample ``num_frames`` frames uniformly over a video file or frame folder.

    Returns a uint8 ``[N, C, H, W]`` RGB tensor; see `sample_clip` for the timestamps.
    """
    return sample_clip(path, num_frames).frames


def sample_clip(
    path: str | os.PathLike, num_frames: int = 24, *, folder_fps: float = 1.0
) -> SampledClip:
    """Sample ``num_frames`` frames uniformly and report when each is shown.

    Args:
        path: A video file (anything FFmpeg demuxes: mp4, webm, mkv, ...) or a directory of
            JPEG/PNG frames, taken in natural sort order (``f2.png`` before ``f10.png``).
        num_frames: How many frames to return; the clip is split into this many segments.
        folder_fps: Frame rate assumed for a frame folder, which has no clock of its own; its
            timestamps are ``index / folder_fps``. Ignored for video files.

    Raises:
        VideoDecodeError: The path is missing, unreadable, corrupt or truncated, holds no
            decodable video stream or no frames.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, int):
        raise TypeError(f"num_frames must be an int, got {type(num_frames).__name__}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    path = Path(path)
    if path.is_dir():
        if not folder_fps > 0:
            raise ValueError(f"folder_fps must be > 0, got {folder_fps}")
        return _sample_folder(path, num_frames, folder_fps)
    if not path.is_file():
        raise VideoDecodeError(f"{path}: no such file or directory")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: empty file")
    try:
        return _sample_video(path, num_frames)
    except av.FFmpegError as error:
        raise VideoDecodeError(f"{path}: cannot decode: {error}") from error


def _natural_key(name: str) -> list[str | int]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _sample_folder(folder: Path, num_frames: int, fps: float) -> SampledClip:
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES),
        key=lambda p: _natural_key(p.name),
    )
    if not files:
        raise VideoDecodeError(f"{folder}: no JPEG/PNG frames in this folder")
    indices = uniform_indices(len(files), num_frames)
    frames: torch.Tensor | None = None
    for slot, index in enumerate(indices):
        if slot > 0 and index == indices[slot - 1]:
            frames[slot] = frames[slot - 1]
            continue
        try:
            rgb = load_image(files[index])
        except (OSError, ValueError, SyntaxError) as error:
            raise VideoDecodeError(f"{files[index]}: cannot read image: {error}") from error
        if frames is None:
            frames = torch.empty((num_frames, 3, rgb.height, rgb.width), dtype=torch.uint8)
        size = (frames.shape[3], frames.shape[2])
        if rgb.size != size:
            rgb = rgb.resize(size, Image.Resampling.BILINEAR)
        frames[slot] = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)
    timestamps = torch.tensor(indices, dtype=torch.float64) / fps
    return SampledClip(frames, timestamps, len(files) / fps)


def _sample_video(path: Path, num_frames: int) -> SampledClip:
    with av.open(str(path)) as container:
        stream = next(
            (
                s
                for s in container.streams.video
                if not s.disposition & av.stream.Disposition.attached_pic
            ),
            None,
        )
        if stream is None:
            raise VideoDecodeError(f"{path}: no video stream")
        if stream.codec_context is None:
            raise VideoDecodeError(f"{path}: unsupported video codec (no decoder in this FFmpeg)")
        start, duration = _time_span(container, stream, path)
        seconds = float(duration * stream.time_base)
        if duration <= 0:
            raise VideoDecodeError(f"{path}: zero-length video stream")
        frames: torch.Tensor | None = None
        timestamps = torch.empty(num_frames, dtype=torch.float64)
        shown_until: int | None = None
        cursor = _Cursor(path, container, stream, start, seconds)
        try:
            for slot in range(num_frames):
                target = start + duration * Fraction(2 * slot + 1, 2 * num_frames)
                if slot > 0 and (shown_until is None or target < shown_until):
                    frames[slot], timestamps[slot] = frames[slot - 1], timestamps[slot - 1]
                    continue
                frame, shown_until = cursor.frame_at(target)
                if frames is None:
                    shape = (num_frames, 3, frame.height, frame.width)
                    frames = torch.empty(shape, dtype=torch.uint8)
                height, width = frames.shape[2:]
                rgb = frame.to_ndarray(format="rgb24", width=width, height=height)
                frames[slot] = torch.from_numpy(rgb).permute(2, 0, 1)
                timestamps[slot] = float((frame.pts - start) * stream.time_base)
        finally:
            cursor.close()
    return SampledClip(frames, timestamps, seconds)


def _time_span(
    container: av.container.InputContainer, stream: av.VideoStream, path: Path
) -> tuple[int, Fraction]:
    """Start pts and duration (in the stream's time base) of the video stream.

    Sources in order: the per-track DURATION tag (Matroska/WebM, exact for this stream), the
    stream duration, the container duration, and last a demux pass over the packets.
    """
    start = stream.start_time or 0
    tagged = _seconds_from_tag(stream.metadata.get("DURATION", ""))
    if tagged is not None:
        return start, tagged / stream.time_base
    if stream.duration:
        return start, Fraction(stream.duration)
    if container.duration:
        return start, Fraction(container.duration, av.time_base) / stream.time_base
    first = end = None
    for packet in container.demux(stream):
        if packet.pts is not None:
            packet_end = packet.pts + (packet.duration or 0)
            first = packet.pts if first is None else min(first, packet.pts)
            end = packet_end if end is None else max(end, packet_end)
    if first is None:
        raise VideoDecodeError(f"{path}: the video stream has no frames")
    return first, Fraction(end - first)


def _seconds_from_tag(tag: str) -> Fraction | None:
    """Parse a Matroska statistics tag such as ``00:01:02.500000000``; None if malformed."""
    match = re.fullmatch(r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", tag.strip())
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + Fraction(seconds)


class _Cursor:
    """Walks one video stream forward to each target, seeking only when that saves decoding.

    Before moving to a new target it asks a second demuxer (opened on first use) which keyframe
    a seek would land on, by reading one packet, not decoding. When that keyframe is not past
    the frames already decoded (a long keyframe interval, targets close together), decoding just
    continues: no frame is decoded twice, so sampling never costs more than about one pass.
    """

    def __init__(
        self,
        path: Path,
        container: av.container.InputContainer,
        stream: av.VideoStream,
        start: int,
        duration_s: float,
    ) -> None:
        self.path, self.container, self.stream = path, container, stream
        self.start, self.duration_s = start, duration_s
        self.probe: av.container.InputContainer | None = None
        self.decoded: Iterator[av.VideoFrame] = iter(())
        self.ahead: av.VideoFrame | None = None  # the first decoded frame past the last target

    def close(self) -> None:
        if self.probe is not None:
            self.probe.close()

    def frame_at(self, target: Fraction) -> tuple[av.VideoFrame, int | None]:
        """The frame on screen at ``target`` and the pts where it stops being shown.

        That pts is the next frame's, or at the end of the stream the last frame's end (None if
        the stream gives no frame length). Targets must come in increasing order.
        """
        if self.ahead is not None and self.ahead.pts <= target:
            keyframe = self._keyframe_pts(target)
            if keyframe is not None and keyframe <= self.ahead.pts:
                return self._walk(self.ahead, target)
        return self._seek(target)

    def _keyframe_pts(self, target: Fraction) -> int | None:
        if self.probe is None:
            self.probe = av.open(str(self.path))
        stream = self.probe.streams[self.stream.index]
        self.probe.seek(math.floor(target), stream=stream)
        for packet in self.probe.demux(stream):
            if packet.is_keyframe and packet.pts is not None:
                return packet.pts
        return None

    def _seek(self, target: Fraction) -> tuple[av.VideoFrame, int | None]:
        """Seek to the keyframe at or before ``target`` and walk from there.

        Some demuxers (MPEG-TS) seek by decode time, so the keyframe found may be shown after
        the target, or lie past the last keyframe; the seek then steps back, doubling the step,
        until it lands before the target.
        """
        seek_pts = math.floor(target)
        step = max(1, round(1 / self.stream.time_base))  # one second
        lowest = min(self.start, 0) - step  # before every frame, in decode time too
        while True:
            self.container.seek(seek_pts, stream=self.stream)
            self.decoded = self._decode()
            first = next(self.decoded, None)
            if first is not None and first.pts <= target:
                return self._walk(first, target)
            if seek_pts <= lowest:
                if first is None:
                    raise VideoDecodeError(
                        f"{self.path}: no decodable frame (duration {self.duration_s:.3f} s):"
                        " truncated or corrupt file"
                    )
                self.ahead = first  # the target precedes the first frame
                return first, first.pts
            seek_pts, step = max(lowest, seek_pts - step), step * 2

    def _decode(self) -> Iterator[av.VideoFrame]:
        for frame in self.container.decode(self.stream):
            if frame.pts is None:
                raise VideoDecodeError(f"{self.path}: decoded a frame without a timestamp")
            yield frame

    def _walk(self, shown: av.VideoFrame, target: Fraction) -> tuple[av.VideoFrame, int | None]:
        """Decode forward from ``shown`` (at or before ``target``) past ``target``."""
        for frame in self.decoded:
            if frame.pts > target:
                self.ahead = frame
                return shown, frame.pts
            shown = frame
        self.ahead = None
        return shown, self._end_of_last(shown, target)

    def _end_of_last(self, last: av.VideoFrame, target: Fraction) -> int | None:
        """End pts of the stream's last frame; raise if the stream ends before ``target``."""
        stream = self.stream
        frame_length = last.duration or (
            round(1 / (stream.guessed_rate * stream.time_base)) if stream.guessed_rate else None
        )
        if frame_length is None:
            return None
        end = last.pts + frame_length
        if target >= end:
            target_s = float((target - self.start) * stream.time_base)
            end_s = float((end - self.start) * stream.time_base)
            raise VideoDecodeError(
                f"{self.path}: no frame at {target_s:.3f} s: the video ends at {end_s:.3f} s"
                f" but its duration is {self.duration_s:.3f} s: truncated file"
            )
        return end


VIDEO_TOKEN = "<video>"
"""Placeholder for a whole video in conversation text (LLaVA-Video data also uses ``<image>``)."""


def frame_turns(
    turns: list[Turn],
    timestamps: Sequence[float],
    timestamp_format: str | None = None,
    where: str = "sample",
) -> list[Turn]:
    """Turn a video conversation into a multi-image one: the single ``<video>`` (or
    ``<image>``) placeholder of the user turns becomes one ``<image>`` per frame.

    Args:
        turns: the conversation; exactly one placeholder in its user turns, none in answers.
        timestamps: seconds at which each frame is shown, one per frame.
        timestamp_format: text written before each frame's image, formatted with ``seconds``
            and ``index`` (from 0), e.g. ``"{seconds:.1f} s:"``; None writes nothing.
        where: names the sample in error messages.
    """
    placeholders = [
        (i, token)
        for i, turn in enumerate(turns)
        for token in (VIDEO_TOKEN, IMAGE_TOKEN)
        for _ in range(turn.content.count(token))
    ]
    in_answers = [i for i, _ in placeholders if turns[i].role != "user"]
    if in_answers or len(placeholders) != 1:
        raise ValueError(
            f"{where}: a video conversation needs exactly one {VIDEO_TOKEN} or {IMAGE_TOKEN} "
            f"placeholder, in a user turn; found {len(placeholders)}"
            + (f" ({len(in_answers)} in assistant turns)" if in_answers else "")
        )
    index, token = placeholders[0]
    frames = "".join(
        (timestamp_format.format(seconds=t, index=k) if timestamp_format else "") + IMAGE_TOKEN
        for k, t in enumerate(timestamps)
    )
    turns = list(turns)
    turns[index] = Turn(turns[index].role, turns[index].content.replace(token, frames))
    return turns
