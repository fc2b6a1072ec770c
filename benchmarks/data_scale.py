"""Sources of up to millions of records: start-up time and memory per process, with and without
DataLoader workers, and token-budget lengths, for the indexed ``JSONSource`` beside the
previous loading (every record parsed into Python objects when the source is built; a copy
of that code is kept below as the reference) and Hugging Face ``datasets``
(``load_dataset("json")``, optional), side by side.

The data: a LLaVA-style ``.jsonl`` file (and the same records as a ``.json`` list) of
``--records`` conversations of about 470 bytes, one image each under a unique name; the
names are hard links to 16 JPEGs of 64-640 px, so a million of them take no space.

Each case runs in a fresh process, which reports its RSS after imports (the baseline), the
time to build the source, and its RSS and peak RSS after, over the baseline. The worker cases
then read ``--batches`` batches of 32 through 4 DataLoader workers (the SFT recipe's 64 px,
16-token encoding) and report each process's RSS and private memory (pages not shared with
the others: what copy-on-write costs). The lengths case times ``MixtureDataset.lengths()``
for ``--lengths`` items at the MM1.5 SFT geometry (AnyRes tiles of 378 px, 4..9 tiles, 144
tokens each, tile indicators), first run and cached, against the previous way (encoding every
item, images decoded and split) on ``--old_lengths`` items. ``--recipe`` also times
``mm15 fit --config recipes/sft.yaml`` for 3 steps with its ``general`` source read from the
file, beside the same run of the code of git commit ``--previous`` (the previous loading).

    HF_HUB_OFFLINE=1 python benchmarks/data_scale.py --records 1000000 [--dir /tmp/mm15-scale]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from mm15_components.data.collate import SampleEncoder, collate
from mm15_components.data.conversation import ConversationDataModule, EncodedSource
from mm15_components.data.encoding import data_tokenizer
from mm15_components.data.formats import (
    FORMATS,
    BadSampleError,
    BadSamplePolicy,
    Format,
    JSONSource,
    load_json,
    open_image,
    parse_record,
)
from mm15_components.data.loader import Loader
from mm15_components.data.mixture import Mixture, MixtureDataset, Source
from mm15_components.data.schema import Sample, Turn
from mm15_components.grounding.codec import BoxCodec
from mm15_components.vision.anyres import AnyResSplitter

BATCH = 32
WORKERS = 4
WORDS = (
    "the a image shows picture photo of with in on and near left right top bottom red blue "
    "green small large people person dog cat car street table sign text reads what where "
    "how many is are there describe detail color two three background front"
).split()


# ---- the previous loading, kept as the reference -----------------------------------------
def previous_read_json_records(path: Path, policy: BadSamplePolicy) -> list[tuple[Any, str]]:
    """The records of a ``.jsonl`` or ``.json`` file, each with where it is, all parsed now."""
    if path.suffix == ".jsonl":
        records = []
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    records.append((load_json(line, where), where))
                except BadSampleError as error:
                    policy.handle(error)
        return records
    data = load_json(path.read_text(encoding="utf-8"), str(path))
    return [(record, f"{path}: record {index}") for index, record in enumerate(data)]


class PreviousJSONSource(Dataset):
    """The samples of one file, every record parsed into turns when the source is built."""

    def __init__(self, path: Path, format: Format, image_root: Path) -> None:
        assert format in FORMATS
        self.image_root = image_root
        policy = BadSamplePolicy("raise")
        self.records: list[tuple[str, str, list[Turn], list[str]]] = []
        for record, where in previous_read_json_records(path, policy):
            turns, images = parse_record(record, format, where)
            self.records.append((where, str(record.get("id", where)), turns, images))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        where, sample_id, turns, paths = self.records[index]
        images = [open_image(self.image_root / path, where) for path in paths]
        return Sample(turns=list(turns), images=images, id=sample_id)


class DatasetsSource(Dataset):
    """The samples of a Hugging Face ``datasets`` table of the same records."""

    def __init__(self, table: Any, image_root: Path) -> None:
        self.table = table
        self.image_root = image_root

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> Sample:
        record = self.table[index]
        where = f"row {index}"
        turns, paths = parse_record(record, "conversation", where)
        images = [open_image(self.image_root / path, where) for path in paths]
        return Sample(turns=turns, images=images, id=record["id"])


# ---- data ---------------------------------------------------------------------------------
def generate(folder: Path, records: int) -> Path:
    """``records.jsonl``/``records.json`` of ``records`` conversations and their image names
    (kept between runs of the same size)."""
    path = folder / "records.jsonl"
    done = folder / f"done-{records}"
    if done.is_file():
        return path
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "images").mkdir(parents=True)
    rng = random.Random(0)
    bases = []
    for k in range(16):
        width, height = rng.randrange(64, 641), rng.randrange(64, 641)
        pixels = np.linspace(0, 255, width * height * 3) % 256
        image = Image.fromarray(pixels.reshape(height, width, 3).astype(np.uint8))
        bases.append(folder / f"base-{k}.jpg")
        image.save(bases[-1], quality=90)
    with open(path, "w") as jsonl, open(folder / "records.json", "w") as listed:
        listed.write("[\n")
        for k in range(records):
            image = f"{k // 1000:04d}/{k:07d}.jpg"
            if k % 1000 == 0:
                (folder / "images" / image).parent.mkdir()
            os.link(bases[k % 16], folder / "images" / image)
            question = " ".join(rng.choices(WORDS, k=rng.randrange(8, 24))) + "?"
            answer = " ".join(rng.choices(WORDS, k=rng.randrange(30, 60))) + "."
            record = {
                "id": f"{k:07d}",
                "image": image,
                "conversations": [
                    {"from": "human", "value": f"<image>\n{question}"},
                    {"from": "gpt", "value": answer},
                ],
            }
            line = json.dumps(record)
            jsonl.write(line + "\n")
            listed.write(("" if k == 0 else ",\n") + line)
        listed.write("\n]\n")
    done.touch()
    return path


# ---- measurements (in the process of one case) --------------------------------------------
def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def memory_mb(pid: int | str = "self") -> tuple[float, float]:
    """``(PSS, private)`` of a process, MB: its share of the pages it maps (each page divided
    by the processes mapping it: PSS sums to the memory used), and the pages only it maps
    (its own and those copied on write)."""
    pss = private = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            pss += int(line.split()[1])
        elif line.startswith(("Private_Clean:", "Private_Dirty:")):
            private += int(line.split()[1])
    return pss / 1024, private / 1024


def reset_peak() -> None:
    """Start the peak RSS (VmHWM) over from the current RSS (Linux 4.0+)."""
    Path("/proc/self/clear_refs").write_text("5")


def cpu_seconds() -> float:
    """CPU time of this process and its finished children."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def open_source(kind: str, folder: Path) -> Dataset:
    images = folder / "images"
    if kind == "indexed":
        return JSONSource(folder / "records.jsonl", image_root=images)
    if kind == "indexed_json":
        return JSONSource(folder / "records.json", image_root=images)
    if kind == "previous":
        return PreviousJSONSource(folder / "records.jsonl", "conversation", images)
    if kind == "datasets":
        from datasets import load_dataset

        table = load_dataset(
            "json", data_files=str(folder / "records.jsonl"), split="train",
            cache_dir=str(folder / "hf-cache"),
        )  # fmt: skip
        return DatasetsSource(table, images)
    raise ValueError(kind)


