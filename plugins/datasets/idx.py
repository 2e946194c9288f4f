"""Fashion-MNIST and MNIST from their standard IDX files, with a CIFAR-10-style hashing protocol.

Protocol (drawn per class with ``seed`` from all 70,000 images; the official train / test split is ignored,
as hashing papers do for CIFAR-10): ``query_per_class`` queries (100 a class: 1,000), and a database of every
other image (69,000), from which ``train_per_class`` training images (500 a class: 5,000) are drawn, as in
CIFAR-10's ``cifar10-1`` protocol and DeepHash's NUS-WIDE and MS-COCO lists. mAP is over the whole database.

The 28×28 grey images are zero-padded to 32×32 and repeated over 3 channels. Padding, not resizing:
both datasets have a black background, so a 2-pixel black border changes no pixel of the object, while a
bilinear 28 -> 32 resize would blur every stroke; 32 px is also the size of CIFAR-10, so every backbone
and attack preset made for it applies unchanged. Another ``image_size`` resizes the padded image on
access.

Nothing is downloaded: ``hashbench fetch fashion_mnist`` does that on request, and Debian's
``dataset-fashion-mnist`` package puts the files where this plugin looks.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hashbench import DataError, Dataset, DatasetContext, DatasetSplits, SplitSizes, TensorImageSet, hookimpl, param

from .files import ResizedTensorImageSet, one_hot, per_class_split

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049  # unsigned bytes, 3 dimensions / 1 dimension
NATIVE_SIZE, PADDED_SIZE = 28, 32
NUM_IMAGES, NUM_CLASSES = 70_000, 10


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array stored in one IDX file (gzipped or raw), checked against the expected ``magic``."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:  # a truncated or corrupt gzip stream
        raise DataError(f"{path}: cannot be read as {'gzip' if opener is gzip.open else 'an IDX file'} ({exc}); "
                        "delete it and fetch it again (hashbench fetch)") from None
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
        kind = "image" if magic == IMAGE_MAGIC else "label"
        raise DataError(f"{path}: not an IDX {kind} file (magic number {found}, expected {magic}); "
                        "check that the file is the one its name says")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"{path}: truncated or padded: its header promises {expected:,} bytes "
                        f"(shape {shape}) but the file holds {len(raw):,}; delete it and fetch it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def find_file(folder: Path, name: str) -> Path | None:
    """``name.gz`` or ``name`` in ``folder`` (the gzipped form first, as published)."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, 28, 28), labels int64 (n,)) of the ``train`` or ``test`` files in ``folder``."""
    image_name, label_name = SPLIT_FILES[split]
    images = read_idx(find_file(folder, image_name), IMAGE_MAGIC)
    labels = read_idx(find_file(folder, label_name), LABEL_MAGIC)
    if images.ndim != 3 or images.shape[1:] != (NATIVE_SIZE, NATIVE_SIZE):
        raise DataError(f"{folder}/{image_name}: images must be 28×28; the header says {images.shape[1:]}")
    if len(images) != len(labels):
        raise DataError(f"{folder}: {image_name} holds {len(images):,} images but {label_name} holds "
                        f"{len(labels):,} labels; the two files come from different downloads")
    if labels.max(initial=0) > 9:
        raise DataError(f"{folder}/{label_name}: labels must be classes 0..9; found {labels.max()}")
    return images, labels.astype(np.int64)


def pad_to_rgb(images: np.ndarray) -> torch.Tensor:
    """(n, 28, 28) grey -> (n, 3, 32, 32) uint8, the object untouched inside a 2-pixel black border."""
    margin = (PADDED_SIZE - NATIVE_SIZE) // 2
    grey = F.pad(torch.from_numpy(images.copy()), (margin, margin, margin, margin))
    return grey.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


