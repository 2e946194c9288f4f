"""Data throughput at 224 px: JPEG decoding vs the prepared cache (``prepared = true``), per worker.

Reads the JPEGs that benchmarks/perf/scale.py writes (256×256, quality 90; written here if missing) and
measures, on one process (one DataLoader worker's share):
- decode: ``decode_image`` (PIL open + RGB + bilinear resize + centre crop) per image;
- prepared: batches copied out of the memory-mapped prepared file (page cache warm);
then the one-off cost of building the prepared file, and whole passes through ``iterate_batches`` with
``--workers`` DataLoader workers for both sets (what the training loop sees).

    python benchmarks/perf/decode.py [--images 1000] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from scale import CLASSES, write_dataset  # noqa: E402  (the same images as the scale audit)

from hashbench import iterate_batches  # noqa: E402
from hashbench_plugins.datasets.files import FileImageSet, decode_image, prepared  # noqa: E402


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f} images/s ({seconds:.2f} s for {count})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/tmp/hashbench-scale")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    root = Path(args.root)
    names = write_dataset(root, args.images)[: args.images]
    labels = torch.nn.functional.one_hot(torch.arange(len(names)) % CLASSES, CLASSES).float()
    files = FileImageSet([str(root / n) for n in names], labels, args.size)

    started = time.perf_counter()
    for path in files.paths:
        decode_image(path, args.size)
    decode = time.perf_counter() - started

    cache = Path(tempfile.mkdtemp())
    started = time.perf_counter()
    ready = prepared(files, cache, workers=args.workers)
    build = time.perf_counter() - started
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(0))
    ready.images(order)  # warm the page cache, as every epoch after the first finds it
    started = time.perf_counter()
    for batch in order.split(64):
        ready.images(batch)
    read = time.perf_counter() - started

    passes = {}
    for name, image_set in (("files", files), ("prepared", ready)):
        started = time.perf_counter()
        for _ in iterate_batches(image_set, 64, shuffle=True, generator=torch.Generator().manual_seed(0),
                                 num_workers=args.workers):
            pass
        passes[name] = time.perf_counter() - started

    print(f"{len(names)} JPEGs 256×256 -> {args.size} px, torch threads {torch.get_num_threads()}\n")
    print("| what | throughput |\n|---|---|")
    print(f"| decode, one process | {rate(len(names), decode)} |")
    print(f"| prepared read (random batches of 64, page cache warm), one process | {rate(len(names), read)} |")
    print(f"| building the prepared file, {args.workers} processes (once) | {rate(len(names), build)} |")
    print(f"| a shuffled pass, iterate_batches, {args.workers} workers, files | {rate(len(names), passes['files'])} |")
    print(f"| a shuffled pass, iterate_batches, {args.workers} workers, prepared | {rate(len(names), passes['prepared'])} |")
    size = ready.path.stat().st_size
    print(f"\nprepared file: {size / 2**20:.0f} MiB ({size / len(names) / 1024:.0f} KiB an image)")


if __name__ == "__main__":
    main()
