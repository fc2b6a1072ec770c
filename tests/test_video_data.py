import json

import av
import numpy as np
import pytest
from PIL import Image

from mm15_components.data import Encoding, SyntheticDataModule, VideoDataModule
from mm15_components.data.formats import BadSampleBudgetError, BadSamplePolicy
from mm15_components.data.schema import Turn
from mm15_components.data.synthetic.motion import COLOURS, DIRECTIONS, render_clip
from mm15_components.data.video import VideoDecodeError, frame_turns
from mm15_components.data.video_datamodule import MotionDataset, VideoJSONDataset
from mm15_components.labels import IGNORE_INDEX

SIZE = 64
CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"
rng = np.random.default_rng()


def write_mp4(path, frames: list[Image.Image], fps: int) -> None:
    with av.open(str(path), "w") as container:
        options = {"crf": "4"} if CODEC == "libx264" else {"qscale": "2"}
        stream = container.add_stream(CODEC, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def write_jsonl(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def record(video: str, question="Which way does it move?\n<video>", answer="left", **extra):
    return {
        "video": video,
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
        **extra,
    }


# ---- pixels as the independent truth of the synthetic answers ------------------------------


def colour_masks(frame: Image.Image) -> dict[str, np.ndarray]:
    """Pixels of each shape colour (shapes are drawn without antialiasing; the background is
    darker than every channel that names a colour)."""
    pixels = np.asarray(frame).astype(int)
    return {c: (np.abs(pixels - rgb).max(-1) <= 2) for c, rgb in COLOURS.items()}


def centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def kind_from_mask(mask: np.ndarray) -> str:
    """Fill ratio of the bounding box: square 1, circle about pi/4, triangle about 1/2."""
    ys, xs = np.nonzero(mask)
    ratio = mask.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
    return "square" if ratio > 0.9 else "triangle" if ratio < 0.66 else "circle"


def pixel_truth(frames: list[Image.Image]) -> dict[str, dict]:
    """Per colour seen: first frame, direction (first to last centroid), kind."""
    seen: dict[str, dict] = {}
    for index, frame in enumerate(frames):
        for colour, mask in colour_masks(frame).items():
            if mask.sum() >= 10:
                entry = seen.setdefault(colour, {"first": index, "kind": kind_from_mask(mask)})
                entry.setdefault("start", centroid(mask))
                entry["end"] = centroid(mask)
    for entry in seen.values():
        dx, dy = entry["end"] - entry["start"]
        entry["direction"] = (
            ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
        )
    return seen


@pytest.mark.parametrize("question", ["direction", "order", "count"])
def test_motion_answers_agree_with_the_rendered_pixels(question):
    num_frames = int(rng.integers(4, 25))
    data = MotionDataset(40, SIZE, num_frames, {question: 1.0}, seed=int(rng.integers(1000)))
    for index in range(len(data)):
        sample = data[index]
        assert len(sample.images) == num_frames
        truth = pixel_truth(sample.images)
        asked, answer = sample.turns[0].content, sample.turns[1].content
        if question == "direction":
            colour = next(c for c in COLOURS if f"the {c} " in asked)
            assert answer == truth[colour]["direction"], (index, asked)
            assert answer in DIRECTIONS
        elif question == "order":
            first = min(truth, key=lambda c: truth[c]["first"])
            assert answer == f"{first} {truth[first]['kind']}", index
        else:
            assert answer == str(len(truth)), index


def test_motion_shapes_move_as_declared():
    clip = render_clip(np.random.default_rng(int(rng.integers(1000))), SIZE, 12)
    for shape in clip.shapes:
        dx, dy = DIRECTIONS[shape.direction]
        before, after = shape.box_at(shape.appears), shape.box_at(11)
        assert shape.box_at(shape.appears - 1) is None
        assert (after[0] - before[0]) * dx + (after[1] - before[1]) * dy >= 0.3 * (SIZE - 16) - 1
        assert 0 <= min(after) and max(after) <= SIZE and 0 <= min(before)


def test_motion_samples_are_deterministic_per_split_and_index():
    make = lambda split: MotionDataset(10, SIZE, 6, {"count": 1, "order": 1}, seed=3, split=split)  # noqa: E731
    a, b, other = make("train")[4], make("train")[4], make("val")[4]
    assert a.turns == b.turns
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a.images, other.images, strict=True))


def test_video_and_image_modules_share_one_tokenizer_that_knows_every_video_word():
    video, image = VideoDataModule(), SyntheticDataModule()
    assert video.tokenizer.get_vocab() == image.tokenizer.get_vocab()
    data = MotionDataset(60, SIZE, 4, {"direction": 1, "order": 1, "count": 1}, seed=1)
    for sample in map(data.__getitem__, range(len(data))):
        for turn in sample.turns:
            ids = video.tokenizer(turn.content, add_special_tokens=False).input_ids
            assert video.tokenizer.unk_token_id not in ids, turn.content


