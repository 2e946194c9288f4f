"""Scale audit on the CPU: peak memory of every stage kind at two database sizes of a file-backed dataset.

Writes a ``listfile`` dataset of 256×256 JPEGs (decoded and resized to 224 px, as the real presets are),
then, for each database size, runs a small benchmark on it (convnet width 4, one epoch, BadNets, one
defense of each level: jpeg, strip, finetune, spectral, plus the undefended row) in a fresh process,
stage by stage, and records each stage's peak RSS: the main process's own peak (``VmHWM``, reset before
every stage through ``/proc/self/clear_refs``, after freed memory is returned with ``malloc_trim``, and
the RSS the stage starts from). DataLoader workers are forked per pass and hold the batches
they decode (``prefetch_factor`` per worker), whatever the set's size. The table shows both sizes side by
side and the growth the database itself explains (its codes, labels and paths).

    python benchmarks/perf/scale.py [--train 500] [--queries 100] [--databases 2000 8000] [--prepared]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

CLASSES = 10
BITS = 16
BENCH = """
[benchmark]
name = "scale"
seeds = [0]
device = "cpu"
results = "{results}"

[dataset]
name = "listfile"
root = "{root}"
list_dir = "{lists}"
image_size = 224
{prepared}

[victim]
method = "csq"
backbone = "convnet"
bits = {bits}
epochs = 1
batch_size = 64
num_workers = 2
backbone_params.convnet = {{ width = 4 }}

[target]
label = 0

[[attack]]
name = "badnets"
poison_rate = 0.05

[[defense]]
name = "jpeg"

[[defense]]
name = "strip"

[[defense]]
name = "finetune"
epochs = 1

[[defense]]
name = "spectral"
"""


def _write_image(args: tuple[Path, int, int]) -> None:
    """A 256×256 JPEG: a class-coloured field with a few random blobs (compresses like a photo, not like noise)."""
    from PIL import Image, ImageDraw

    path, index, label = args
    if path.exists():
        return
    rng = np.random.default_rng(index)
    hue = np.array([label * 25 % 256, (label * 70 + 40) % 256, (255 - label * 20) % 256], dtype=np.float32)
    grid = rng.normal(hue, 40, (4, 4, 3)).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(grid).resize((256, 256), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x, y, r = rng.integers(0, 256), rng.integers(0, 256), rng.integers(8, 40)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    img.save(path, quality=90)


def write_dataset(root: Path, images: int) -> list[str]:
    """``images`` JPEGs under root/img (kept between runs); returns their relative paths."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    names = [f"img/{i:06d}.jpg" for i in range(images)]
    with Pool(2) as pool:
        pool.map(_write_image, [(root / n, i, i % CLASSES) for i, n in enumerate(names)], chunksize=64)
    return names


def write_lists(folder: Path, names: list[str], train: int, queries: int, database: int) -> None:
    """Queries are the first images; the database the next ``database``; training images its first ``train``."""
    folder.mkdir(parents=True, exist_ok=True)

    def line(i: int) -> str:
        onehot = ["0"] * CLASSES
        onehot[i % CLASSES] = "1"
        return f"{names[i]} {' '.join(onehot)}\n"

    (folder / "test.txt").write_text("".join(line(i) for i in range(queries)))
    (folder / "database.txt").write_text("".join(line(i) for i in range(queries, queries + database)))
    (folder / "train.txt").write_text("".join(line(i) for i in range(queries, queries + train)))


# ------------------------------------------------------------------------------------ the child run


def _status_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def run_stages(bench: Path) -> None:
    """Runs every stage of ``bench`` in plan order; prints one JSON line per stage."""
    import torch

    from hashbench.benchmark import plan_run
    from hashbench.config import load_spec
    from hashbench.runner import StageRunner

    torch.set_num_threads(2)
    spec = load_spec(bench)
    runner = StageRunner(spec.settings.results, device="cpu")
    for stage in plan_run(spec).ordered():
        # what earlier stages freed goes back to the system first, so `start` is what is still alive
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        start = _status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        started = time.perf_counter()
        outcome = runner.run(stage)
        print(json.dumps({
            "kind": stage.kind, "label": stage.label, "status": outcome.status,
            "seconds": time.perf_counter() - started, "peak_mib": _status_kib("VmHWM") / 1024, "start_mib": start / 1024,
        }), flush=True)


# ------------------------------------------------------------------------------------ the audit


def short(label: str) -> str:
    """A stage label without the dataset/victim/seed part."""
    label = re.sub(r" listfile csq/convnet/\d+b seed=0", "", label)
    return re.sub(r" on listfile seed=0", "", label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/tmp/hashbench-scale", help="where the images, lists and results go")
    parser.add_argument("--train", type=int, default=500)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--databases", type=int, nargs="+", default=[2000, 8000])
    parser.add_argument("--prepared", action="store_true", help="use the prepared cache (prepared = true)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_stages(Path(args.child))
        return
    root = Path(args.root)
    started = time.perf_counter()
    names = write_dataset(root, args.queries + max(args.databases))
    print(f"{len(names)} JPEGs under {root / 'img'} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    runs: dict[int, list[dict]] = {}
    for database in args.databases:
        tag = f"db{database}" + ("-prepared" if args.prepared else "")
        lists = root / tag
        write_lists(lists, names, args.train, args.queries, database)
        bench = root / f"{tag}.toml"
        bench.write_text(BENCH.format(results=root / "results" / tag, root=root, lists=lists, bits=BITS,
                                      prepared="prepared = true" if args.prepared else ""))
        env = {**os.environ, "HASHBENCH_QUIET": "1", "HASHBENCH_CACHE": str(root / "cache")}
        out = subprocess.run([sys.executable, __file__, "--child", str(bench)], env=env, check=True,
                             stdout=subprocess.PIPE, text=True).stdout  # its errors pass through
        runs[database] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        print(f"database {database}: {len(runs[database])} stages in "
              f"{sum(r['seconds'] for r in runs[database]):.0f} s", file=sys.stderr)
    small, large = args.databases[0], args.databases[-1]
    # what the database itself must add: float codes (bits × 4 B), float labels (classes × 4 B), and the
    # path strings (numpy UCS-4: 4 B per character) of the extra items
    path_chars = len(str(root / names[0]))
    explained = (large - small) * (BITS * 4 + CLASSES * 4 + path_chars * 4) / 2**20
    print(f"\nlistfile, 224 px JPEGs: {args.train} train, {args.queries} queries, database {small:,} vs {large:,}; "
          f"convnet width 4, 1 epoch{', prepared cache' if args.prepared else ''}. Peak RSS of the stage "
          f"in MiB (main process). The extra {large - small:,} database items "
          f"explain {explained:.1f} MiB (codes, labels, paths).\n")
    print(f"| stage | db {small:,}: start / peak | db {large:,}: start / peak | peak growth | seconds |")
    print("|---|---|---|---|---|")
    for a, b in zip(runs[small], runs[large]):
        print(f"| {a['kind']}: {short(a['label'])} | {a['start_mib']:.0f} / {a['peak_mib']:.0f} | "
              f"{b['start_mib']:.0f} / {b['peak_mib']:.0f} | "
              f"{b['peak_mib'] - a['peak_mib']:+.0f} | {a['seconds']:.0f} / {b['seconds']:.0f} |")


if __name__ == "__main__":
    main()
