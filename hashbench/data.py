"""Image sets: what datasets hand to attacks, defenses and the training loop.

Images cross every plugin boundary as ``uint8`` tensors shaped ``(n, 3, H, W)`` — the form a poison is
actually stored and shipped in — and labels as float multi-hot tensors shaped ``(n, C)`` (single-label
data is one-hot). Models take float images in [0, 1]; :func:`to_float` is the one conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from .errors import DataError


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return images.float().div_(255.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [0, 1] -> uint8, rounding (not truncating) and clamping out-of-range values."""
    return images.detach().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


class ImageSet:
    """A labelled set of images, indexable by position.

    Subclasses implement :meth:`images`. ``in_memory`` sets hold every image as one tensor and are
    iterated without DataLoader workers; file-backed sets decode on workers.
    """

    labels: torch.Tensor
    image_size: int
    in_memory: bool = True

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def images(self, indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
        raise NotImplementedError

    def all_images(self) -> torch.Tensor:
        return self.images(torch.arange(len(self)))

    def subset(self, indices: torch.Tensor) -> "ImageSet":
        return SubsetImageSet(self, torch.as_tensor(indices, dtype=torch.long))

    def with_replacements(self, indices: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> "ImageSet":
        """This set with the images and labels at ``indices`` replaced (how poisons enter a training set)."""
        return ReplacedImageSet(self, indices, images, labels)


class TensorImageSet(ImageSet):
    """Every image held in one uint8 tensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise DataError(f"images must be uint8 (n, 3, H, W); got {tuple(images.shape)} {images.dtype}")
        if labels.shape[0] != images.shape[0]:
            raise DataError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self._images = images
        self.labels = labels.float()
        self.image_size = int(images.shape[-1])

    def images(self, indices):
        return self._images[torch.as_tensor(indices, dtype=torch.long)]

    def all_images(self) -> torch.Tensor:
        return self._images


class SubsetImageSet(ImageSet):
    def __init__(self, base: ImageSet, indices: torch.Tensor):
        self.base, self.indices = base, indices
        self.labels = base.labels[indices]
        self.image_size = base.image_size
        self.in_memory = base.in_memory

    def images(self, indices):
        return self.base.images(self.indices[torch.as_tensor(indices, dtype=torch.long)])


class ReplacedImageSet(ImageSet):
    def __init__(self, base: ImageSet, indices: torch.Tensor, images: torch.Tensor, labels: torch.Tensor):
        self.base = base
        self.image_size = base.image_size
        self.in_memory = base.in_memory
        self.labels = base.labels.clone()
        self.labels[indices] = labels.float()
        # position -> row in `replacement` (or -1), so a batch lookup is one gather
        self._slot = torch.full((len(base),), -1, dtype=torch.long)
        self._slot[indices] = torch.arange(len(indices))
        self._replacement = images

    def images(self, indices):
        indices = torch.as_tensor(indices, dtype=torch.long)
        out = self.base.images(indices).clone()
        slots = self._slot[indices]
        hit = slots >= 0
        if hit.any():
            out[hit] = self._replacement[slots[hit]]
        return out


@dataclass
class DatasetSplits:
    """What a dataset plugin returns: the three retrieval splits and how to score them."""

    train: ImageSet
    query: ImageSet
    database: ImageSet
    class_names: list[str]
    topk: int = -1  # -1: the whole database
    multi_label: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return self.train.image_size


class _IndexDataset(torch.utils.data.Dataset):
    def __init__(self, image_set: ImageSet):
        self.image_set = image_set

    def __len__(self):
        return len(self.image_set)

    def __getitem__(self, i):
        return self.image_set.images([i])[0], self.image_set.labels[i], i


def iterate_batches(
    image_set: ImageSet,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(uint8 images, labels, indices)`` batches on the CPU.

    In-memory sets are sliced directly (a DataLoader would only add per-item overhead); file-backed
    sets go through a DataLoader with workers and pinned memory.
    """
    n = len(image_set)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if image_set.in_memory or num_workers == 0:
        stop = n - (n % batch_size) if drop_last and n >= batch_size else n
        for start in range(0, stop, batch_size):
            idx = order[start : start + batch_size]
            images = image_set.images(idx)
            yield (images.pin_memory() if pin_memory else images), image_set.labels[idx], idx
        return
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(_IndexDataset(image_set), order.tolist()),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=False,
        worker_init_fn=_seed_worker,
    )
    yield from loader


def _seed_worker(worker_id: int) -> None:
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
