"""Standard benchmark files read from local disk, as validation samples that carry their
reference answers and the metric the benchmark is reported with.

Layouts (each a file of the public release, read as it is):

- ``textvqa``: ``TextVQA_0.5.1_val.json``, ``{"data": [{"question_id", "question",
  "image_id", "answers": [10 strings]}, ...]}``; images ``<image_root>/<image_id>.jpg``
  (``train_images/`` beside the file).
  Scored by VQA accuracy (``vqa_acc``).
- ``docvqa`` / ``infovqa``: ``val_v1.0.json`` / ``infographicsVQA_val_v1.0.json``,
  ``{"data": [{"questionId", "question", "image" | "image_local_name", "answers"}, ...]}``.
  Scored by ANLS (``anls``).
- ``chartqa``: ``test_human.json``, ``test_augmented.json`` (or ``val_*``), ``[{"imgname",
  "query", "label"}, ...]``; images in ``png/`` beside the file. Scored by relaxed accuracy
  (``relaxed_acc``).
- ``refcoco``: the ``refs`` file of RefCOCO, RefCOCO+ or RefCOCOg (``refs(unc).p``,
  ``refs(umd).p``, ...) with its COCO ``instances.json``: every referring sentence of the
  chosen split is one question, answered with the box of its object. Scored by Acc@IoU0.5
  (``grounding_acc``). The original ``refs`` file is a Python pickle: it is read with an
  unpickler that builds nothing but lists, dicts, strings and numbers, so a file asking for
  any other object fails instead of running code; the same records as ``.json`` are read too.
- ``llava``: LLaVA-style conversation records (``formats`` ``conversation`` schema), each
  asked as written; the last answer is the reference, or ``"answers": [...]`` when present.
  Scored by the data module's ``metric``.

A malformed record is a ``BadSampleError`` naming the file and record. Under the ``raise``
policy it stops evaluation before it starts; under ``skip`` it is counted and reported, and
left out (it has no usable question). A missing image is found as early, an unreadable one
when its question is read; under ``skip`` such a question stays in the benchmark,
unanswered, and scores 0. Malformed records and missing images count against the file's
``max_bad_fraction`` (``formats.BadSamplePolicy``), so a wrong image folder stops the
evaluation instead of scoring it.
"""

from __future__ import annotations

import math
import pickle
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from torch.utils.data import Dataset

from mm15_components.data.collate import SampleEncoder
from mm15_components.data.formats import (
    BadSampleError,
    BadSamplePolicy,
    decode_record,
    open_image,
    parse_record,
    read_json_records,
)
from mm15_components.data.prompt import question_turn
from mm15_components.data.schema import Box, EncodedSample, Sample, Turn
from mm15_components.labels import IGNORE_INDEX
from mm15_components.language.tokenizer import IMAGE_TOKEN

BenchmarkName = Literal["textvqa", "docvqa", "infovqa", "chartqa", "refcoco", "llava"]
BENCHMARKS: tuple[str, ...] = get_args(BenchmarkName)
SHORT_ANSWER = "{question}\nAnswer the question using a single word or phrase."
DEFAULT_PROMPTS: dict[str, str] = {
    "textvqa": SHORT_ANSWER,
    "docvqa": SHORT_ANSWER,
    "infovqa": SHORT_ANSWER,
    "chartqa": SHORT_ANSWER,
    "refcoco": "Where is {question}?",
}
"""How each benchmark's questions are asked (``{question}``); ``llava`` records are asked as
written. The short-answer prompt is LLaVA-1.5's; the grounding one is the question form of
the synthetic grounding data."""

IMAGE_FOLDERS = {"textvqa": "train_images", "chartqa": "png"}
"""Where each release keeps its images, relative to the annotation file's folder (default:
that folder itself)."""