def build_case(kind: str, folder: Path, first: bool) -> dict[str, float]:
    """Time and memory of building one source (``first``: no cache yet)."""
    if kind == "datasets":
        import datasets  # noqa: F401 (its import is part of the baseline)
    if first:
        for cache in ("records.jsonl.mm15-index", "records.json.mm15-index", "hf-cache"):
            shutil.rmtree(folder / cache, ignore_errors=True)
    baseline = rss_mb()
    reset_peak()
    start = time.perf_counter()
    source = open_source(kind, folder)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rss": rss_mb() - baseline,
        "peak": peak_mb() - baseline,
        "baseline": baseline,
        "samples": len(source),
    }


def sft_encoder(tokenizer: Any, splitter: AnyResSplitter | None = None) -> SampleEncoder:
    if splitter is None:  # the SFT recipe as shipped: 64 px, 16 tokens per image
        return SampleEncoder(tokenizer, 64, 16, (0.5,) * 3, (0.5,) * 3)
    return SampleEncoder(tokenizer, 378, 144, (0.5,) * 3, (0.5,) * 3, None, splitter, "index")


def workers_case(kind: str, folder: Path, batches: int) -> dict[str, Any]:
    """Memory of the main process and each worker after ``batches`` batches."""
    if kind == "datasets":
        import datasets  # noqa: F401
    baseline = rss_mb()
    tokenizer = data_tokenizer(None, BoxCodec(), WORDS)
    encoded = EncodedSource(open_source(kind, folder), sft_encoder(tokenizer))
    mixture = MixtureDataset([encoded], ["general"], np.ones(1), batches * BATCH, seed=1)
    loader = DataLoader(
        mixture,
        batch_size=BATCH,
        num_workers=WORKERS,
        collate_fn=partial(collate, pad_token_id=tokenizer.pad_token_id),
    )
    start = time.perf_counter()
    iterator = iter(loader)
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    workers = children(os.getpid())
    processes = ["self", *workers]
    result = {
        "seconds": seconds,
        "rss": [rss_mb(pid) for pid in processes],
        "pss_private": [memory_mb(pid) for pid in processes],
        "baseline": baseline,
    }
    del iterator
    return result