# ---- frames as images -----------------------------------------------------------------------


def test_frame_turns_hand_computed():
    turns = [Turn("user", "Q?\n<video>"), Turn("assistant", "up")]
    out = frame_turns(turns, [0.0, 0.5, 1.25], "{seconds:.1f} s:")
    assert out == [Turn("user", "Q?\n0.0 s:<image>0.5 s:<image>1.2 s:<image>"), turns[1]]
    plain = frame_turns([Turn("user", "<image> Q?"), turns[1]], [0.0, 1.0])
    assert plain[0].content == "<image><image> Q?"


@pytest.mark.parametrize(
    "turns",
    [
        [Turn("user", "no placeholder"), Turn("assistant", "a")],
        [Turn("user", "<video> and <image>"), Turn("assistant", "a")],
        [Turn("user", "<video>"), Turn("assistant", "<image>")],
    ],
)
def test_frame_turns_needs_exactly_one_user_placeholder(turns):
    with pytest.raises(ValueError, match="here: a video conversation needs exactly one"):
        frame_turns(turns, [0.0], where="here")


@pytest.mark.parametrize(("num_frames", "image_tokens"), [(24, 16), (5, 4)])
def test_synthetic_samples_have_frames_times_tokens(num_frames, image_tokens):
    data = VideoDataModule(
        num_frames=num_frames, val_samples=3, encoding=Encoding(image_tokens=image_tokens)
    )
    data.setup("validate")
    image_id = data.tokenizer.convert_tokens_to_ids("<image>")
    batch = next(iter(data.val_dataloader()))
    assert batch["tiles_per_sample"].tolist() == [num_frames] * 3  # one image per frame
    assert batch["pixel_values"].shape == (3 * num_frames, 3, SIZE, SIZE)
    assert (batch["input_ids"] == image_id).sum(1).tolist() == [num_frames * image_tokens] * 3


def test_json_videos_decode_back_to_the_rendered_frames(tmp_path):
    num_items, fps, num_frames = int(rng.integers(20, 40)), 10, 8
    videos = tmp_path / "videos"
    (videos / "folder").mkdir(parents=True)
    clips = [render_clip(np.random.default_rng(seed), SIZE, num_items) for seed in (1, 2)]
    write_mp4(videos / "a.mp4", clips[0].frames, fps)
    for index, frame in enumerate(clips[1].frames):
        frame.save(videos / "folder" / f"f{index}.png")
    records = [
        record("a.mp4", "Which way?\n<video>", clips[0].shapes[0].direction, id="mp4"),
        record("folder", "<image>\nHow many?", str(len(clips[1].shapes)), id="frames"),
    ]
    write_jsonl(tmp_path / "val.jsonl", records)
    data = VideoDataModule(
        val_json=str(tmp_path / "val.jsonl"),
        video_root=str(videos),
        num_frames=num_frames,
        timestamp_format="{seconds:.1f} s:",
        folder_fps=fps,
    )
    data.setup("validate")
    expected = np.floor((np.arange(num_frames) + 0.5) * num_items / num_frames).astype(int)
    times = "".join(f"{i / fps:.1f} s:<image>" for i in expected)
    for index, (clip, rec) in enumerate(zip(clips, records, strict=True)):
        sample = data.val_samples[index]
        assert sample.id == rec["id"]
        assert len(sample.images) == num_frames
        for image, frame_index in zip(sample.images, expected, strict=True):
            # the expected frame is (among) the closest of all rendered frames
            errors = [
                np.abs(np.asarray(image, int) - np.asarray(frame, int)).mean()
                for frame in clip.frames
            ]
            assert errors[frame_index] <= min(errors) + 1e-9, (rec["id"], frame_index)
            assert errors[frame_index] < 5, (rec["id"], frame_index, errors[frame_index])
        assert times in sample.turns[0].content
        item = data.val_set[index]
        tokens = data.tokenizer.convert_ids_to_tokens(item["input_ids"].tolist())
        assert tokens.count("<image>") == num_frames * 16
        answer = item["labels"][item["labels"] != IGNORE_INDEX].tolist()
        eos = data.tokenizer.eos_token_id
        assert answer == data.tokenizer(rec["conversations"][1]["value"]).input_ids + [eos]


def test_videos_are_decoded_only_when_a_sample_is_read(tmp_path):
    write_jsonl(tmp_path / "v.jsonl", [record("missing.mp4"), record("also_missing.mp4")])
    data = VideoJSONDataset(tmp_path / "v.jsonl")  # no video is opened here
    assert len(data) == 2
    with pytest.raises(VideoDecodeError, match=r"v\.jsonl:2: .*also_missing\.mp4: no such file"):
        data[1]


