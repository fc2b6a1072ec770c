import csv
import json
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import lightning as L
import pytest
import yaml
from eval_worker import main as run_eval_worker
from helpers import tiny_model
from lightning.pytorch.loggers import CSVLogger
from PIL import Image

from mm15_components import MM15Module
from mm15_components.cli import main
from mm15_components.data import BenchmarkDataModule, Loader
from mm15_components.data.benchmarks import EncodedBenchmark, load_refs, read_benchmark
from mm15_components.data.formats import BadSampleBudgetError, BadSampleError, BadSamplePolicy
from mm15_components.grounding.codec import BoxCodec
from mm15_components.labels import IGNORE_INDEX
from mm15_components.language import IMAGE_TOKEN

RECIPES = Path(__file__).parents[1] / "recipes"


def image(path: Path, size=(100, 80), colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def write_json(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


# ---- tiny files in each layout, with the answers a test model gives and their scores ---------
def textvqa(root: Path) -> Path:
    for name in ("a1", "a2"):
        image(root / "train_images" / f"{name}.jpg")
    data = [
        {"question_id": 7, "question": "How many?", "image_id": "a1"},
        {"question_id": 8, "question": "Is it red?", "image_id": "a2"},
        {"question_id": 9, "question": "Which colour?", "image_id": "a1"},
    ]
    answers = [["two"] * 3 + ["3"] * 7, ["yes"] * 10, ["red"] * 2 + ["blue"] * 8]
    for record, refs in zip(data, answers, strict=True):
        record["answers"] = refs
    return write_json(root / "TextVQA_0.5.1_val.json", {"dataset_name": "textvqa", "data": data})


def docvqa(root: Path) -> Path:
    image(root / "documents" / "d1.png")
    image(root / "d2.jpeg")
    data = [
        {"questionId": 1, "question": "Team?", "image": "documents/d1.png",
         "answers": ["Denver Broncos", "Denver R. Broncos"]},
        {"questionId": 2, "question": "Date?", "image_local_name": "d2.jpeg",
         "answers": ["12/15/88"]},
    ]  # fmt: skip
    return write_json(root / "val_v1.0.json", {"dataset_split": "val", "data": data})


def chartqa(root: Path) -> Path:
    for name in ("c1.png", "c2.png"):
        image(root / "png" / name)
    records = [
        {"imgname": "c1.png", "query": "What is the peak?", "label": "12.5"},
        {"imgname": "c2.png", "query": "Is it rising?", "label": "Yes"},
        {"imgname": "c1.png", "query": "How many bars?", "label": 7},
    ]
    return write_json(root / "test_human.json", records)


REFCOCO_BOXES = {11: [10, 20, 30, 40], 12: [50, 5, 40, 60]}  # COCO x, y, w, h


def refcoco(root: Path, refs_format: str = "p") -> Path:
    image(root / "COCO_1.jpg", size=(100, 80))  # COCO's train2014 folder, in real use
    instances = {
        "images": [{"id": 1, "file_name": "COCO_1.jpg", "height": 80, "width": 100}],
        "annotations": [{"id": k, "image_id": 1, "bbox": box} for k, box in REFCOCO_BOXES.items()],
    }
    write_json(root / "instances.json", instances)
    refs = [
        {"ref_id": 0, "ann_id": 11, "image_id": 1, "split": "val",
         "sentences": [{"sent_id": 100, "sent": "left man", "raw": "Left man."},
                       {"sent_id": 101, "sent": "man on the left"}]},
        {"ref_id": 1, "ann_id": 12, "image_id": 1, "split": "val",
         "sentences": [{"sent_id": 102, "sent": "right dog"}]},
        {"ref_id": 2, "ann_id": 12, "image_id": 1, "split": "testA",
         "sentences": [{"sent_id": 103, "sent": "dog"}]},
    ]  # fmt: skip
    if refs_format == "json":
        return write_json(root / "refs.json", refs)
    path = root / "refs(unc).p"
    path.write_bytes(pickle.dumps(refs, protocol=2))
    return path


def llava(root: Path) -> Path:
    image(root / "q.png")
    records = [
        {"id": "mc", "image": "q.png", "conversations": [
            {"from": "human", "value": f"{IMAGE_TOKEN}\nWhich is it? (A) cat (B) dog"},
            {"from": "gpt", "value": "B"}]},
        {"id": "city", "image": "q.png", "answers": ["paris", "Paris, France"], "conversations": [
            {"from": "human", "value": f"Which city?\n{IMAGE_TOKEN}"},
            {"from": "gpt", "value": "Paris"}]},
        {"id": "text", "conversations": [
            {"from": "human", "value": "Capital of Italy?"}, {"from": "gpt", "value": "Rome"}]},
    ]  # fmt: skip
    path = root / "questions.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    return path


# benchmark, file maker, answers the test model gives (in file order), metric, expected scores
CASES = {
    # VQA: 3 of 10 humans said "2" -> 0.9; "Yes." normalises to "yes" -> 1; 2 of 10 -> 0.6
    "textvqa": (textvqa, ["2", "Yes.", "red"], "vqa_acc", [0.9, 1.0, 0.6]),
    # ANLS: case ignored -> 1; one edit in 8 characters -> 0.875
    "docvqa": (docvqa, ["denver broncos", "12/15/89"], "anls", [1.0, 0.875]),
    # relaxed: 4% off -> 1; text mismatch -> 0; 7.2 vs 7: 2.9% off -> 1
    "chartqa": (chartqa, ["12", "no", "7.2"], "relaxed_acc", [1.0, 0.0, 1.0]),
    # option letter read from "(B) dog"; "Paris." matches "paris"; Milan is wrong
    "llava": (llava, ["(B) dog", "Paris.", "Milan"], "exact_match", [1.0, 1.0, 0.0]),
}


def validate(data: BenchmarkDataModule, answers: list[str], tmp_path: Path) -> dict[str, float]:
    module = MM15Module(tiny_model(), data.tokenizer)
    planned = iter(answers)
    module.generate = lambda ids, mask, pixels: [next(planned) for _ in range(len(ids))]
    trainer = L.Trainer(
        accelerator="cpu",
        logger=CSVLogger(tmp_path, name="eval"),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    metrics = trainer.validate(module, data, verbose=False)[0]
    assert next(planned, None) is None  # every question was asked once
    return metrics


def answer_records(tmp_path: Path) -> list[dict]:
    (path,) = (tmp_path / "eval").rglob("val_epoch0_step0_rank0.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("benchmark", CASES)
def test_known_answers_score_what_the_metric_says(benchmark, tmp_path):
    make, answers, metric, expected = CASES[benchmark]
    data = BenchmarkDataModule(
        benchmark, str(make(tmp_path / "files")), loader=Loader(batch_size=2)
    )
    metrics = validate(data, answers, tmp_path)
    assert metrics[f"val/{metric}"] == pytest.approx(sum(expected) / len(expected), abs=1e-6)
    assert {k for k in metrics if k != "val/loss"} == {f"val/{metric}"}  # nothing else updated
    records = answer_records(tmp_path)
    assert [r["answer"] for r in records] == answers
    assert [r["score"] for r in records] == pytest.approx(expected)
    assert {r["metric"] for r in records} == {metric}


def test_reference_answers_score_full_marks(tmp_path):
    data = BenchmarkDataModule("textvqa", str(textvqa(tmp_path / "files")))
    references = [record.answers[-1] for record in data.records]  # given by 7, 10, 8 humans
    metrics = validate(data, references, tmp_path)
    assert metrics["val/vqa_acc"] == pytest.approx((1.0 + 1.0 + 1.0) / 3)


def test_textvqa_samples(tmp_path):
    data = BenchmarkDataModule(
        "textvqa", str(textvqa(tmp_path)), image_root=str(tmp_path / "train_images")
    )
    records = data.records
    assert [r.id for r in records] == ["7", "8", "9"]
    sample = records[0].sample()
    assert sample.metric == "vqa_acc" and sample.answers == ["two"] * 3 + ["3"] * 7
    assert sample.turns[0].content == (
        f"How many?\nAnswer the question using a single word or phrase.\n{IMAGE_TOKEN}"
    )
    assert sample.turns[1].content == "3"  # the most common answer carries val/loss
    assert sample.images[0].size == (100, 80)


def test_refcoco_reads_the_pickle_as_plain_data_and_scores_boxes(tmp_path):
    codec = BoxCodec()
    refs = refcoco(tmp_path / "files")
    data = BenchmarkDataModule("refcoco", str(refs), image_root=str(tmp_path / "files"))
    assert [r.id for r in data.records] == ["0:100", "0:101", "1:102"]  # testA left out
    first = data.records[0].sample()
    assert first.target_box == (10.0, 20.0, 40.0, 60.0)  # x, y, w, h -> x1, y1, x2, y2
    assert first.metric == "grounding_acc" and first.turns[0].content.startswith(
        "Where is left man?"
    )
    assert first.turns[1].content == codec.encode((10, 20, 40, 60), (80, 100))
    as_json = BenchmarkDataModule("refcoco", str(refcoco(tmp_path / "json", "json")))
    assert [r.target_box for r in as_json.records] == [r.target_box for r in data.records]
    exact = codec.encode((10, 20, 40, 60), (80, 100))
    metrics = validate(data, [exact, "[0, 0, 50, 50]", "no box"], tmp_path)
    assert metrics["val/grounding_acc"] == pytest.approx(1 / 3)
    assert 0 < metrics["val/mean_iou"] < 1 / 3
    records = answer_records(tmp_path)
    assert records[0]["references"] == [[10.0, 20.0, 40.0, 60.0]] and records[2]["box"] is None
    test_a = BenchmarkDataModule("refcoco", str(refs), split="testA")
    assert [r.id for r in test_a.records] == ["2:103"]
    with pytest.raises(
        ValueError, match=r"no refs in split 'testB'; the file has \['testA', 'val'\]"
    ):
        BenchmarkDataModule("refcoco", str(refs), split="testB")


class RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path("pwned"),))


def test_a_refs_pickle_that_builds_objects_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"split": "val"}, RunsCode()]))
    with pytest.raises(ValueError, match=r"refs\(unc\).p: cannot read .*asks to build pathlib"):
        load_refs(path)
    assert not (tmp_path / "pwned").exists()