@dataclass(frozen=True)
class BenchmarkRecord:
    """One question, checked when its file was read; its images are opened by ``sample``."""

    where: str
    id: str
    turns: list[Turn]
    """The question and a reference answer (for ``val/loss``) as the last turn."""
    images: list[Path]
    metric: str
    answers: list[str] = field(default_factory=list)
    target_box: Box | None = None

    def sample(self) -> Sample:
        """The sample with its images; raises ``BadSampleError`` naming the record."""
        images = [open_image(path, self.where) for path in self.images]
        return Sample(
            turns=list(self.turns),
            images=images,
            id=self.id,
            target_box=self.target_box,
            answers=list(self.answers),
            metric=self.metric,
        )

    def without_images(self) -> Sample:
        """The sample with its image placeholders removed: it stands for a question whose
        images cannot be read."""
        turns = [
            Turn(turn.role, " ".join(turn.content.replace(IMAGE_TOKEN, " ").split()))
            for turn in self.turns
        ]
        return replace(self, turns=turns, images=[]).sample()


def question_record(
    where: str,
    id: Any,
    question: str,
    image: Path,
    metric: str,
    reference: str,
    answers: list[str] | None = None,
    target_box: Box | None = None,
) -> BenchmarkRecord:
    """A record asking ``question`` (the prompted text) about one image."""
    turns = [question_turn(question), Turn("assistant", reference)]
    return BenchmarkRecord(where, str(id), turns, [image], metric, answers or [], target_box)


Reader = Callable[[Any, str, int], "BenchmarkRecord | list[BenchmarkRecord]"]


def read_each(
    records: Sequence[Any], label: str, read: Reader, policy: BadSamplePolicy, source: Path
) -> list[BenchmarkRecord]:
    """``read(record, where, index)`` for each record (``where`` is ``label[index]``); a
    ``BadSampleError`` goes to ``policy`` (raise, or count it against the file ``source``
    and leave the record out)."""
    questions: list[BenchmarkRecord] = []
    for index, record in enumerate(records):
        policy.read(str(source))
        try:
            made = read(record, f"{label}[{index}]", index)
        except BadSampleError as error:
            policy.handle(error, str(source), len(records))
            continue
        questions += made if isinstance(made, list) else [made]
    return questions


def required(record: Any, key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    """``record[key]``, a non-empty value of ``kind``; raises ``BadSampleError`` otherwise."""
    if not isinstance(record, dict):
        raise BadSampleError("malformed_record", f"{where}: a record must be a JSON object")
    value = record.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) or value in ("", []):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BadSampleError(
            "malformed_record", f"{where}: {key!r} must be a non-empty {names}, got {value!r}"
        )
    return value


def required_answers(record: Any, key: str, where: str) -> list[str]:
    answers = required(record, key, where, list)
    if not all(isinstance(answer, str) for answer in answers):
        raise BadSampleError("malformed_record", f"{where}: {key!r} must list strings")
    return answers


def read_json(path: Path) -> Any:
    """The content of a JSON file; raises naming the file."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    return decode_record(path.read_bytes(), f"{path} (one record: the file)")


def data_list(path: Path) -> list[Any]:
    """The ``data`` list of a ``{"data": [...]}`` annotation file."""
    content = read_json(path)
    if not isinstance(content, dict) or not isinstance(content.get("data"), list):
        raise ValueError(f"{path}: expected an object with a 'data' list of questions")
    return content["data"]


def most_common(answers: Sequence[str]) -> str:
    """The answer given most often (the first of those tied)."""
    return Counter(answers).most_common(1)[0][0]


def read_textvqa(
    path: Path, image_root: Path, prompt: str, policy: BadSamplePolicy
) -> list[BenchmarkRecord]:
    def read(record: Any, where: str, index: int) -> BenchmarkRecord:
        question = required(record, "question", where)
        image = image_root / f"{required(record, 'image_id', where)}.jpg"
        answers = required_answers(record, "answers", where)
        question_id = record.get("question_id", index)
        prompted = prompt.format(question=question)
        return question_record(
            where, question_id, prompted, image, "vqa_acc", most_common(answers), answers
        )

    return read_each(data_list(path), f"{path}: data", read, policy, path)


def read_docvqa(
    path: Path, image_root: Path, prompt: str, policy: BadSamplePolicy
) -> list[BenchmarkRecord]:
    def read(record: Any, where: str, index: int) -> BenchmarkRecord:
        question = required(record, "question", where)
        key = "image" if isinstance(record, dict) and "image" in record else "image_local_name"
        image = image_root / required(record, key, where)
        answers = required_answers(record, "answers", where)
        question_id = record.get("questionId", index)
        prompted = prompt.format(question=question)
        return question_record(where, question_id, prompted, image, "anls", answers[0], answers)

    return read_each(data_list(path), f"{path}: data", read, policy, path)


def read_chartqa(
    path: Path, image_root: Path, prompt: str, policy: BadSamplePolicy
) -> list[BenchmarkRecord]:
    records = read_json(path)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a list of {{imgname, query, label}} records")

    def read(record: Any, where: str, index: int) -> BenchmarkRecord:
        question = required(record, "query", where)
        image = image_root / required(record, "imgname", where)
        label = str(required(record, "label", where, (str, int, float)))
        prompted = prompt.format(question=question)
        question_id = f"{path.stem}:{index}"
        return question_record(where, question_id, prompted, image, "relaxed_acc", label, [label])

    return read_each(records, f"{path}: record", read, policy, path)


class PlainDataUnpickler(pickle.Unpickler):
    """Reads pickles of plain data only: any class or function the file names is refused, so
    loading cannot run code from the file."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"the file asks to build {module}.{name}; only lists, dicts, strings and numbers "
            "are read"
        )


