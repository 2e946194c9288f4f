"""Helpers shared by the file-backed datasets: image sets that decode on DataLoader workers, and the
checks that make a missing dataset fail before anything runs."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hashbench import DataError, DatasetSplits, ImageSet

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
PREPARED_FORMAT = 1  # bump when decode_image's output changes: prepared files are then rebuilt
PREPARE_CHUNK = 256  # images a pool task decodes and writes
log = logging.getLogger("hashbench")


def decode_image(path: str, size: int) -> torch.Tensor:
    """A uint8 (3, size, size) tensor: RGB, shorter side resized to ``size`` (bilinear), centre-cropped."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
        array = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


class FileImageSet(ImageSet):
    """Images read from files on demand (``in_memory = False``: decoded on DataLoader workers).

    Paths are kept in one numpy array, not a list of str, so forked workers do not copy them page by page.
    """

    in_memory = False

    def __init__(self, paths: Sequence[str], labels: torch.Tensor, image_size: int):
        if len(paths) != len(labels):
            raise DataError(f"{len(paths)} image paths but {len(labels)} label rows")
        self.paths = np.asarray([str(p) for p in paths])
        self.labels = labels.float()
        self.image_size = image_size

    def images(self, indices) -> torch.Tensor:
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1).tolist()
        if not idx:
            return torch.zeros(0, 3, self.image_size, self.image_size, dtype=torch.uint8)
        return torch.stack([decode_image(self.paths[i], self.image_size) for i in idx])


class PreparedImageSet(ImageSet):
    """The images of a :class:`FileImageSet`, decoded and resized once into a memory-mapped uint8 file.

    Reading a batch is a copy out of the page cache instead of a JPEG decode per image per epoch.
    ``in_memory`` stays False so DataLoader workers read in parallel when the file is not cached in RAM.
    """

    in_memory = False

    def __init__(self, path: Path, labels: torch.Tensor, image_size: int):
        self.path = path
        self.labels = labels
        self.image_size = image_size
        self._array: np.ndarray | None = None  # opened lazily: forked workers map the file themselves

    def images(self, indices) -> torch.Tensor:
        if self._array is None and len(self.labels):
            shape = (len(self.labels), 3, self.image_size, self.image_size)
            self._array = np.memmap(self.path, dtype=np.uint8, mode="r", shape=shape)
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1).numpy()
        if not len(idx):
            return torch.zeros(0, 3, self.image_size, self.image_size, dtype=torch.uint8)
        return torch.from_numpy(np.ascontiguousarray(self._array[idx]))

    def __getstate__(self):  # pickled to Ray workers or spawned DataLoader workers without the mapping
        return {**self.__dict__, "_array": None}


def _decode_chunk(paths: list[str], size: int, out: str, start: int, total: int) -> None:
    array = np.memmap(out, dtype=np.uint8, mode="r+", shape=(total, 3, size, size))
    for offset, path in enumerate(paths):
        array[start + offset] = decode_image(path, size).numpy()
    array.flush()


def prepared(image_set: FileImageSet, cache_dir: Path, workers: int | None = None) -> PreparedImageSet:
    """``image_set`` read from a prepared file under ``cache_dir/prepared``, built here on first use.

    The file is keyed by the image paths and sizes on disk and the image size, so any change to the list
    or to a file builds a new one. Builders take a lock: two processes loading the dataset at once build it
    once. The file holds ``len × 3 × size²`` bytes (29 GB for NUS-WIDE's database at 224 px).
    """
    paths, size = [str(p) for p in image_set.paths], image_set.image_size
    stats = [os.stat(p).st_size for p in paths]
    digest = hashlib.sha256(json.dumps([PREPARED_FORMAT, size, paths, stats]).encode()).hexdigest()[:24]
    folder = Path(cache_dir) / "prepared"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.u8"
    with open(folder / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            _build(paths, size, path, workers or min(8, os.cpu_count() or 1))
    return PreparedImageSet(path, image_set.labels, size)


def prepared_splits(splits: DatasetSplits, cache_dir: Path) -> DatasetSplits:
    """``splits`` with each file-backed split read from its prepared file (the ``prepared = true`` option)."""
    sets = {name: getattr(splits, name) for name in ("train", "query", "database")}
    return dataclasses.replace(splits, **{name: prepared(s, cache_dir) if isinstance(s, FileImageSet) else s
                                          for name, s in sets.items()})


def _build(paths: list[str], size: int, path: Path, workers: int) -> None:
    partial = path.with_suffix(".partial")
    total = len(paths)
    np.memmap(partial, dtype=np.uint8, mode="w+", shape=(max(total, 1), 3, size, size)).flush()
    log.info(f"preparing {total} images at {size} px into {path} ({total * 3 * size * size / 2**30:.1f} GiB), "
             f"once, on {workers} processes")
    chunks = [(paths[s : s + PREPARE_CHUNK], size, str(partial), s, max(total, 1)) for s in range(0, total, PREPARE_CHUNK)]
    if len(chunks) <= 1:  # one chunk: a process pool would cost more than it saves
        for chunk in chunks:
            _decode_chunk(*chunk)
    else:
        with ProcessPoolExecutor(workers) as pool:
            for job in [pool.submit(_decode_chunk, *chunk) for chunk in chunks]:
                job.result()  # re-raises a decoding error with its traceback
    partial.rename(path)  # complete or absent: a killed build leaves only a .partial, rebuilt next time


class ResizedTensorImageSet(ImageSet):
    """Small images held in memory, resized on access (e.g. CIFAR-10 at 224 px without 9 GB of RAM)."""

    in_memory = False

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, image_size: int):
        self._images = images
        self.labels = labels.float()
        self.image_size = image_size

    def images(self, indices) -> torch.Tensor:
        small = self._images[torch.as_tensor(indices, dtype=torch.long)].float()
        big = F.interpolate(small, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                            align_corners=False)
        return big.round_().clamp_(0, 255).to(torch.uint8)


def require_files(paths: Sequence[Path], what: str, how_to_get: str) -> None:
    """Raise one DataError listing the missing files (at most five shown) before anything is loaded."""
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        shown = "\n  ".join(str(p) for p in missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(f"{what}: {len(missing)} file(s) missing:\n  {shown}{more}\n{how_to_get}")


def one_hot(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(classes.long(), num_classes).float()


def per_class_split(classes: np.ndarray, counts: Sequence[int], seed: int) -> list[np.ndarray]:
    """Shuffle each class's positions with ``seed`` and cut them into consecutive parts of ``counts`` per
    class; the last part takes the rest when its count is -1. Returns sorted position arrays, one per part."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in counts]
    for c in np.unique(classes):
        positions = rng.permutation(np.flatnonzero(classes == c))
        needed = sum(n for n in counts if n > 0)
        if needed > len(positions):
            raise DataError(f"class {c} has {len(positions)} images but the split needs {needed} per class")
        start = 0
        for k, n in enumerate(counts):
            stop = len(positions) if n < 0 else start + n
            parts[k].append(positions[start:stop])
            start = stop
    return [np.sort(np.concatenate(p)) for p in parts]
