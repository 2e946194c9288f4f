"""Encoding images into codes, and the detection metrics (docs/metrics.md, "Detection and cost")."""

from __future__ import annotations

import os
from typing import Callable

import torch

from .data import ImageSet, iterate_batches, to_float
from .devices import autocast, memory_format
from .models import HashModel, sign_codes


def encode_batch_size(device: torch.device) -> int:
    """Images encoded per forward pass: 64 on the CPU, where a batch's activations then stay in cache
    (69,000 Fashion-MNIST images through the width-16 convnet: 12.7 s against 20.2 s at 256, one
    thread); 256 on an accelerator, which wants large batches."""
    return 64 if device.type == "cpu" else 256


@torch.no_grad()
def encode_tensor(model: HashModel, images: torch.Tensor, device: torch.device, batch_size: int | None = None) -> torch.Tensor:
    """±1 codes (CPU float tensor) of uint8 images, ``batch_size`` (default :func:`encode_batch_size`) at a time."""
    batch_size = batch_size or encode_batch_size(device)
    model.eval()
    fmt = memory_format(device)
    out = []
    for start in range(0, len(images), batch_size):
        x = to_float(images[start : start + batch_size].to(device, non_blocking=True)).contiguous(memory_format=fmt)
        with autocast(device):
            z = model(x)
        out.append(sign_codes(z.float()))
    if not out:
        return torch.zeros(0, model.bits)
    return torch.cat(out).cpu()  # one transfer at the end, not one per batch


@torch.no_grad()
def encode_set(
    model: HashModel,
    image_set: ImageSet,
    device: torch.device,
    batch_size: int | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    num_workers: int | None = None,
) -> torch.Tensor:
    """±1 codes (CPU float tensor) of every image of a set, ``batch_size`` (default
    :func:`encode_batch_size`) at a time; file-backed sets decode on DataLoader workers
    (``num_workers=None``: up to 4, as many as there are cores)."""
    batch_size = batch_size or encode_batch_size(device)
    if num_workers is None:
        num_workers = 0 if image_set.in_memory else min(4, os.cpu_count() or 1)
    model.eval()
    fmt = memory_format(device)
    out = []
    for images, _, _ in iterate_batches(image_set, batch_size, num_workers=num_workers, pin_memory=device.type == "cuda"):
        if transform is not None:
            images = transform(images)
        x = to_float(images.to(device, non_blocking=True)).contiguous(memory_format=fmt)
        with autocast(device):
            z = model(x)
        out.append(sign_codes(z.float()))
    return torch.cat(out).cpu() if out else torch.zeros(0, model.bits)


def auroc(negative_scores: torch.Tensor, positive_scores: torch.Tensor) -> float:
    """Area under the ROC curve: P(positive score > negative score), ties counting one half."""
    neg = negative_scores.double().flatten()
    pos = positive_scores.double().flatten()
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    scores = torch.cat([neg, pos])
    # average ranks handle ties exactly (Mann-Whitney U)
    order = torch.argsort(scores, stable=True)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    unique, inverse, counts = torch.unique(sorted_scores, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts + 1
    avg_rank_sorted = (first + (counts - 1) / 2.0)[inverse].double()
    ranks[order] = avg_rank_sorted
    u = ranks[len(neg) :].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def tpr_at_fpr(negative_scores: torch.Tensor, positive_scores: torch.Tensor, fpr: float = 0.05) -> float:
    """Fraction of positives above the threshold that flags at most ``fpr`` of the negatives."""
    threshold = threshold_at_fpr(negative_scores, fpr)
    return float((positive_scores.double() > threshold).double().mean())


def threshold_at_fpr(negative_scores: torch.Tensor, fpr: float = 0.05) -> float:
    """The smallest threshold t with mean(negative > t) <= fpr."""
    neg = negative_scores.double().flatten().sort().values
    if len(neg) == 0:
        return float("inf")
    allowed = int(fpr * len(neg))  # negatives that may lie strictly above t
    return float(neg[len(neg) - 1 - allowed]) if allowed < len(neg) else float("-inf")


def target_rank(label_scores: dict[int, float], target_classes: list[int]) -> float:
    """Where a model-level detector puts the target among the labels it examined, by suspicion score
    (higher = more suspicious): 1 + the number of non-target labels scored above the best-scored target
    class + half of those tied with it (mid-rank, as AUROC counts ties: a detector that scores every
    label alike gets the middle rank, not the first). A target the detector did not examine (beyond
    ``max_labels``, or absent from the defender's clean data) ranks after every examined label."""
    others = [score for label, score in label_scores.items() if label not in target_classes]
    scored = [label_scores[c] for c in target_classes if c in label_scores]
    if not scored:
        return float(len(others) + 1)
    best = max(scored)
    return 1.0 + sum(score > best for score in others) + 0.5 * sum(score == best for score in others)