@dataclass(frozen=True)
class IDXParams:
    root: str = param("", "folder holding the four IDX files (gzipped or not); empty: the standard places (docs/datasets.md)")
    image_size: int = param(32, "side given to the model: 32 = the 28 px images zero-padded; other sizes resize the padded image")
    query_per_class: int = param(100, "queries per class")
    train_per_class: int = param(500, "training images per class, drawn from the database (every image but the queries)")
    seed: int = param(0, "seed of the per-class draw")

    def validate(self) -> None:
        if self.image_size < 8 or self.query_per_class < 1 or self.train_per_class < 1:
            raise ValueError("image_size must be >= 8 and the per-class counts >= 1")


class IDXDataset(Dataset):
    """A 10-class IDX dataset under the query / train / rest-is-database protocol."""

    Params = IDXParams
    folder_name: str  # under data/ and $HASHBENCH_DATA, and the Debian package's folder
    class_names: list[str]
    how_to_get: str
    # Needs files on disk: tests/test_idx.py checks this loader on files written in the real format.
    testing_params = None

    def search_roots(self) -> list[Path]:
        """Where the files are looked for, in order: ``root`` when given, else the three standard places."""
        if self.params.root:
            return [Path(self.params.root).expanduser()]
        roots = [Path("data") / self.folder_name]
        if os.environ.get("HASHBENCH_DATA"):
            roots.append(Path(os.environ["HASHBENCH_DATA"]).expanduser() / self.folder_name)
        else:
            roots.append(Path("$HASHBENCH_DATA") / self.folder_name)
        return roots + [Path("/usr/share/datasets") / self.folder_name]

    def locate(self) -> Path:
        """The first search root holding all four files; a DataError naming every place looked at otherwise."""
        names = [name for pair in SPLIT_FILES.values() for name in pair]
        for root in self.search_roots():
            if all(find_file(root, name) for name in names):
                return root
        looked = "\n  ".join(str(root) for root in self.search_roots())
        raise DataError(f"{self.name}: the four IDX files ({', '.join(names)}, each .gz or raw) are in none of:\n  "
                        f"{looked}\n{self.how_to_get}")

    def sizes(self) -> SplitSizes:
        p = self.params
        query = NUM_CLASSES * p.query_per_class
        return SplitSizes(NUM_CLASSES * p.train_per_class, query, NUM_IMAGES - query, p.image_size)

    def load(self, ctx: DatasetContext) -> DatasetSplits:
        p = self.params
        folder = self.locate()
        parts = [read_split(folder, split) for split in ("train", "test")]
        labels = np.concatenate([lab for _, lab in parts])
        images = pad_to_rgb(np.concatenate([im for im, _ in parts]))
        query, train, rest = per_class_split(labels, [p.query_per_class, p.train_per_class, -1], p.seed)
        database = np.sort(np.concatenate([train, rest]))
        labels_t = one_hot(torch.from_numpy(labels), len(self.class_names))
        train_set, query_set, db_set = (self._image_set(images[idx], labels_t[idx])
                                        for idx in map(torch.from_numpy, (train, query, database)))
        return DatasetSplits(train_set, query_set, db_set, list(self.class_names), topk=-1, multi_label=False)

    def _image_set(self, images: torch.Tensor, labels: torch.Tensor):
        if self.params.image_size == PADDED_SIZE:
            return TensorImageSet(images, labels)
        return ResizedTensorImageSet(images, labels, self.params.image_size)


class FashionMNIST(IDXDataset):
    """Fashion-MNIST (Zalando; 10 clothing classes, 70,000 28×28 grey images), real photographs of products."""

    name = "fashion_mnist"
    folder_name = "fashion-mnist"
    class_names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    how_to_get = ("Get them with `apt-get install dataset-fashion-mnist` (Debian; files in /usr/share/datasets/fashion-mnist), "
                  "or `hashbench fetch fashion_mnist`, or set root in the [dataset] table to the folder that has them.")


class MNIST(IDXDataset):
    """MNIST (LeCun et al.; 10 handwritten digits, 70,000 28×28 grey images)."""

    name = "mnist"
    folder_name = "mnist"
    class_names = [str(digit) for digit in range(10)]
    how_to_get = ("Get them with `hashbench fetch mnist`, or set root in the [dataset] table to the folder that has them.")


@hookimpl
def register_datasets(register):
    register(FashionMNIST)
    register(MNIST)