def load_refs(path: Path) -> list[Any]:
    """The records of a RefCOCO-style ``refs`` file: the original pickle (read as plain data,
    Python 2 strings as Latin-1) or the same list as ``.json``."""
    if path.suffix == ".json":
        refs = read_json(path)
    else:
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
        try:
            with path.open("rb") as file:
                refs = PlainDataUnpickler(file, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            raise ValueError(f"{path}: cannot read the refs pickle: {error}") from error
    if not isinstance(refs, list):
        raise ValueError(f"{path}: expected a list of refs")
    return refs


def read_refcoco(
    path: Path,
    image_root: Path,
    prompt: str,
    policy: BadSamplePolicy,
    instances: Path,
    split: str,
    encode_box: Callable[[Box, tuple[int, int]], str],
) -> list[BenchmarkRecord]:
    refs = load_refs(path)
    coco = read_json(instances)
    if not isinstance(coco, dict) or not {"images", "annotations"} <= coco.keys():
        raise ValueError(f"{instances}: expected COCO 'images' and 'annotations'")
    images = {image["id"]: image for image in coco["images"]}
    boxes = {annotation["id"]: annotation["bbox"] for annotation in coco["annotations"]}
    in_split = [ref for ref in refs if not isinstance(ref, dict) or ref.get("split") == split]
    if not in_split:
        splits = sorted({str(ref.get("split")) for ref in refs if isinstance(ref, dict)})
        raise ValueError(f"{path}: no refs in split {split!r}; the file has {splits}")

    def read(ref: Any, where: str, index: int) -> list[BenchmarkRecord]:
        sentences = required(ref, "sentences", where, list)
        ann_id, image_id = ref.get("ann_id"), ref.get("image_id")
        if ann_id not in boxes or image_id not in images:
            raise BadSampleError(
                "malformed_record",
                f"{where}: ann_id {ann_id!r} or image_id {image_id!r} is not in {instances}",
            )
        x, y, w, h = boxes[ann_id]
        box = (float(x), float(y), float(x + w), float(y + h))
        image = images[image_id]
        answer = encode_box(box, (int(image["height"]), int(image["width"])))
        questions = []
        for number, sentence in enumerate(sentences):
            text = required(sentence, "sent", f"{where} sentence {number}")
            questions.append(
                question_record(
                    f"{where} sentence {number}",
                    f"{ref.get('ref_id', index)}:{sentence.get('sent_id', number)}",
                    prompt.format(question=text),
                    image_root / image["file_name"],
                    "grounding_acc",
                    answer,
                    target_box=box,
                )
            )
        return questions

    return read_each(in_split, f"{path}: {split} ref", read, policy, path)


def read_llava(
    path: Path, image_root: Path, metric: str, policy: BadSamplePolicy
) -> list[BenchmarkRecord]:
    lines = read_json_records(path, policy)

    def read(line: tuple[Any, str], where: str, index: int) -> BenchmarkRecord:
        record, where = line
        turns, images = parse_record(record, "conversation", where)
        answers = record["answers"] if "answers" in record else [turns[-1].content]
        if not answers or not all(isinstance(a, str) for a in answers):
            raise BadSampleError("malformed_record", f"{where}: 'answers' must list strings")
        paths = [image_root / image for image in images]
        return BenchmarkRecord(where, str(record.get("id", where)), turns, paths, metric, answers)

    return read_each(lines, str(path), read, policy, path)


def read_benchmark(
    benchmark: BenchmarkName,
    path: Path,
    policy: BadSamplePolicy,
    image_root: Path | None = None,
    prompt: str | None = None,
    split: str = "val",
    instances: Path | None = None,
    metric: str = "exact_match",
    encode_box: Callable[[Box, tuple[int, int]], str] | None = None,
) -> list[BenchmarkRecord]:
    """Every question of a benchmark file (see the module doc). Bad records go to
    ``policy``; a question whose image is missing goes to it too, and is kept when it
    returns (``skip``), to be scored 0."""
    prompt = prompt or DEFAULT_PROMPTS.get(benchmark, "{question}")
    try:
        prompt.format(question="")
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"the prompt may hold no field but {{question}}: {prompt!r}") from error
    if "{question}" not in prompt:
        raise ValueError(f"the prompt must contain {{question}}, got {prompt!r}")
    root = image_root or path.parent / IMAGE_FOLDERS.get(benchmark, "")
    if benchmark == "textvqa":
        records = read_textvqa(path, root, prompt, policy)
    elif benchmark in ("docvqa", "infovqa"):
        records = read_docvqa(path, root, prompt, policy)
    elif benchmark == "chartqa":
        records = read_chartqa(path, root, prompt, policy)
    elif benchmark == "refcoco":
        if encode_box is None:
            raise ValueError("refcoco needs encode_box to write its reference answers")
        instances = instances or path.parent / "instances.json"
        records = read_refcoco(path, root, prompt, policy, instances, split, encode_box)
    elif benchmark == "llava":
        records = read_llava(path, root, metric, policy)
    else:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {BENCHMARKS}")
    for record in records:
        missing = [image for image in record.images if not image.is_file()]
        if missing:
            where = f"{record.where}: image {missing[0]} not found"
            policy.handle(BadSampleError("missing_file", where), str(path), len(records))
    if not records:
        raise ValueError(f"{path}: no usable questions")
    return records


