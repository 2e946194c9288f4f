"""The embedded dataset: class-defining shapes composited on crops of scikit-image's photographs.

Nothing is downloaded: the backgrounds are the photographs that ship inside scikit-image. Each image
holds one object (or, in multi-label mode, several) whose shape defines its class; colour, scale,
position, rotation and opacity are random, and the background is a random crop of a real photograph,
so a clean convnet lands well below mAP 1.0 and well above chance. Deterministic from ``seed`` and
cached after the first use.

``classes = "colours"`` swaps the shapes for smooth colour fields whose hue defines the class. No class
there can be drawn with a few strokes (three shapes — cross, stripes, checker — can), so it is the
known-answer case for defenses that assume only a backdoor target is reachable with a small patch.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from hashbench import Dataset, DatasetContext, DatasetSplits, SplitSizes, TensorImageSet, hookimpl, param

SHAPES = ["disc", "square", "triangle", "cross", "ring", "bar", "stripes", "checker", "half_disc", "l_shape"]
PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "motorcycle_left", "immunohistochemistry",
          "retina", "brick", "grass", "gravel", "camera", "coins", "moon"]
MAX_HUES = 24  # hues 15 degrees apart: still told apart under the saturation/lighting jitter
CACHE_FORMAT = 3  # bump when the generator changes so old caches are not reused


@dataclass(frozen=True)
class SyntheticParams:
    image_size: int = param(32, "side of the square images, 8 to 224")
    classes: Literal["shapes", "colours"] = param(
        "shapes", "what defines a class: a shape on a photo crop, or the hue of a smooth colour field (single-label only)")
    num_classes: int = param(10, f"number of classes, 2 to {len(SHAPES)} (shapes) or {MAX_HUES} (colours)")
    train_per_class: int = param(200, "training images per class (drawn from the database)")
    query_per_class: int = param(20, "query images per class")
    database_per_class: int = param(300, "database images per class (includes the training images)")
    multi_label: bool = param(False, "several objects per image with multi-hot labels")
    max_objects: int = param(3, "multi-label mode: at most this many objects (distinct classes) per image")
    noise: float = param(0.03, "std of the Gaussian pixel noise")
    seed: int = param(0, "generation seed (the dataset is a pure function of its parameters)")

    def validate(self) -> None:
        if not 8 <= self.image_size <= 224:
            raise ValueError("image_size must be between 8 and 224")
        most = len(SHAPES) if self.classes == "shapes" else MAX_HUES
        if not 2 <= self.num_classes <= most:
            raise ValueError(f"num_classes must be between 2 and {most} with classes = '{self.classes}'")
        if self.classes == "colours" and self.multi_label:
            raise ValueError("classes = 'colours' is single-label (an image has one hue); use classes = 'shapes' for multi_label")
        if self.train_per_class > self.database_per_class:
            raise ValueError("train_per_class cannot exceed database_per_class (training images are drawn from the database)")
        if min(self.train_per_class, self.query_per_class, self.database_per_class) < 1:
            raise ValueError("every split needs at least one image per class")


def _shape_mask(shape: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Boolean mask of a unit-size shape on rotated, normalised coordinates in [-1, 1]."""
    r = torch.sqrt(x * x + y * y)
    if shape == "disc":
        return r < 1
    if shape == "square":
        return torch.maximum(x.abs(), y.abs()) < 0.8
    if shape == "triangle":
        return (y < 0.75) & (x.abs() < (0.75 - y) * 0.58) & (y > -0.9)
    if shape == "cross":
        return ((x.abs() < 0.28) & (y.abs() < 1)) | ((y.abs() < 0.28) & (x.abs() < 1))
    if shape == "ring":
        return (r < 1) & (r > 0.55)
    if shape == "bar":
        return (x.abs() < 1) & (y.abs() < 0.33)
    if shape == "stripes":
        return (r < 1) & (torch.sin(y * 2.5 * math.pi) > 0)
    if shape == "checker":
        return (torch.maximum(x.abs(), y.abs()) < 0.9) & ((torch.floor(x * 2) + torch.floor(y * 2)) % 2 == 0)
    if shape == "half_disc":
        return (r < 1) & (y > 0)
    if shape == "l_shape":
        return ((x.abs() < 0.8) & (y > 0.3) & (y < 0.8)) | ((x > -0.8) & (x < -0.3) & (y.abs() < 0.8))
    raise ValueError(shape)


