"""CIFAR-10 from torchvision's python-pickle batches (``cifar-10-batches-py``), with the hashing protocols.

Protocols (DeepHash-pytorch's, drawn per class with a fixed seed from the 60,000 images):
- ``cifar10``: 1,000 queries (100/class), 5,000 training images (500/class), database = the other 54,000.
- ``cifar10-1``: 1,000 queries, 5,000 training images, database = every image but the queries (59,000).
- ``cifar10-2``: the official 10,000 test images are the queries; the 50,000 training images are both the
  training set and the database.
mAP is over the whole database (``topk = -1``; DeepHash's mAP@54000 on ``cifar10`` is the same thing).

The batches are pickles; they are read with an unpickler that only resolves the numpy names needed to
rebuild a uint8 array, so a tampered file cannot run code. Nothing is ever downloaded.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from hashbench import Dataset, DatasetContext, DatasetSplits, DataError, SplitSizes, TensorImageSet, hookimpl, param

from .files import ResizedTensorImageSet, one_hot, per_class_split, require_files

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
NUM_TRAIN, NUM_TEST = 50_000, 10_000  # images in the five training batches and in the test batch
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# (module, name) pairs numpy's array pickles refer to (numpy 1.x and 2.x spellings), plus the bytes
# constructor that protocol-2 pickles written by Python 3 use; nothing else resolves.
NUMPY_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


@dataclass(frozen=True)
class CIFAR10Params:
    root: str = param("data/cifar10", f"folder holding {FOLDER}/ (or the batch files themselves)")
    protocol: Literal["cifar10", "cifar10-1", "cifar10-2"] = param("cifar10", "split protocol (see docs/datasets.md)")
    image_size: int = param(32, "side of the images given to the model; other than 32, resized on the fly")
    query_per_class: int = param(100, "queries per class (cifar10, cifar10-1)")
    train_per_class: int = param(500, "training images per class (cifar10, cifar10-1)")
    seed: int = param(0, "seed of the per-class draw")

    def validate(self) -> None:
        if self.image_size < 8 or self.query_per_class < 1 or self.train_per_class < 1:
            raise ValueError("image_size must be >= 8 and the per-class counts >= 1")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, 3, 32, 32), labels int64 (n,)) of one CIFAR-10 python batch."""
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="latin1").load()
        # the original (Python 2) batches load with str keys; batches re-pickled by Python 3 after loading
        # them with encoding="bytes" have bytes keys (b"data", b"labels")
        batch = {(key.decode("latin1") if isinstance(key, bytes) else key): value for key, value in batch.items()}
        data, labels = batch["data"], batch["labels"]
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{path} is not a CIFAR-10 python batch: {exc}") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (n, 3072)")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(data) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DataError(f"{path}: 'labels' must hold one class in 0..9 per image")
    return data.reshape(-1, 3, 32, 32), labels


def batch_folder(root: Path) -> Path:
    """``root/cifar-10-batches-py`` when it exists, else ``root`` itself."""
    return root / FOLDER if (root / FOLDER).is_dir() else root


def protocol_indices(protocol: str, labels: np.ndarray, num_train: int, query_per_class: int,
                     train_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, query, database) positions into the concatenation of the training and test batches."""
    if protocol == "cifar10-2":
        train = np.arange(num_train)
        return train, np.arange(num_train, len(labels)), train
    query, train, rest = per_class_split(labels, [query_per_class, train_per_class, -1], seed)
    database = rest if protocol == "cifar10" else np.sort(np.concatenate([train, rest]))
    return train, query, database


class CIFAR10(Dataset):
    """CIFAR-10 (10 classes, 60,000 images) under the cifar10 / cifar10-1 / cifar10-2 protocols."""

    name = "cifar10"
    Params = CIFAR10Params
    # Needs files on disk: tests/test_datasets.py checks this loader on files written in the real format.
    testing_params = None

    def sizes(self) -> SplitSizes:
        p = self.params
        if p.protocol == "cifar10-2":
            return SplitSizes(NUM_TRAIN, NUM_TEST, NUM_TRAIN, p.image_size)
        train, query = 10 * p.train_per_class, 10 * p.query_per_class
        rest = NUM_TRAIN + NUM_TEST - query
        return SplitSizes(train, query, rest - train if p.protocol == "cifar10" else rest, p.image_size)

    def load(self, ctx: DatasetContext) -> DatasetSplits:
        p = self.params
        folder = batch_folder(Path(p.root).expanduser())
        require_files(
            [folder / name for name in TRAIN_BATCHES + [TEST_BATCH]], f"CIFAR-10 not found in {folder}",
            f"Download {URL} and extract it into {Path(p.root).expanduser()} (it creates {FOLDER}/), or set "
            f"root in the [dataset] table to where {FOLDER}/ already is. hashbench never downloads.",
        )
        parts = [read_batch(folder / name) for name in TRAIN_BATCHES + [TEST_BATCH]]
        images = np.concatenate([im for im, _ in parts])
        labels = np.concatenate([lab for _, lab in parts])
        num_train = sum(len(lab) for _, lab in parts[:-1])
        splits = protocol_indices(p.protocol, labels, num_train, p.query_per_class, p.train_per_class, p.seed)
        images_t, labels_t = torch.from_numpy(images), one_hot(torch.from_numpy(labels), 10)
        train, query, database = (self._image_set(images_t[i], labels_t[i]) for i in map(torch.from_numpy, splits))
        return DatasetSplits(train, query, database, list(CLASS_NAMES), topk=-1, multi_label=False)

    def _image_set(self, images: torch.Tensor, labels: torch.Tensor):
        if self.params.image_size == 32:
            return TensorImageSet(images.contiguous(), labels)
        return ResizedTensorImageSet(images.contiguous(), labels, self.params.image_size)


@hookimpl
def register_datasets(register):
    register(CIFAR10)
