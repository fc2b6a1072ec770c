"""The bad-sample policy: undecodable text named by file and line, empty answers, and the
budget that stops ``skip`` from training on what is left of a wrong source."""

import json

import numpy as np
import pytest
from torch.utils.data import Dataset

from mm15_components.data.benchmarks import read_json
from mm15_components.data.formats import (
    BadSampleBudgetError,
    BadSampleError,
    BadSamplePolicy,
    JSONSource,
)
from mm15_components.data.mixture import MixtureDataset
from mm15_components.language import IMAGE_TOKEN


def conversation(answer="a red circle", image=None):
    question = f"{IMAGE_TOKEN}\nWhat is it?" if image else "What is it?"
    record = {
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    }
    return {**record, "image": image} if image else record


def test_undecodable_bytes_name_the_file_and_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(json.dumps(conversation()).encode() + b"\n" + b'{"text": "caf\xe9"}\n')
    source = JSONSource(path, format="conversation")
    assert source[0].turns[-1].content == "a red circle"
    with pytest.raises(BadSampleError, match=r"data\.jsonl:2: not UTF-8: byte 0xe9") as caught:
        source[1]
    assert caught.value.kind == "malformed_json"
    whole = tmp_path / "bench.json"
    whole.write_bytes(b'{\n"a": 1,\n"b": "\xff"}')
    with pytest.raises(BadSampleError, match=r"bench\.json .*byte 0xff at offset 16 \(line 3"):
        read_json(whole)


def test_an_empty_answer_is_a_bad_sample(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(conversation(answer="  ")) + "\n")
    with pytest.raises(
        BadSampleError, match=r"data\.jsonl:1: message 2 is an empty answer"
    ) as caught:
        JSONSource(path)[0]
    assert caught.value.kind == "empty_answer"


def test_budget_is_judged_after_enough_reads_hand_counted():
    policy = BadSamplePolicy("skip", max_bad_fraction=0.1, judge_after=10)
    error = BadSampleError("missing_file", "x.jsonl:1: image a.png not found")
    with pytest.warns(UserWarning, match="skipping bad samples of kind 'missing_file' in x"):
        policy.read("x")
        policy.handle(error, "x", size=1000)  # 1 bad of 1 read: not judged before 10 reads
    for _ in range(8):
        policy.read("x")
    policy.read("x")
    with pytest.raises(BadSampleBudgetError, match=r"x: 2 of the 10 samples read were bad"):
        policy.handle(error, "x", size=1000)  # 2 of 10 = 20%
    for _ in range(10):
        policy.read("z")
    with pytest.warns(UserWarning):
        policy.handle(error, "z", size=1000)  # 1 of 10 = 10%: at the limit, not over it
    policy.read("y")
    with pytest.raises(BadSampleBudgetError, match=r"y: 1 of the 1 samples .*\(1 missing_file\)"):
        policy.handle(error, "y", size=1)  # all of a one-sample source read
    assert policy.counts == {"missing_file": 4}


class Ids(Dataset):
    """A JSON source's samples as the mixture's dict items."""

    def __init__(self, source: JSONSource) -> None:
        self.source, self.name = source, str(source.path)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        return {"id": self.source[index].id}


def test_a_wrong_image_root_is_an_error_not_a_run(tmp_path):
    """10 of 11 records have an image, none of them under the given root: ``skip`` stops
    once the source has been read through instead of training on the one text record."""
    from PIL import Image

    (tmp_path / "images").mkdir()
    records = [conversation(image=f"{k}.png") for k in range(10)] + [conversation()]
    for k in range(10):
        Image.new("RGB", (4, 4)).save(tmp_path / "images" / f"{k}.png")
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))

    def mixture(image_root):
        source = Ids(JSONSource(path, image_root=image_root))
        return MixtureDataset([source], ["general"], np.ones(1), 40, policy=BadSamplePolicy("skip"))

    with pytest.warns(UserWarning), pytest.raises(BadSampleBudgetError) as caught:
        wrong = mixture(tmp_path)
        [wrong[i] for i in range(40)]
    assert "data.jsonl: " in str(caught.value) and "missing_file), over the limit of 10%" in str(
        caught.value
    )
    right = mixture(tmp_path / "images")
    assert len({right[i]["id"] for i in range(40)}) > 1
