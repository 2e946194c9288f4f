"""Helpers shared by the file-backed datasets: image sets that decode on DataLoader workers, and the
checks that make a missing dataset fail before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hashbench import DataError, ImageSet

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


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
