"""One folder per class, as in torchvision's ImageFolder.

Two layouts under ``root``:
- ``root/train/<class>/*``, ``root/query/<class>/*``, ``root/database/<class>/*``: the splits as given;
- ``root/<class>/*``: one pool, split per class with ``seed`` into ``query_per_class`` queries and a
  database of the rest, from which ``train_per_class`` training images are drawn (the cifar10-1 way).
Class names are the sorted folder names. Images are decoded with PIL on DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hashbench import Dataset, DatasetContext, DatasetSplits, DataError, SplitSizes, hookimpl, param

from .files import IMAGE_SUFFIXES, FileImageSet, one_hot, per_class_split, prepared_splits

SPLIT_FOLDERS = ("train", "query", "database")


@dataclass(frozen=True)
class ImageFolderParams:
    root: str = param("data/imagefolder", "folder with train/, query/, database/ class folders, or class folders")
    image_size: int = param(224, "images are resized (shorter side) and centre-cropped to this size")
    query_per_class: int = param(10, "single-pool layout: queries drawn per class")
    train_per_class: int = param(50, "single-pool layout: training images drawn per class (from the database)")
    seed: int = param(0, "single-pool layout: seed of the per-class draw")
    topk: int = param(-1, "mAP@K; -1 means the whole database")
    prepared: bool = param(False, "decode and resize every image once into a memory-mapped uint8 file under the cache, "
                                  "read instead of the image files (docs/performance.md says when it pays)")

    def validate(self) -> None:
        if self.image_size < 8 or self.query_per_class < 1 or self.train_per_class < 1 or self.topk == 0 or self.topk < -1:
            raise ValueError("image_size must be >= 8, the per-class counts >= 1 and topk -1 or positive")


def scan(folder: Path) -> dict[str, list[Path]]:
    """Class name -> sorted image files of one folder of class folders."""
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            classes[sub.name] = files
    return classes


def flatten(classes: dict[str, list[Path]], names: list[str]) -> tuple[list[str], torch.Tensor]:
    paths = [str(f) for name in classes for f in classes[name]]
    index = torch.tensor([names.index(name) for name in classes for _ in classes[name]], dtype=torch.long)
    return paths, one_hot(index, len(names))


class ImageFolder(Dataset):
    """Images sorted into one folder per class (three split folders, or one pool split with a seed)."""

    name = "imagefolder"
    Params = ImageFolderParams
    # Needs files on disk: tests/test_datasets.py checks this loader on files written in the real format.
    testing_params = None

    def sizes(self) -> SplitSizes | None:
        """Counted from the folders (no image is opened); None when root does not exist."""
        p = self.params
        root = Path(p.root).expanduser()
        if not root.is_dir():
            return None
        if all((root / s).is_dir() for s in SPLIT_FOLDERS):
            train, query, database = (sum(map(len, scan(root / s).values())) for s in SPLIT_FOLDERS)
            return SplitSizes(train, query, database, p.image_size)
        classes = scan(root)
        query = p.query_per_class * len(classes)
        return SplitSizes(p.train_per_class * len(classes), query, sum(map(len, classes.values())) - query, p.image_size)

    def load(self, ctx: DatasetContext) -> DatasetSplits:
        root = Path(self.params.root).expanduser()
        if not root.is_dir():
            raise DataError(f"image folder dataset not found: {root} does not exist. Put one folder per class "
                            f"there (or train/, query/, database/ folders of class folders), or set root.")
        if all((root / s).is_dir() for s in SPLIT_FOLDERS):
            splits = self._given_splits(root)
        elif any((root / s).is_dir() for s in SPLIT_FOLDERS):
            raise DataError(f"{root} has some of {', '.join(SPLIT_FOLDERS)} but not all three")
        else:
            splits = self._pooled(root)
        return prepared_splits(splits, ctx.cache_dir) if self.params.prepared else splits

    def _given_splits(self, root: Path) -> DatasetSplits:
        scanned = {s: scan(root / s) for s in SPLIT_FOLDERS}
        names = sorted(scanned["train"])
        if not names:
            raise DataError(f"{root / 'train'} holds no class folder with images ({', '.join(IMAGE_SUFFIXES)})")
        for split, classes in scanned.items():
            unknown = sorted(set(classes) - set(names))
            if unknown:
                raise DataError(f"{root / split} has classes that train/ lacks: {', '.join(unknown[:5])}")
        sets = {s: FileImageSet(*flatten(c, names), self.params.image_size) for s, c in scanned.items()}
        return DatasetSplits(sets["train"], sets["query"], sets["database"], names, topk=self.params.topk)

    def _pooled(self, root: Path) -> DatasetSplits:
        p = self.params
        classes = scan(root)
        if not classes:
            raise DataError(f"{root} holds no class folder with images ({', '.join(IMAGE_SUFFIXES)})")
        names = sorted(classes)
        paths, labels = flatten(classes, names)
        query, train, rest = per_class_split(labels.argmax(dim=1).numpy(), [p.query_per_class, p.train_per_class, -1], p.seed)
        database = np.sort(np.concatenate([train, rest]))
        paths_arr = np.asarray(paths)

        def part(idx: np.ndarray) -> FileImageSet:
            return FileImageSet(paths_arr[idx].tolist(), labels[torch.from_numpy(idx)], p.image_size)

        return DatasetSplits(part(train), part(query), part(database), names, topk=p.topk)


@hookimpl
def register_datasets(register):
    register(ImageFolder)