def test_malformed_records_name_the_file_and_record(tmp_path):
    path = write_json(tmp_path / "val.json", {"data": [
        {"question": "Q?", "image_id": "a", "answers": ["x"]},
        {"question": "Q?", "image_id": "a", "answers": "x"},
    ]})  # fmt: skip
    image(tmp_path / "train_images" / "a.jpg")
    with pytest.raises(
        BadSampleError, match=r"val.json: data\[1\]: 'answers' must be a non-empty list"
    ):
        BenchmarkDataModule("textvqa", str(path))
    with pytest.warns(UserWarning, match="skipping bad samples of kind 'malformed_record'"):
        data = BenchmarkDataModule("textvqa", str(path), on_bad_sample="skip", max_bad_fraction=0.5)
    assert len(data.records) == 1 and data.policy.counts == {"malformed_record": 1}
    with (
        pytest.warns(UserWarning),
        pytest.raises(BadSampleBudgetError, match=r"val.json: 1 of the 2 samples read were bad"),
    ):
        BenchmarkDataModule("textvqa", str(path), on_bad_sample="skip")  # over 10%
    with pytest.raises(ValueError, match="val.json: expected an object with a 'data' list"):
        BenchmarkDataModule("docvqa", str(write_json(tmp_path / "val.json", [])))
    with pytest.raises(ValueError, match="the prompt must contain {question}"):
        BenchmarkDataModule("textvqa", str(path), prompt="Answer briefly.")
    with pytest.raises(ValueError, match="may hold no field but {question}"):
        BenchmarkDataModule("textvqa", str(path), prompt="{question} in {language}")
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        BenchmarkDataModule("llava", str(path), metric="bleu")


