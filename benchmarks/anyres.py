"""Throughput of AnyResSplitter vs transformers' LLaVA-NeXT image processors, side by side.

All turn the same decoded images (uint8 CHW tensors, then PIL images) into normalised
float32 tiles of 378 px with 4..9-tile grids plus one overview, one image per call as in a
DataLoader worker, on the same number of torch threads (2, `--threads`). Calls are
interleaved image by image so that load from other processes hits every contender alike,
and the pass over all images is repeated. Each call's time is the best of the repeats for
that image and contender (the least disturbed run, the same rule for all); the range of the
ratio over the single passes is printed beside it. Also printed: the peak resident memory a
pass adds (Linux VmHWM, reset after returning freed heap to the OS).

On a busy machine, multi-threaded steps wait for their second thread to be scheduled, so
ratios at 2 threads depend on the load; `--threads 1` measures the work itself, as in a
DataLoader worker (one torch thread each).

    HF_HUB_OFFLINE=1 python benchmarks/anyres.py [--images 32] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
from collections.abc import Callable, Sequence
from functools import partial

import torch
from PIL import Image
from timing import timed
from transformers import LlavaNextImageProcessor
from transformers.models.llava_next.image_processing_pil_llava_next import (
    LlavaNextImageProcessorPil,
)

from mm15_components.vision.anyres import AnyResSplitter, candidate_grids

TILE = 378
MIN_TILES, MAX_TILES = 4, 9
Contender = Callable[[object], int]  # processes one image, returns the images it produced


def make_images(count: int, seed: int) -> list[torch.Tensor]:
    """Band-limited random images, 300-2200 px a side, aspect ratios from about 1:7 to 7:1."""
    generator = torch.Generator().manual_seed(seed)
    images = []
    for _ in range(count):
        height, width = torch.randint(300, 2201, (2,), generator=generator).tolist()
        coarse = torch.rand(1, 3, height // 16 + 2, width // 16 + 2, generator=generator)
        smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")
        images.append((smooth[0] * 255).round().to(torch.uint8))
    return images


def _memory_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_mib(run: Contender, images: Sequence[object]) -> float:
    """Peak RSS added by one pass, after handing freed heap back so reuse cannot hide it."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets this process's peak-RSS watermark (VmHWM)
    baseline = _memory_kib("VmRSS:")
    for image in images:
        run(image)
    return (_memory_kib("VmHWM:") - baseline) / 1024


def time_calls(
    contenders: dict[str, Contender], images: Sequence[object]
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Seconds per image and encoder images per input for each contender, interleaved."""
    names = list(contenders)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    produced = dict.fromkeys(names, 0)
    for index, image in enumerate(images):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            took, images_out = timed(partial(contenders[name], image))
            produced[name] += images_out
            seconds[name].append(took)
    return seconds, {name: produced[name] / len(images) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads, for all alike")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tensors = make_images(args.images, args.seed)
    pil_images = [Image.fromarray(t.permute(1, 2, 0).numpy()) for t in tensors]
    pinpoints = [[rows * TILE, cols * TILE] for rows, cols in candidate_grids(MIN_TILES, MAX_TILES)]
    peer_config = {
        "size": {"height": TILE, "width": TILE},
        "crop_size": {"height": TILE, "width": TILE},
        "image_grid_pinpoints": pinpoints,
    }
    peers = {
        "LlavaNextImageProcessor": LlavaNextImageProcessor(**peer_config),
        "LlavaNextImageProcessorPil": LlavaNextImageProcessorPil(**peer_config),
    }
    splitters = {
        f"AnyResSplitter ({policy})": AnyResSplitter(
            tile_size=TILE, min_tiles=MIN_TILES, max_tiles=MAX_TILES, policy=policy
        )
        for policy in ("mm15", "llava")
    }
    contenders: dict[str, Contender] = {
        name: lambda image, split=split: split(image)[0].shape[0]
        for name, split in splitters.items()
    }
    contenders |= {
        name: lambda image, peer=peer: peer(image, return_tensors="pt")["pixel_values"].shape[1]
        for name, peer in peers.items()
    }
    sides = [side for t in tensors for side in t.shape[1:]]
    print(
        f"{args.images} images, sides {min(sides)}-{max(sides)} px, tile {TILE}, "
        f"grids {MIN_TILES}..{MAX_TILES} + overview, torch threads {torch.get_num_threads()}, "
        f"best of {args.repeats} passes per call"
    )
    results = {}
    for input_name, inputs in [("tensor", tensors), ("PIL", pil_images)]:
        time_calls(contenders, inputs[:8])  # warm-up: the allocator settles into reuse
        results[input_name] = [time_calls(contenders, inputs) for _ in range(args.repeats)]
    # Memory passes come last: returning freed heap to the OS would slow the timed passes.
    print(f"{'input':7} {'contender':27} {'images/s':>9} {'out/img':>8} {'peak MiB':>9}  ratios")
    for input_name, inputs in [("tensor", tensors), ("PIL", pil_images)]:
        passes = [seconds for seconds, _ in results[input_name]]
        best = {  # per image, the best of the passes
            name: sum(min(times) for times in zip(*(run[name] for run in passes), strict=True))
            for name in contenders
        }
        for name in contenders:
            rate = len(inputs) / best[name]
            per_image = results[input_name][0][1][name]
            memory = peak_memory_mib(contenders[name], inputs)
            ratios = ""
            if name in splitters:
                ratios = "  ".join(
                    f"x{best[peer] / best[name]:.1f} "
                    f"({format_range([sum(run[peer]) / sum(run[name]) for run in passes])}) "
                    f"vs {peer}"
                    for peer in peers
                )
            print(f"{input_name:7} {name:27} {rate:9.2f} {per_image:8.2f} {memory:9.1f}  {ratios}")


def format_range(values: Sequence[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}"


if __name__ == "__main__":
    main()