def lengths_case(folder: Path, items: int, old_items: int) -> dict[str, float]:
    """``MixtureDataset.lengths()`` of ``items`` items at the SFT geometry: first run (counted
    here, then by 2 worker processes), cached, and the previous way (encoding each item) on
    ``old_items``."""
    tokenizer = data_tokenizer(None, BoxCodec(), WORDS)
    splitter = AnyResSplitter(tile_size=378, min_tiles=4, max_tiles=9)
    source = JSONSource(folder / "records.jsonl", image_root=folder / "images")

    def lengths(size: int, workers: int = 0, fresh: bool = False) -> tuple[np.ndarray, float]:
        """The lengths, wall time and CPU time (this process and its workers)."""
        if fresh:
            for cached in source.index.folder.glob("tokens-*"):
                cached.unlink()
        encoded = EncodedSource(source, sft_encoder(tokenizer, splitter), count_workers=workers)
        mixture = MixtureDataset([encoded], ["general"], np.ones(1), size, seed=2)
        start, cpu = time.perf_counter(), cpu_seconds()
        lengths = mixture.lengths()
        return lengths, time.perf_counter() - start, cpu_seconds() - cpu

    first, first_seconds, first_cpu = lengths(items, fresh=True)
    two, two_seconds, two_cpu = lengths(items, workers=2, fresh=True)
    again, cached_seconds, _ = lengths(items)
    assert np.array_equal(first, again) and np.array_equal(first, two)
    encoded = EncodedSource(source, sft_encoder(tokenizer, splitter))
    previous = MixtureDataset([encoded], ["general"], np.ones(1), items, seed=2)
    start = time.perf_counter()
    old = [len(previous[i]["input_ids"]) for i in range(old_items)]
    old_seconds = time.perf_counter() - start
    assert old == first[:old_items].tolist(), "counts differ from the full encoding"
    return {
        "first": first_seconds,
        "first_cpu": first_cpu,
        "two_workers": two_seconds,
        "two_workers_cpu": two_cpu,
        "cached": cached_seconds,
        "old_per_item": old_seconds / old_items,
        "new_per_item": first_seconds / items,
        "mean_tokens": float(first.mean()),
    }