def test_a_missing_image_stops_or_scores_zero_but_stays_counted(tmp_path):
    path = chartqa(tmp_path)
    (tmp_path / "png" / "c2.png").unlink()
    with pytest.raises(
        BadSampleError, match=r"test_human.json: record\[1\]: image .*c2.png not found"
    ):
        BenchmarkDataModule("chartqa", str(path))
    with pytest.warns(UserWarning, match="kind 'missing_file'"):
        data = BenchmarkDataModule("chartqa", str(path), on_bad_sample="skip", max_bad_fraction=0.5)
    assert len(data.records) == 3
    with (
        pytest.warns(UserWarning),
        pytest.raises(
            BadSampleBudgetError, match=r"test_human.json: 1 of the 3 samples read were bad"
        ),
    ):
        BenchmarkDataModule("chartqa", str(path), on_bad_sample="skip")  # the default 10%
    metrics = validate(data, ["12", "7.2"], tmp_path)  # the unreadable question is not asked
    assert metrics["val/relaxed_acc"] == pytest.approx(2 / 3)  # ... and scores 0 of 3
    records = answer_records(tmp_path)
    assert records[1]["answer"] is None and records[1]["score"] == 0.0
    assert "c2.png not found" in records[1]["error"]


def test_ranks_share_the_questions_once_and_run_as_many_steps(tmp_path):
    data = BenchmarkDataModule("chartqa", str(chartqa(tmp_path)))
    records = data.records + [replace(r, id=f"{r.id}-copy") for r in data.records[:2]]
    policy = BadSamplePolicy("raise")
    shards = [EncodedBenchmark(records, data.sample_encoder(), policy, rank, 2) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 3  # 5 questions: rank 1 gets one copy more
    scored = [item["id"] for shard in shards for item in shard if item["metric"] is not None]
    assert sorted(scored) == sorted(r.id for r in records)  # each question once
    padding = shards[1][2]
    assert padding["metric"] is None and (padding["labels"] == IGNORE_INDEX).all()


def test_eval_recipe_runs_through_the_cli(tmp_path):
    path = textvqa(tmp_path / "files")
    main(
        [
            "validate",
            "--config", str(RECIPES / "quickstart.yaml"),
            "--config", str(RECIPES / "eval" / "textvqa.yaml"),
            f"--data.init_args.path={path}",
            f"--data.init_args.image_root={tmp_path / 'files' / 'train_images'}",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
            "--trainer.enable_progress_bar=false",
        ]
    )  # fmt: skip
    (metrics_file,) = (tmp_path / "runs").rglob("metrics.csv")
    (row,) = list(csv.DictReader(metrics_file.open()))
    assert 0.0 <= float(row["val/vqa_acc"]) <= 1.0
    (answers,) = (tmp_path / "runs").rglob("predictions/*.jsonl")
    records = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [r["id"] for r in records] == ["7", "8", "9"]
    mean = sum(r["score"] for r in records) / 3
    assert float(row["val/vqa_acc"]) == pytest.approx(mean, abs=1e-6)


@pytest.mark.parametrize("recipe", sorted((RECIPES / "eval").glob("*.yaml")), ids=lambda p: p.name)
def test_every_eval_recipe_composes_with_a_model_recipe(recipe, capsys):
    with pytest.raises(SystemExit):
        main(["validate", "--config", str(RECIPES / "quickstart.yaml"), "--config", str(recipe),
              "--print_config"])  # fmt: skip
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["class_path"].endswith("BenchmarkDataModule")
    assert printed["data"]["init_args"]["encoding"]["image_tokens"] == 64  # kept from the model
    assert printed["trainer"]["limit_val_batches"] == 1.0


def test_eval_recipe_over_the_real_training_command_keeps_its_data_settings(capsys):
    """The eval file after the real-size training command asks as SFT trained: the LLM's
    tokenizer, 672 px tiles, index indicators."""
    training = ["models/mm15_1b.yaml", "stages/sft.yaml", "data/sft_llava.yaml"]
    configs = [arg for name in training for arg in ("--config", str(RECIPES / name))]
    with pytest.raises(SystemExit):
        main(["validate", *configs, "--config", str(RECIPES / "eval" / "docvqa.yaml"),
              "--print_config"])  # fmt: skip
    data = yaml.safe_load(capsys.readouterr().out)["data"]
    assert data["class_path"].endswith("BenchmarkDataModule")
    encoding = data["init_args"]["encoding"]
    assert encoding["tokenizer"] == "Qwen/Qwen2.5-1.5B"
    assert encoding["splitter"]["init_args"]["tile_size"] == 672
    assert encoding["tile_indicators"] == "index"
    assert data["init_args"]["prompt"].startswith("{question}\n")


def test_read_benchmark_needs_a_codec_for_refcoco(tmp_path):
    with pytest.raises(ValueError, match="refcoco needs encode_box"):
        read_benchmark("refcoco", refcoco(tmp_path), BadSamplePolicy())


def answers_by_id(root: Path) -> dict[str, dict]:
    files = sorted(root.rglob("predictions/*.jsonl"))
    records = [json.loads(line) for path in files for line in path.read_text().splitlines()]
    return {record["id"]: record for record in records}


def test_two_sharded_ranks_score_like_one_process(tmp_path):
    """FSDP2 on 2 ranks (gloo), generating for real: every question answered once, and the
    scores of one process, though one metric is seen by one rank only (eval_worker.py)."""
    runs = {}
    for devices in (1, 2):
        root = tmp_path / f"devices{devices}"
        root.mkdir()
        if devices == 1:
            run_eval_worker(str(root), 1)
        else:
            worker = Path(__file__).with_name("eval_worker.py")
            command = [sys.executable, str(worker), str(root), "2"]
            subprocess.run(command, check=True, cwd=root, timeout=300, capture_output=True)
        runs[devices] = json.loads((root / "metrics.json").read_text()), answers_by_id(root)
    (single, single_answers), (sharded, sharded_answers) = runs[1], runs[2]
    assert len(list((tmp_path / "devices2").rglob("predictions/*.jsonl"))) == 2  # one per rank
    assert sorted(sharded_answers) == [f"q{k}" for k in range(5)]
    assert sharded_answers == single_answers
    hand = {"val/exact_match": 0.5, "val/grounding_acc": 0.5, "val/anls": 1 - 1 / 3}
    assert set(single) == set(sharded) == {"val/loss", "val/mean_iou", *hand}
    for name, value in hand.items():
        assert single[name] == pytest.approx(value, abs=1e-6), name
    for name in single:
        assert sharded[name] == pytest.approx(single[name], abs=1e-5), name
