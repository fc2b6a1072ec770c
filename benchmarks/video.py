"""Seek-based frame sampling vs decoding every frame, on a 2-minute 720p clip.

Both sides return the same 24 frames (checked); the baseline decodes the whole clip in order
and converts only the frames it keeps. The clip is generated once with PyAV and cached in the
temp dir; encoding is not timed.

    python benchmarks/video.py [--codec libx264] [--fps 25] [--keyframe-seconds 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import av
import numpy as np
import torch
from timing import best_times

from mm15_components.data.video import sample_frames, uniform_indices

WIDTH, HEIGHT, SECONDS, NUM_FRAMES = 1280, 720, 120, 24


def make_clip(codec: str, fps: int, keyframe_seconds: int) -> Path:
    """A smooth random texture drifting across the frame: compresses like real footage."""
    name = f"mm15_bench_{codec}_{fps}fps_gop{keyframe_seconds}s_{HEIGHT}p.mp4"
    path = Path(tempfile.gettempdir()) / name
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(HEIGHT // 16, 2 * WIDTH // 16, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(coarse, 16, axis=0), 16, axis=1)
    partial = path.with_suffix(".partial.mp4")
    with av.open(str(partial), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = keyframe_seconds * fps
        for index in range(SECONDS * fps):
            shift = index * 4 % WIDTH
            image = np.ascontiguousarray(texture[:, shift : shift + WIDTH])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    partial.rename(path)
    return path


def decode_everything(path: Path, num_frames: int) -> torch.Tensor:
    """Baseline: decode every frame in order and keep the uniformly spaced ones."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keep = uniform_indices(stream.frames, num_frames)
        kept: dict[int, torch.Tensor] = {}
        for index, frame in enumerate(container.decode(stream)):
            if index in keep:
                kept[index] = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
    return torch.stack([kept[index] for index in keep])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", default="libx264")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--keyframe-seconds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    path = make_clip(args.codec, args.fps, args.keyframe_seconds)
    seeked, decoded = sample_frames(path, NUM_FRAMES), decode_everything(path, NUM_FRAMES)
    assert torch.equal(seeked, decoded), "the two methods returned different frames"

    seek_s, all_s = best_times(
        [lambda: sample_frames(path, NUM_FRAMES), lambda: decode_everything(path, NUM_FRAMES)],
        args.repeats,
    )
    print(
        f"clip: {path.name}, {SECONDS} s, {WIDTH}x{HEIGHT}, {args.fps} fps, "
        f"keyframe every {args.keyframe_seconds} s, {path.stat().st_size / 1e6:.1f} MB"
    )
    print(f"sample_frames (seek)      : {seek_s:7.3f} s  {NUM_FRAMES / seek_s:7.1f} frames/s")
    print(f"decode all, keep {NUM_FRAMES}     : {all_s:7.3f} s  {NUM_FRAMES / all_s:7.1f} frames/s")
    print(f"speed-up (decode all / seek): {all_s / seek_s:.1f}x")


if __name__ == "__main__":
    main()