# ---- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"video": "a.mp4", "conversations": [', "malformed JSON"),
        ('["not", "an", "object"]', "a record must be a JSON object"),
        ('{"conversations": []}', "'video' must be a non-empty path string"),
        ('{"video": "a.mp4", "conversations": []}', "'conversations' must be a non-empty list"),
        (json.dumps(record("a.mp4") | {"conversations": [{"from": "bot", "value": "x"}]}), "from"),
        (json.dumps(record("a.mp4", question="no placeholder")), "exactly one <video>"),
        (json.dumps(record("a.mp4", answer=7)), "string 'value'"),
    ],
)
def test_malformed_records_name_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(record("ok.mp4")) + "\n\n" + line + "\n")
    with pytest.raises(ValueError, match=rf"bad\.jsonl:3: .*{message}"):
        VideoJSONDataset(path)


def test_json_list_files_name_the_record(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps([record("ok.mp4"), {"video": "x.mp4"}]))
    with pytest.raises(ValueError, match=r"list\.json: record 1 \(line 1\): 'conversations'"):
        VideoJSONDataset(path)
    path.write_text('{"video": "x.mp4"}')
    with pytest.raises(ValueError, match="must hold a list of records"):
        VideoJSONDataset(path)
    with pytest.raises(ValueError, match="no such file"):
        VideoJSONDataset(tmp_path / "absent.jsonl")


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty file"), (b"\x00not a video at all" * 64, "cannot decode")],
)
def test_bad_videos_name_the_line_and_the_file(tmp_path, content, message):
    (tmp_path / "bad.mp4").write_bytes(content)
    write_jsonl(tmp_path / "v.jsonl", [record("bad.mp4")])
    with pytest.raises(VideoDecodeError, match=rf"v\.jsonl:1: .*bad\.mp4: {message}"):
        VideoJSONDataset(tmp_path / "v.jsonl")[0]


def test_too_few_frames_raise_under_min_frames(tmp_path):
    frames = render_clip(np.random.default_rng(0), SIZE, 3).frames
    write_mp4(tmp_path / "short.mp4", frames, 10)
    write_jsonl(tmp_path / "v.jsonl", [record("short.mp4")])
    repeating = VideoJSONDataset(tmp_path / "v.jsonl", num_frames=8)
    with pytest.warns(UserWarning, match="3 distinct frame.*frames repeat"):
        repeated = repeating[0]
    assert len(repeated.images) == 8 and repeating.repeated == 1
    strict = VideoJSONDataset(tmp_path / "v.jsonl", num_frames=8, min_frames=8)
    with pytest.raises(VideoDecodeError, match=r"v\.jsonl:1: .*3 distinct frame\(s\), fewer"):
        strict[0]
    with pytest.raises(ValueError, match="min_frames <= num_frames"):
        VideoJSONDataset(tmp_path / "v.jsonl", num_frames=8, min_frames=9)


def test_pixel_check_sees_a_wrong_direction():
    """The pixel truth is not vacuous: reversing a clip flips every direction it reports."""
    clip = render_clip(np.random.default_rng(int(rng.integers(1000))), SIZE, 10)
    forward, backward = pixel_truth(clip.frames), pixel_truth(clip.frames[::-1])
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    for colour, entry in forward.items():
        assert backward[colour]["direction"] == opposite[entry["direction"]]


def test_bad_videos_are_skipped_counted_and_held_to_a_budget(tmp_path):
    """Empty, truncated and too short videos under ``skip``: the next record is read and
    each is counted by kind; once the whole (small) file has been read, a bad share over
    the limit stops with the file named."""
    rng = np.random.default_rng(0)
    write_mp4(tmp_path / "good.mp4", render_clip(rng, SIZE, 8).frames, 10)
    write_mp4(tmp_path / "short.mp4", render_clip(rng, SIZE, 3).frames, 10)
    data = (tmp_path / "good.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.mp4").write_bytes(b"")
    names = ["empty.mp4", "truncated.mp4", "short.mp4", "good.mp4"]
    write_jsonl(tmp_path / "v.jsonl", [record(n, id=n) for n in names])

    lenient = BadSamplePolicy("skip", max_bad_fraction=1.0)
    dataset = VideoJSONDataset(tmp_path / "v.jsonl", num_frames=8, min_frames=8, policy=lenient)
    with pytest.warns(UserWarning, match="skipping bad samples"):
        assert dataset[0].id == "good.mp4"
    assert lenient.counts == {"unreadable_video": 2, "video_too_short": 1}

    policy = BadSamplePolicy("skip")  # at most 10% bad
    dataset = VideoJSONDataset(tmp_path / "v.jsonl", num_frames=8, min_frames=8, policy=policy)
    with pytest.warns(UserWarning):
        assert dataset[0].id == "good.mp4"  # 3 bad of 4 read: judged only after all 4
        with pytest.raises(BadSampleBudgetError, match=r"v\.jsonl: 4 of the 5 samples read"):
            dataset[1]