def standins_case(items: int, old_items: int) -> dict[str, float]:
    """``lengths()`` of ``items`` items of the SFT recipe's stand-ins (rendered, not split),
    against encoding each item, per item."""
    recipe = Path(__file__).parents[1] / "recipes" / "sft.yaml"
    train = yaml.safe_load(recipe.read_text())["data"]["init_args"]["train"]
    mixture = Mixture([Source(**source) for source in train.pop("sources")], **train)
    data = ConversationDataModule(
        mixture, train_samples=items, val_samples=8, loader=Loader(max_tokens=4096)
    )
    start = time.perf_counter()
    data.setup("fit")  # counts the lengths
    seconds = time.perf_counter() - start
    lengths = data.train_set.lengths()
    start = time.perf_counter()
    old = [len(data.train_set[i]["input_ids"]) for i in range(old_items)]
    old_seconds = time.perf_counter() - start
    assert old == lengths[:old_items].tolist(), "counts differ from the full encoding"
    return {
        "seconds": seconds,
        "per_item": seconds / items,
        "old_per_item": old_seconds / old_items,
    }


def recipe_case(folder: Path, commit: str | None) -> dict[str, float]:
    """``mm15 fit --config recipes/sft.yaml`` with its ``general`` source read from the file:
    wall and CPU time of 3 training steps (imports included) and peak RSS, with this tree's
    code or that of git ``commit`` (its ``src`` and ``recipes``)."""
    root = Path(__file__).parents[1]
    env = dict(os.environ)
    if commit is not None:
        tree = folder / f"tree-{commit}"
        if not tree.is_dir():
            tree.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(root), "archive", commit, "src", "recipes"],
                check=True,
                capture_output=True,
            )
            subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
        root, env["PYTHONPATH"] = tree, str(tree / "src")
    recipe = root / "recipes" / "sft.yaml"
    train = yaml.safe_load(recipe.read_text())["data"]["init_args"]["train"]
    train["sources"][0].update(
        path=str(folder / "records.jsonl"), image_root=str(folder / "images")
    )
    override = folder / "sft-override.yaml"
    override.write_text(yaml.safe_dump({"data": {"init_args": {"train": train}}}))
    command = [sys.executable, "-m", "mm15_components", "fit", "--config", str(recipe)]
    command += ["--config", str(override), "--trainer.max_steps=3", "--trainer.logger=false"]
    command += [
        f"--trainer.default_root_dir={folder / 'run'}",
        "--trainer.enable_progress_bar=false",
    ]
    start, cpu = time.perf_counter(), cpu_seconds()
    subprocess.run(command, check=True, capture_output=True, env=env)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": seconds, "cpu": cpu, "peak": peak}