def _photos(generator: torch.Generator) -> list[torch.Tensor]:
    import skimage.data

    photos = []
    for name in PHOTOS:
        try:
            img = torch.as_tensor(getattr(skimage.data, name)())
        except Exception:  # a photo missing from this scikit-image build is simply skipped
            continue
        if img.dim() == 2:
            img = img.unsqueeze(-1).expand(-1, -1, 3)
        photos.append(img[..., :3].permute(2, 0, 1).float().div(255))
    if not photos:
        raise RuntimeError("scikit-image ships no sample photographs in this installation")
    return photos


def _backgrounds(n: int, size: int, photos: list[torch.Tensor], g: torch.Generator) -> torch.Tensor:
    out = torch.empty(n, 3, size, size)
    choice = torch.randint(len(photos), (n,), generator=g)
    for i in range(n):
        photo = photos[int(choice[i])]
        h, w = photo.shape[1:]
        side = int(torch.randint(min(48, h, w), min(h, w, 320) + 1, (1,), generator=g))
        top = int(torch.randint(0, h - side + 1, (1,), generator=g))
        left = int(torch.randint(0, w - side + 1, (1,), generator=g))
        crop = photo[:, top : top + side, left : left + side].unsqueeze(0)
        out[i] = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return out


def _paint(images: torch.Tensor, classes: torch.Tensor, scale_range: tuple[float, float], g: torch.Generator) -> None:
    """Composite one object per image (class ``classes[i]``) in place, anti-aliased by 2× supersampling."""
    n, _, size, _ = images.shape
    ss = 2 * size
    coords = (torch.arange(ss).float() + 0.5) / ss * 2 - 1
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    scale = torch.empty(n).uniform_(*scale_range, generator=g)
    cx = (torch.rand(n, generator=g) * 2 - 1) * (1 - scale)
    cy = (torch.rand(n, generator=g) * 2 - 1) * (1 - scale)
    angle = torch.rand(n, generator=g) * 2 * math.pi
    colour = torch.rand(n, 3, generator=g)
    opacity = torch.empty(n).uniform_(0.85, 1.0, generator=g)
    for i in range(n):
        dx, dy = (gx - cx[i]) / scale[i], (gy - cy[i]) / scale[i]
        c, s = math.cos(angle[i]), math.sin(angle[i])
        x, y = c * dx + s * dy, -s * dx + c * dy
        mask = _shape_mask(SHAPES[int(classes[i])], x, y).float()[None, None]
        alpha = F.avg_pool2d(mask, 2)[0] * opacity[i]
        images[i] = images[i] * (1 - alpha) + colour[i].view(3, 1, 1) * alpha


def _colour_fields(class_ids: torch.Tensor, num_classes: int, size: int, g: torch.Generator) -> torch.Tensor:
    """One smooth colour field per image (float, about [0, 1]): the hue of class k is k / num_classes of the
    colour wheel (±1.8° of jitter), with random saturation, brightness and a linear lighting gradient in
    a random direction."""
    n = len(class_ids)
    hue = (class_ids.float() / num_classes + (torch.rand(n, generator=g) - 0.5) * 0.01) % 1.0
    saturation = torch.empty(n).uniform_(0.55, 1.0, generator=g)
    value = torch.empty(n).uniform_(0.45, 0.95, generator=g)
    sector = (hue[:, None] * 6 + torch.tensor([5.0, 3.0, 1.0])) % 6  # HSV -> RGB, one offset per channel
    rgb = value[:, None] * (1 - saturation[:, None] * torch.clamp(torch.minimum(sector, 4 - sector), 0, 1))
    angle = torch.rand(n, generator=g) * 2 * math.pi
    coords = (torch.arange(size).float() + 0.5) / size * 2 - 1
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    lighting = 1 + 0.2 * (torch.cos(angle).view(n, 1, 1) * gx + torch.sin(angle).view(n, 1, 1) * gy)
    return rgb.view(n, 3, 1, 1) * lighting.unsqueeze(1)


