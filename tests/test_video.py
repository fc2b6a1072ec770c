import io
from itertools import pairwise

import av
import numpy as np
import pytest
import torch
from PIL import Image

from mm15_components.data import video
from mm15_components.data.video import (
    VideoDecodeError,
    sample_clip,
    sample_frames,
    uniform_indices,
)

WIDTH, HEIGHT = 64, 48
STRIPE = 8  # each frame shows its index in binary: 8 stripes per half, bits 0-7 top, 8-15 bottom
CONTAINER_CODECS = [
    (suffix, codec)
    for suffix, codec in [
        ("mp4", "libx264"),  # B-frames: decode order differs from display order
        ("mp4", "mpeg4"),
        ("webm", "libvpx"),
        ("webm", "libvpx-vp9"),
        ("mkv", "libx264"),
        ("ts", "libx264"),  # seeks by decode time, starts at 0.08 s
    ]
    if codec in av.codecs_available
]
rng = np.random.default_rng()


def code_image(index: int) -> np.ndarray:
    """An RGB frame whose black/white stripes spell ``index``: robust to lossy coding."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for bit in range(16):
        if index >> bit & 1:
            rows = slice(0, HEIGHT // 2) if bit < 8 else slice(HEIGHT // 2, HEIGHT)
            column = (bit % 8) * STRIPE
            image[rows, column : column + STRIPE] = 255
    return image


def read_code(frame: torch.Tensor) -> int:
    """Inverse of `code_image` for a decoded ``[3, H, W]`` frame (reads the stripe centres)."""
    gray = frame.float().mean(0)
    index = 0
    for bit in range(16):
        rows = slice(4, HEIGHT // 2 - 4) if bit < 8 else slice(HEIGHT // 2 + 4, HEIGHT - 4)
        column = (bit % 8) * STRIPE
        if gray[rows, column + 2 : column + STRIPE - 2].mean() > 128:
            index |= 1 << bit
    return index


def write_clip(target, codec: str, fps: int, num_frames: int, gop: int = 10, fmt=None) -> None:
    with av.open(target, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = gop
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(code_image(index), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def decode_all(path) -> list[torch.Tensor]:
    """Reference: decode every frame in order, no seeking."""
    with av.open(str(path)) as container:
        return [
            torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1)
            for f in container.decode(video=0)
        ]


def expected_indices(num_items: int, num_samples: int) -> list[int]:
    """Segment centres in floating point: floor((i + 0.5) * F / N)."""
    return np.floor((np.arange(num_samples) + 0.5) * num_items / num_samples).astype(int).tolist()


def test_uniform_indices_hand_computed():
    # 10 items, 4 segments of 2.5: centres 1.25, 3.75, 6.25, 8.75
    assert uniform_indices(10, 4) == [1, 3, 6, 8]
    # 3 items, 5 segments of 0.6: centres 0.3, 0.9, 1.5, 2.1, 2.7
    assert uniform_indices(3, 5) == [0, 0, 1, 2, 2]


def test_uniform_indices_match_float_rule_and_cover_short_clips():
    for _ in range(200):
        num_items, num_samples = rng.integers(1, 500, size=2).tolist()
        indices = uniform_indices(num_items, num_samples)
        assert indices == expected_indices(num_items, num_samples), (num_items, num_samples)
        if num_items <= num_samples:
            assert sorted(set(indices)) == list(range(num_items))


@pytest.mark.parametrize(("suffix", "codec"), CONTAINER_CODECS)
def test_video_samples_are_the_uniform_rule(tmp_path, suffix, codec):
    fps = int(rng.choice([10, 20, 25]))
    num_items = int(rng.integers(20, 60))
    num_samples = int(rng.integers(1, 2 * num_items))
    path = tmp_path / f"clip.{suffix}"
    write_clip(str(path), codec, fps, num_items, gop=int(rng.integers(4, 16)))
    reference = decode_all(path)
    assert len(reference) == num_items

    clip = sample_clip(path, num_samples)

    expected = expected_indices(num_items, num_samples)
    setup = (suffix, codec, fps, num_items, num_samples)
    assert clip.frames.dtype == torch.uint8
    assert clip.frames.shape == (num_samples, 3, HEIGHT, WIDTH)
    assert [read_code(f) for f in clip.frames] == expected, setup
    for frame, index in zip(clip.frames, expected, strict=True):
        assert torch.equal(frame, reference[index]), (setup, index)
    assert torch.allclose(clip.timestamps, torch.tensor(expected, dtype=torch.float64) / fps)
    assert clip.duration == pytest.approx(num_items / fps)
    assert torch.equal(sample_frames(str(path), num_samples), clip.frames)


def test_fewer_frames_than_requested_repeats_every_frame_in_order(tmp_path):
    path = tmp_path / "short.mkv"
    num_items = int(rng.integers(2, 8))
    write_clip(str(path), "mpeg4", 10, num_items)
    frames = sample_frames(path)  # 24 by default
    codes = [read_code(f) for f in frames]
    assert len(codes) == 24
    assert codes == sorted(codes)
    assert sorted(set(codes)) == list(range(num_items))


class NonSeekable(io.RawIOBase):
    """A pipe-like sink: the muxer cannot go back to write the duration or a seek index."""

    def __init__(self, sink):
        self.sink = sink

    def writable(self):
        return True

    def write(self, data):
        return self.sink.write(data)


def test_duration_from_demux_pass_when_metadata_lacks_it(tmp_path):
    path = tmp_path / "live.webm"
    fps, num_items, num_samples = 20, int(rng.integers(20, 60)), int(rng.integers(1, 30))
    with open(path, "wb") as sink:
        write_clip(NonSeekable(sink), "libvpx", fps, num_items, fmt="webm")
    with av.open(str(path)) as container:  # the case under test: no duration anywhere
        stream = container.streams.video[0]
        assert container.duration is None and stream.duration is None
        assert "DURATION" not in stream.metadata

    clip = sample_clip(path, num_samples)

    assert clip.duration == pytest.approx(num_items / fps)
    assert [read_code(f) for f in clip.frames] == expected_indices(num_items, num_samples)


class CountingContainer:
    """Wraps an input container and counts the frames its decoder hands out."""

    def __init__(self, container):
        self.container = container
        self.decoded = 0
        self.seek_offsets = []

    def __getattr__(self, name):
        return getattr(self.container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.container.close()

    def decode(self, *args, **kwargs):
        for frame in self.container.decode(*args, **kwargs):
            self.decoded += 1
            yield frame

    def seek(self, offset, **kwargs):
        self.seek_offsets.append(offset)
        return self.container.seek(offset, **kwargs)


def decoding_container(opened: list[CountingContainer]) -> CountingContainer:
    """The one container that decoded frames (sampling may open another to look up keyframes)."""
    (decoder,) = [c for c in opened if c.decoded]
    return decoder


@pytest.fixture
def opened(monkeypatch) -> list[CountingContainer]:
    """Every container that av.open returns from now on, wrapped in a counter."""
    containers = []
    real_open = av.open

    def counting_open(*args, **kwargs):
        containers.append(CountingContainer(real_open(*args, **kwargs)))
        return containers[-1]

    monkeypatch.setattr(video.av, "open", counting_open)
    return containers


def test_sampling_seeks_instead_of_decoding_everything(tmp_path, opened):
    gop, num_items, num_samples = 25, 400, 4
    path = tmp_path / "long.mp4"
    write_clip(str(path), "libx264", 25, num_items, gop=gop)
    reference = decode_all(path)
    assert opened[-1].decoded == num_items  # the counter sees every frame a decoder hands out
    already_open = len(opened)

    frames = sample_frames(path, num_samples)

    expected = expected_indices(num_items, num_samples)
    assert all(torch.equal(f, reference[i]) for f, i in zip(frames, expected, strict=True))
    decoder = decoding_container(opened[already_open:])
    assert len(decoder.seek_offsets) == num_samples  # targets are 4 keyframe intervals apart
    # per target: from the keyframe before it up to the first frame past it
    assert 0 < decoder.decoded <= num_samples * (gop + 1) < num_items


def test_long_keyframe_interval_decodes_each_frame_at_most_once(tmp_path, opened):
    # one keyframe interval longer than the clip: seeking for every target would re-decode
    # from the start each time (about num_samples / 2 passes); walking on costs one pass
    num_items, num_samples = 300, int(rng.integers(12, 40))
    path = tmp_path / "one_gop.mp4"
    write_clip(str(path), "libx264", 25, num_items, gop=1000)
    reference = decode_all(path)
    already_open = len(opened)

    frames = sample_frames(path, num_samples)

    expected = expected_indices(num_items, num_samples)
    assert all(torch.equal(f, reference[i]) for f, i in zip(frames, expected, strict=True))
    assert decoding_container(opened[already_open:]).decoded <= num_items


def test_seeking_by_decode_time_steps_back_to_the_right_frame(tmp_path, opened):
    # MPEG-TS seeks by decode time and may land on a keyframe shown after the target
    num_items = 200
    path = tmp_path / "stream.ts"
    write_clip(str(path), "libx264", 25, num_items, gop=10)
    reference = decode_all(path)
    stepped_back = False
    for num_samples in rng.permutation(np.arange(1, 40))[:12].tolist():
        already_open = len(opened)
        frames = sample_frames(path, num_samples)
        expected = expected_indices(num_items, num_samples)
        assert all(torch.equal(f, reference[i]) for f, i in zip(frames, expected, strict=True))
        offsets = decoding_container(opened[already_open:]).seek_offsets
        stepped_back |= any(later < earlier for earlier, later in pairwise(offsets))
    # targets rise, so a seek to a lower offset is a step back: the case under test occurred
    assert stepped_back


def write_frame_folder(folder, levels, suffix=".png"):
    folder.mkdir()
    for index, level in enumerate(levels):
        image = np.full((HEIGHT, WIDTH, 3), level, np.uint8)
        Image.fromarray(image).save(folder / f"frame_{index}{suffix}")  # unpadded numbers


def test_frame_folder_uses_natural_order_and_the_same_rule(tmp_path):
    num_items, num_samples = int(rng.integers(12, 40)), int(rng.integers(1, 60))
    levels = rng.permutation(256)[:num_items]  # distinct gray level per frame
    folder = tmp_path / "frames"
    write_frame_folder(folder, levels)
    (folder / "notes.txt").write_text("not a frame")

    clip = sample_clip(folder, num_samples, folder_fps=4.0)

    expected = expected_indices(num_items, num_samples)
    assert clip.frames.shape == (num_samples, 3, HEIGHT, WIDTH)
    assert clip.frames[:, :, 0, 0].tolist() == [[int(levels[i])] * 3 for i in expected]
    assert clip.timestamps.tolist() == [i / 4.0 for i in expected]
    assert clip.duration == num_items / 4.0


def test_frame_folder_jpeg_and_resizes_to_the_first_frame(tmp_path):
    folder = tmp_path / "frames"
    write_frame_folder(folder, [40, 120, 200], suffix=".jpg")
    odd_level = int(rng.integers(1, 256))
    Image.fromarray(np.full((20, 30, 3), odd_level, np.uint8)).save(folder / "frame_2.jpg")

    frames = sample_frames(folder, 3)

    assert frames.shape == (3, 3, HEIGHT, WIDTH)
    means = frames.float().mean(dim=(1, 2, 3))
    assert means.tolist() == pytest.approx([40, 120, odd_level], abs=2)


def truncated_copy(tmp_path, suffix):
    source = tmp_path / f"whole.{suffix}"
    write_clip(str(source), "libvpx" if suffix == "webm" else "libx264", 25, 60)
    data = source.read_bytes()
    path = tmp_path / f"cut.{suffix}"
    path.write_bytes(data[: len(data) // 2])
    return path


def audio_only(tmp_path):
    path = tmp_path / "audio.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("flac", rate=8000)
        samples = rng.integers(-9000, 9000, size=(1, 8000)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def empty_video_stream(tmp_path):
    """An mkv whose video track has no frames (the audio track keeps the file valid)."""
    path = tmp_path / "empty_video.mkv"
    with av.open(str(path), "w") as container:
        picture = container.add_stream("mpeg4", rate=25)
        picture.width, picture.height, picture.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        sound = container.add_stream("flac", rate=8000)
        samples = rng.integers(-9000, 9000, size=(1, 8000)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        container.mux(sound.encode(frame))
        container.mux(sound.encode())
        container.mux(picture.encode())
    return path


def unknown_codec(tmp_path):
    """An mkv whose track names a codec no FFmpeg build knows (same-length CodecID swap)."""
    source = tmp_path / "known.mkv"
    write_clip(str(source), "mpeg4", 25, 10)
    data = source.read_bytes()
    assert data.count(b"V_MPEG4/ISO/ASP") == 1
    path = tmp_path / "unknown.mkv"
    path.write_bytes(data.replace(b"V_MPEG4/ISO/ASP", b"V_NOSUCH/CODEC!"))
    return path


def random_bytes(tmp_path):
    path = tmp_path / "noise.mp4"
    path.write_bytes(rng.bytes(4096))
    return path


def zero_bytes(tmp_path):
    path = tmp_path / "zero.webm"
    path.touch()
    return path


def empty_folder(tmp_path):
    folder = tmp_path / "no_frames"
    folder.mkdir()
    (folder / "readme.txt").write_text("nothing here")
    return folder


def corrupt_frame_in_folder(tmp_path):
    folder = tmp_path / "frames"
    write_frame_folder(folder, [10, 20, 30])
    (folder / "frame_1.png").write_bytes(rng.bytes(300))
    return folder / "frame_1.png"


BAD_INPUTS = {
    "missing file": (lambda tmp_path: tmp_path / "absent.mp4", "no such file"),
    "zero bytes": (zero_bytes, "empty file"),
    "random bytes": (random_bytes, "cannot decode"),
    "mp4 cut in half": (lambda tmp_path: truncated_copy(tmp_path, "mp4"), "cannot decode"),
    "webm cut in half": (lambda tmp_path: truncated_copy(tmp_path, "webm"), "truncated"),
    "no video stream": (audio_only, "no video stream"),
    "zero-length video": (empty_video_stream, "zero-length"),
    "unsupported codec": (unknown_codec, "unsupported video codec"),
    "folder without frames": (empty_folder, "no JPEG/PNG frames"),
    "corrupt frame image": (corrupt_frame_in_folder, "cannot read image"),
}


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_raises_one_error_naming_the_file(tmp_path, kind):
    make, problem = BAD_INPUTS[kind]
    named = make(tmp_path)  # the file the message must name
    path = named.parent if kind == "corrupt frame image" else named
    with pytest.raises(VideoDecodeError, match=problem) as caught:
        sample_frames(path)
    assert str(named) in str(caught.value)


@pytest.mark.parametrize(
    ("num_frames", "error"),
    [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError)],
)
def test_invalid_num_frames(tmp_path, num_frames, error):
    with pytest.raises(error, match="num_frames"):
        sample_frames(tmp_path / "x.mp4", num_frames)


@pytest.mark.parametrize(("suffix", "codec"), CONTAINER_CODECS[:3])
def test_targets_on_frame_boundaries_pick_the_frame_starting_there(tmp_path, suffix, codec):
    # 48 frames, 24 segments: every centre falls exactly where frame 2i + 1 starts
    path = tmp_path / f"boundary.{suffix}"
    write_clip(str(path), codec, 25, 48)
    frames = sample_frames(path, 24)
    assert [read_code(f) for f in frames] == list(range(1, 48, 2))
