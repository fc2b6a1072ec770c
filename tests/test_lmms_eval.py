"""lmms-eval's own command evaluates an exported model as ``--model mm15``, on local tasks made
here: its answers and scores are those of ``load_pretrained`` asked the same questions."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

from mm15_components import load_pretrained
from mm15_components.cli import build_from_config, main
from mm15_components.weights import save_weights

pytest.importorskip("lmms_eval", reason="the eval extra is not installed")

QUICKSTART = str(Path(__file__).parents[1] / "recipes" / "quickstart.yaml")
QUESTIONS = ["Where is the red circle?", "What is written on the sign?", "Where is the square?"]
CHOICES = ["circle", "square", "triangle"]
TASK_UTILS = """
from PIL import Image


def doc_to_visual(doc):
    return [Image.open(path).convert("RGB") for path in doc["images"]]
"""


def task_yaml(name: str, data: Path, body: str) -> str:
    head = f"""
    task: {name}
    dataset_path: json
    dataset_kwargs:
      data_files:
        test: {data}
    test_split: test
    doc_to_visual: !function utils.doc_to_visual
    doc_to_text: question
    """
    return textwrap.dedent(head) + textwrap.dedent(body)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The quickstart model, random weights, exported."""
    root = tmp_path_factory.mktemp("lmms")
    module, _ = build_from_config(QUICKSTART)
    save_weights(module.model, root / "weights")
    main(["export", "--config", QUICKSTART, f"--ckpt_path={root}/weights", f"--output={root}/out"])
    return root / "out"


def test_lmms_eval_runs_the_mm15_model_on_local_tasks(exported, tmp_path):
    generator = torch.Generator().manual_seed(0)
    paths = []
    for k, (h, w) in enumerate([(48, 80), (64, 64), (90, 30), (40, 40)]):
        pixels = torch.randint(0, 256, (h, w, 3), generator=generator).byte().numpy()
        paths.append(str(tmp_path / f"image{k}.png"))
        Image.fromarray(pixels).save(paths[-1])
    image_sets = [[paths[0]], [paths[1], paths[2]], [paths[3]]]  # one with two images
    pretrained = load_pretrained(exported)
    images = [[Image.open(p).convert("RGB") for p in ps] for ps in image_sets]
    asked = list(zip(images, QUESTIONS, strict=True))
    answers = [pretrained.chat(ims, question, max_new_tokens=4) for ims, question in asked]
    # the first two references are the model's own answers: exact match 2/3
    references = [answers[0], answers[1], "no such answer"]
    qa = [
        {"question": q, "images": ps, "answer": a}
        for q, ps, a in zip(QUESTIONS, image_sets, references, strict=True)
    ]
    likelihoods = [
        [pretrained.loglikelihood(ims, question, choice)[0] for choice in CHOICES]
        for ims, question in asked
    ]
    best = [max(range(len(CHOICES)), key=scores.__getitem__) for scores in likelihoods]
    gold = [best[0], (best[1] + 1) % len(CHOICES), best[2]]  # accuracy 2/3
    mc = [
        {"question": q, "images": ps, "choices": CHOICES, "label": g}
        for q, ps, g in zip(QUESTIONS, image_sets, gold, strict=True)
    ]
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "utils.py").write_text(TASK_UTILS)
    (tmp_path / "qa.json").write_text(json.dumps(qa))
    (tmp_path / "mc.json").write_text(json.dumps(mc))
    (tasks / "mm15_qa.yaml").write_text(
        task_yaml(
            "mm15_qa",
            tmp_path / "qa.json",
            """
            doc_to_target: answer
            output_type: generate_until
            generation_kwargs:
              max_new_tokens: 4
            metric_list:
              - metric: exact_match
                aggregation: mean
                higher_is_better: true
            """,
        )
    )
    (tasks / "mm15_mc.yaml").write_text(
        task_yaml(
            "mm15_mc",
            tmp_path / "mc.json",
            """
            doc_to_target: label
            doc_to_choice: choices
            output_type: multiple_choice
            metric_list:
              - metric: acc
            """,
        )
    )
    output = tmp_path / "results"
    command = [sys.executable, "-m", "lmms_eval", "--model", "mm15",
               "--model_args", f"pretrained={exported}", "--tasks", "mm15_qa,mm15_mc",
               "--include_path", str(tasks), "--batch_size", "2", "--device", "cpu",
               "--output_path", str(output), "--log_samples"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    log = run.stdout[-3000:] + run.stderr[-3000:]
    found = list(output.rglob("*_results.json"))
    assert len(found) == 1, log  # lmms-eval exits with 0 when it fails, too
    results = json.loads(found[0].read_text())["results"]
    assert results["mm15_qa"]["exact_match,none"] == pytest.approx(2 / 3), log
    assert results["mm15_mc"]["acc,none"] == pytest.approx(2 / 3), log
    (qa_samples,) = output.rglob("*_samples_mm15_qa.jsonl")
    rows = sorted(map(json.loads, qa_samples.read_text().splitlines()), key=lambda r: r["doc_id"])
    assert [row["filtered_resps"] for row in rows] == answers


def test_answers_stop_at_the_first_until_string_and_are_greedy():
    from mm15_components.lmms_plugin import cut_at, generation_settings

    assert cut_at("a b. c\nd", ["\n", "."]) == "a b"
    assert cut_at("a b", []) == "a b"
    assert generation_settings({"until": "\n", "max_new_tokens": 5}) == (5, ["\n"])
    assert generation_settings({}) == (None, [])
    with pytest.warns(UserWarning, match="greedy"):
        generation_settings({"temperature": 0.7, "do_sample": True})


def test_unknown_model_args_are_named():
    from mm15_components.lmms_plugin import MM15LMMs

    with pytest.raises(TypeError, match=r"unknown model_args \['temprature'\]"):
        MM15LMMs.create_from_arg_string("pretrained=exported,temprature=0")
