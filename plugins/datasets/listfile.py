"""Image lists in DeepHash-pytorch's format: NUS-WIDE, MS-COCO, ImageNet-100, FLICKR-25K or your own.

Under ``root`` (or ``list_dir``), one list per split, in either form:
- ``train.txt``, ``database.txt``, ``test.txt``: one image per line, ``path l1 l2 ... lC`` with a 0/1
  multi-hot label vector (``test`` is the query split);
- ``train_img.txt`` + ``train_label.txt`` (and likewise for database / test): paths in one file, the
  0/1 label rows in the other, line by line.
Image paths are relative to ``root`` (absolute paths are used as they are). Images are decoded and
resized with PIL on DataLoader workers; every listed file is checked before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from hashbench import Dataset, DatasetContext, DatasetSplits, DataError, SplitSizes, hookimpl, param

from .files import FileImageSet, prepared_splits, require_files

SPLITS = {"train": "train", "query": "test", "database": "database"}  # our split -> list file stem


@dataclass(frozen=True)
class Preset:
    num_classes: int
    topk: int
    multi_label: bool
    source: str  # where the lists and images come from
    # (train, query, database) lines of those lists, for cost estimates before the data is on disk:
    # train and query counted in DeepHash-pytorch's lists; NUS-WIDE's database is its 195,834 images of the
    # 21 concepts minus the 2,100 queries, COCO's HashNet's 122,218 minus 5,000 queries; ImageNet-100's
    # database (the 100 classes' ILSVRC-2012 training images) is approximate: 1,281 a class on average
    sizes: tuple[int, int, int]


PRESETS = {
    "nuswide21": Preset(21, 5000, True, "DeepHash-pytorch data/nuswide_21 lists; images from the NUS-WIDE site",
                        (10_500, 2_100, 193_734)),
    "coco": Preset(80, 5000, True, "DeepHash-pytorch data/coco lists; images from cocodataset.org (train2014/val2014)",
                   (10_000, 5_000, 117_218)),
    "imagenet100": Preset(100, 1000, False, "DeepHash-pytorch data/imagenet lists; images from ILSVRC-2012",
                          (13_000, 5_000, 128_100)),
    "flickr25k": Preset(38, 5000, True, "DeepHash-pytorch data/mirflickr lists; images from MIRFLICKR-25000",
                        (4_000, 1_000, 20_000)),
}


@dataclass(frozen=True)
class ListFileParams:
    root: str = param("data/listfile", "folder the image paths in the lists are relative to")
    preset: Literal["", "nuswide21", "coco", "imagenet100", "flickr25k"] = param(
        "", "a known dataset: sets topk, multi_label and checks the number of classes")
    list_dir: str = param("", "folder holding the list files; empty means root")
    image_size: int = param(224, "images are resized (shorter side) and centre-cropped to this size")
    topk: int = param(0, "mAP@K; 0 means the preset's (or the whole database, -1, without a preset)")
    class_names: list[str] = param([], "names of the label columns; empty means class_0, class_1, ...")
    prepared: bool = param(False, "decode and resize every image once into a memory-mapped uint8 file under the cache, "
                                  "read instead of the image files (docs/performance.md says when it pays)")

    def validate(self) -> None:
        if self.image_size < 8 or self.topk < -1:
            raise ValueError("image_size must be >= 8 and topk >= -1 (0 for the preset's)")


def parse_labels(rows: list[list[str]], where: str) -> torch.Tensor:
    """0/1 label columns -> a float (n, C) tensor, with a clear error on a ragged or non-binary row."""
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise DataError(f"{where}: rows have different numbers of labels ({sorted(widths)})")
    try:
        labels = np.asarray(rows, dtype=np.float32)
    except ValueError:
        raise DataError(f"{where}: labels must be numbers (0 or 1)") from None
    if labels.size and not np.isin(labels, (0.0, 1.0)).all():
        raise DataError(f"{where}: labels must be 0 or 1 (a multi-hot vector per image)")
    return torch.from_numpy(labels.reshape(len(rows), -1))


def count_list(list_dir: Path, stem: str) -> int | None:
    """Images listed for one split (non-blank lines), without parsing them; None without a list."""
    for name in (f"{stem}.txt", f"{stem}_img.txt"):
        if (list_dir / name).is_file():
            with open(list_dir / name, "rb") as f:
                return sum(1 for line in f if line.strip())
    return None


def read_list(list_dir: Path, stem: str) -> tuple[list[str], torch.Tensor]:
    """(paths, labels) of one split, from ``stem.txt`` or ``stem_img.txt`` + ``stem_label.txt``."""
    single, images, labels = list_dir / f"{stem}.txt", list_dir / f"{stem}_img.txt", list_dir / f"{stem}_label.txt"
    if single.is_file():
        lines = [line.split() for line in single.read_text().splitlines() if line.strip()]
        return [line[0] for line in lines], parse_labels([line[1:] for line in lines], str(single))
    if images.is_file() and labels.is_file():
        paths = [line.strip() for line in images.read_text().splitlines() if line.strip()]
        rows = [line.split() for line in labels.read_text().splitlines() if line.strip()]
        if len(paths) != len(rows):
            raise DataError(f"{images} lists {len(paths)} images but {labels} has {len(rows)} label rows")
        return paths, parse_labels(rows, str(labels))
    raise DataError(
        f"no list for the '{stem}' split in {list_dir}: expected {single.name}, or {images.name} and "
        f"{labels.name}. Put DeepHash-style lists there (see docs/datasets.md), or set list_dir."
    )


class ListFile(Dataset):
    """Train / query / database from DeepHash-style image lists (``path l1 ... lC`` per line)."""

    name = "listfile"
    Params = ListFileParams
    # Needs files on disk: tests/test_datasets.py checks this loader on files written in the real format.
    testing_params = None

    def sizes(self) -> SplitSizes | None:
        """Counted in the lists when they are on disk, else the preset's; None for neither."""
        p = self.params
        list_dir = Path(p.list_dir or p.root).expanduser()
        counts = [count_list(list_dir, SPLITS[split]) for split in ("train", "query", "database")]
        if None in counts:
            preset = PRESETS.get(p.preset)
            if preset is None:
                return None
            counts = list(preset.sizes)
        return SplitSizes(*counts, p.image_size)

    def load(self, ctx: DatasetContext) -> DatasetSplits:
        p = self.params
        root = Path(p.root).expanduser()
        list_dir = Path(p.list_dir).expanduser() if p.list_dir else root
        preset = PRESETS.get(p.preset)
        if not list_dir.is_dir():
            hint = f" ({preset.source})" if preset else ""
            raise DataError(f"dataset lists not found: {list_dir} does not exist. Put train.txt, database.txt "
                            f"and test.txt there{hint}, or set root / list_dir in the [dataset] table.")
        lists = {split: read_list(list_dir, stem) for split, stem in SPLITS.items()}
        num_classes = self._check_widths(lists, preset, list_dir)
        sets = {}
        for split, (paths, labels) in lists.items():
            full = [str(path if path.is_absolute() else root / path) for path in map(Path, paths)]
            require_files(full, f"images of the '{split}' split listed in {list_dir} are missing under {root}",
                          "Copy the images there (paths in the lists are relative to root), or fix root.")
            sets[split] = FileImageSet(full, labels, p.image_size)
        names = list(p.class_names) or [f"class_{i}" for i in range(num_classes)]
        if len(names) != num_classes:
            raise DataError(f"class_names has {len(names)} names but the lists have {num_classes} label columns")
        multi = preset.multi_label if preset else bool((lists["train"][1].sum(dim=1) != 1).any())
        topk = p.topk or (preset.topk if preset else -1)
        splits = DatasetSplits(sets["train"], sets["query"], sets["database"], names, topk=topk, multi_label=multi)
        return prepared_splits(splits, ctx.cache_dir) if p.prepared else splits

    def _check_widths(self, lists, preset: Preset | None, list_dir: Path) -> int:
        widths = {split: int(labels.shape[1]) for split, (_, labels) in lists.items()}
        if len(set(widths.values())) != 1:
            raise DataError(f"the lists in {list_dir} disagree on the number of classes: {widths}")
        width = next(iter(widths.values()))
        if preset and width != preset.num_classes:
            raise DataError(f"preset '{self.params.preset}' has {preset.num_classes} classes but the lists in "
                            f"{list_dir} have {width} label columns")
        return width


@hookimpl
def register_datasets(register):
    register(ListFile)