def _paint_several(images: torch.Tensor, labels: torch.Tensor, max_objects: int, g: torch.Generator) -> None:
    """Multi-label: 1 to ``max_objects`` objects of distinct classes per image, painted in place, and
    their classes set in ``labels`` (n × classes, zeros on entry)."""
    n, c = labels.shape
    k = torch.randint(1, min(max_objects, c) + 1, (n,), generator=g)
    for slot in range(int(k.max())):
        rows = torch.nonzero(k > slot).flatten()
        for row in rows.tolist():  # draw a class this image does not have yet
            free = torch.nonzero(labels[row] == 0).flatten()
            labels[row, free[int(torch.randint(len(free), (1,), generator=g))]] = 1
        chosen = torch.stack([torch.nonzero(labels[r]).flatten()[slot] for r in rows.tolist()])
        sub = images[rows]
        _paint(sub, chosen, (0.25, 0.45), g)
        images[rows] = sub


def generate(params: SyntheticParams, count: int, g: torch.Generator, photos: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images per class (single-label) or ``count × num_classes`` images (multi-label), as
    uint8 images and multi-hot labels. ``photos`` (the backgrounds) are only used by the shapes."""
    c = params.num_classes
    n = count * c
    labels = torch.zeros(n, c)
    if params.multi_label:
        images = _backgrounds(n, params.image_size, photos, g)
        _paint_several(images, labels, params.max_objects, g)
    else:
        class_ids = torch.arange(c).repeat_interleave(count)
        labels[torch.arange(n), class_ids] = 1
        if params.classes == "colours":
            images = _colour_fields(class_ids, c, params.image_size, g)
        else:
            images = _backgrounds(n, params.image_size, photos, g)
            _paint(images, class_ids, (0.5, 0.85), g)
    images += torch.randn(images.shape, generator=g) * params.noise
    return images.clamp(0, 1).mul(255).round().to(torch.uint8), labels


class Synthetic(Dataset):
    """Shapes on natural-photo crops (or hue-defined colour fields); 10 classes at 32×32 by default; optional multi-label mode."""

    name = "synthetic"
    Params = SyntheticParams
    testing_params = {"num_classes": 4, "train_per_class": 5, "query_per_class": 3, "database_per_class": 10}

    def sizes(self) -> SplitSizes:
        p = self.params
        c = p.num_classes
        return SplitSizes(p.train_per_class * c, p.query_per_class * c, p.database_per_class * c, p.image_size)

    def load(self, ctx: DatasetContext) -> DatasetSplits:
        p = self.params
        digest = hashlib.sha256(json.dumps({**asdict(p), "format": CACHE_FORMAT}, sort_keys=True).encode()).hexdigest()[:16]
        path = ctx.cache_dir / f"synthetic-{digest}.pt"
        data = None
        if path.is_file():
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:
                data = None  # a corrupt cache is regenerated, never trusted
        if data is None:
            data = self._generate()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{torch.randint(1 << 30, (1,)).item()}")
            torch.save(data, tmp)
            tmp.replace(path)
        database = TensorImageSet(data["database_images"], data["database_labels"])
        train_idx = data["train_indices"]
        return DatasetSplits(
            train=TensorImageSet(data["database_images"][train_idx], data["database_labels"][train_idx]),
            query=TensorImageSet(data["query_images"], data["query_labels"]),
            database=database,
            class_names=[f"class_{i}" for i in range(p.num_classes)],
            topk=-1,
            multi_label=p.multi_label,
        )

    def _generate(self) -> dict[str, torch.Tensor]:
        p = self.params
        g = torch.Generator().manual_seed(p.seed)
        photos = _photos(g) if p.classes == "shapes" else []
        db_images, db_labels = generate(p, p.database_per_class, g, photos)
        q_images, q_labels = generate(p, p.query_per_class, g, photos)
        if p.multi_label:
            train_idx = torch.randperm(len(db_images), generator=g)[: p.train_per_class * p.num_classes].sort().values
        else:  # the first train_per_class images of each class
            per_class = torch.arange(p.train_per_class)
            train_idx = (torch.arange(p.num_classes).unsqueeze(1) * p.database_per_class + per_class).flatten()
        return {"database_images": db_images, "database_labels": db_labels, "query_images": q_images,
                "query_labels": q_labels, "train_indices": train_idx}


@hookimpl
def register_datasets(register):
    register(Synthetic)