class EncodedBenchmark(Dataset):
    """One rank's share of a benchmark, encoded: questions ``rank``, ``rank + world``, ...,
    then unscored copies so every rank runs as many steps (their generation passes must
    line up under sharding); a copy carries no metric and no loss.

    A question whose images cannot be read goes to ``policy``: under ``skip`` it is encoded
    without them and carries the error, so validation scores it 0 without asking.
    """

    def __init__(
        self,
        records: list[BenchmarkRecord],
        encoder: SampleEncoder,
        policy: BadSamplePolicy,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.records = records
        self.encoder = encoder
        self.policy = policy
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return math.ceil(len(self.records) / self.world)

    def __getitem__(self, index: int) -> EncodedSample:
        if not 0 <= index < len(self):
            raise IndexError(f"question {index} of a share of {len(self)}")
        position = self.rank + index * self.world
        item = self.encode(self.records[position % len(self.records)])
        if position >= len(self.records):
            item["metric"] = None
            item["labels"][:] = IGNORE_INDEX
        return item

    def encode(self, record: BenchmarkRecord) -> EncodedSample:
        try:
            return self.encoder(record.sample())
        except BadSampleError as error:
            self.policy.handle(error)
            item = self.encoder(record.without_images())
            item["labels"][:] = IGNORE_INDEX
            item["error"] = str(error)
            return item