# ---- the driver ---------------------------------------------------------------------------
def run_case(arguments: argparse.Namespace, *case: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--dir", str(arguments.dir), "--case", *case]
    command += ["--batches", str(arguments.batches), "--lengths", str(arguments.lengths)]
    command += ["--old_lengths", str(arguments.old_lengths), "--records", str(arguments.records)]
    output = subprocess.run(command, capture_output=True, text=True)
    for line in output.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"case {case} failed:\n{output.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mm15-data-scale"))
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--lengths", type=int, default=100_000)
    parser.add_argument("--old_lengths", type=int, default=200)
    parser.add_argument("--no_datasets", action="store_true", help="leave datasets out")
    parser.add_argument("--recipe", action="store_true", help="also time the SFT recipe")
    parser.add_argument(
        "--previous",
        default="3037282",
        help="the git commit whose recipe run is timed beside this tree's (the previous loading)",
    )
    parser.add_argument(
        "--workers_kinds",
        nargs="*",
        default=["indexed", "previous", "datasets"],
        help="sources to read with workers (the previous loading's 4 workers may each copy "
        "all its records: about 3 GB each for a million)",
    )
    parser.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    folder = arguments.dir
    torch.set_num_threads(1)
    if arguments.case:
        kind, *rest = arguments.case
        if kind == "build":
            result = build_case(rest[0], folder, rest[1] == "first")
        elif kind == "workers":
            result = workers_case(rest[0], folder, arguments.batches)
        elif kind == "recipe":
            result = recipe_case(folder, rest[0] if rest else None)
        elif kind == "standins":
            result = standins_case(arguments.lengths // 10, arguments.old_lengths)
        else:
            result = lengths_case(folder, arguments.lengths, arguments.old_lengths)
        print("RESULT " + json.dumps(result))
        return

    start = time.perf_counter()
    generate(folder, arguments.records)
    print(f"{arguments.records} records in {folder} ({time.perf_counter() - start:.0f} s)")
    print(f"load average before: {os.getloadavg()}")
    kinds = ["indexed", "indexed_json", "previous"]
    if not arguments.no_datasets:
        kinds.append("datasets")
    print("\nbuilding a source: seconds, RSS and peak RSS over the import baseline (MB)")
    builds = {}
    for kind in kinds:
        runs = ["first", "cached"] if kind != "previous" else ["first"]
        for run in runs:
            result = run_case(arguments, "build", kind, run)
            builds[kind, run] = result
            print(
                f"  {kind:13} {run:7} {result['seconds']:7.1f} s  RSS +{result['rss']:6.0f}  "
                f"peak +{result['peak']:6.0f}  (baseline {result['baseline']:.0f})"
            )
    base = builds["previous", "first"]
    for kind in kinds:
        if kind != "previous":
            result = builds[kind, "first"]
            print(
                f"  {kind} first run vs the previous loading: "
                f"{base['seconds'] / result['seconds']:.1f}x faster, "
                f"{base['peak'] / max(result['peak'], 1):.1f}x less peak memory"
            )

    print(
        f"\n{WORKERS} workers after {arguments.batches} batches of {BATCH}, MB: RSS, PSS "
        "(shared pages divided among the processes that map them) and private memory (pages "
        "no other process maps: its own and those copied on write), of the main process and "
        "of each worker; the PSS sum is the memory the loader uses"
    )
    for kind in [k for k in kinds if k in arguments.workers_kinds]:
        result = run_case(arguments, "workers", kind)
        main, *workers = (
            f"{rss:.0f}/{pss:.0f}/{private:.0f}"
            for rss, (pss, private) in zip(result["rss"], result["pss_private"], strict=True)
        )
        total = sum(pss for pss, _ in result["pss_private"])
        print(
            f"  {kind:9} {result['seconds']:6.1f} s  main {main}; workers {', '.join(workers)}; "
            f"PSS sum {total:.0f} (import baseline {result['baseline']:.0f})"
        )

    result = run_case(arguments, "lengths")
    print(
        f"\ntoken-budget lengths of {arguments.lengths} items (AnyRes 378 px, 4..9 tiles, 144 "
        f"tokens; mean {result['mean_tokens']:.0f} tokens), first run: {result['first']:.1f} s "
        f"({result['first_cpu']:.1f} s of CPU); counted by 2 workers {result['two_workers']:.1f}"
        f" s ({result['two_workers_cpu']:.1f} s of CPU); cached {result['cached']:.1f} s. Per "
        f"item {result['new_per_item'] * 1e3:.2f} ms vs {result['old_per_item'] * 1e3:.1f} ms "
        f"encoding each ({result['old_per_item'] / result['new_per_item']:.0f}x)"
    )
    result = run_case(arguments, "standins")
    print(
        f"lengths of {arguments.lengths // 10} items of the SFT recipe's stand-ins (64 px, "
        f"rendered, not encoded): {result['seconds']:.1f} s, {result['per_item'] * 1e3:.2f} ms "
        f"per item vs {result['old_per_item'] * 1e3:.2f} ms encoding each "
        f"({result['old_per_item'] / result['per_item']:.1f}x)"
    )
    if arguments.recipe:
        print("\nmm15 fit --config recipes/sft.yaml, its general source the file, 3 steps:")
        for name, commit in (("this tree", None), (arguments.previous, arguments.previous)):
            result = run_case(arguments, "recipe", *([commit] if commit else []))
            print(
                f"  {name:10} {result['seconds']:6.1f} s ({result['cpu']:.1f} s of CPU), "
                f"peak RSS {result['peak']:.0f} MB"
            )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
