"""Helpers shared by the built-in defenses: encoding, per-label grouping, layer lookup, PCA and 2-means.

Everything here works on CPU or GPU tensors and uses torch only (no scikit-learn), so defenses stay
within the dependencies hashbench already has.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from hashbench import HashModel, ImageSet, iterate_batches, majority_code, sign_codes, to_float

BATCH = 256


@torch.no_grad()
def model_features(model: HashModel, image_set: ImageSet, device: torch.device) -> torch.Tensor:
    """Backbone features (CPU float tensor, one row per image) of every image in ``image_set``."""
    model.eval()
    rows = [model.features(to_float(images.to(device))).float().cpu() for images, _, _ in iterate_batches(image_set, BATCH)]
    return torch.cat(rows) if rows else torch.zeros(0)


@torch.no_grad()
def codes_of_floats(model: HashModel, images: torch.Tensor, batch_size: int = BATCH) -> torch.Tensor:
    """±1 codes of float images in [0, 1] already on the model's device (batched to bound memory)."""
    model.eval()
    return torch.cat([sign_codes(model(images[s : s + batch_size]).float()) for s in range(0, len(images), batch_size)])


@torch.no_grad()
def anchor_codes(model: HashModel, image_set: ImageSet, device: torch.device) -> torch.Tensor:
    """(C, bits) bitwise-majority code (``majority_code``, ties +1) of each label over ``image_set``.

    Labels without any image get a zero row; callers skip them.
    """
    model.eval()
    codes = torch.cat([codes_of_floats(model, to_float(images.to(device))).cpu() for images, _, _ in iterate_batches(image_set, BATCH)])
    members = image_set.labels > 0
    anchors = torch.stack([majority_code(codes[members[:, label]]) for label in range(members.shape[1])])
    return torch.where(members.any(0)[:, None], anchors, torch.zeros_like(anchors))


def final_loss(report) -> dict[str, float]:
    """The last epoch's loss of a ``ctx.train`` report (for the results row), when it has one."""
    losses = getattr(report, "epoch_losses", None)
    return {"repair_final_loss": float(losses[-1])} if losses else {}


def label_groups(labels: torch.Tensor) -> list[torch.Tensor]:
    """For each class, the positions of the samples whose (multi-hot) labels contain it."""
    return [torch.nonzero(labels[:, c] > 0).flatten() for c in range(labels.shape[1])]


def last_module(root: nn.Module, kinds: tuple[type, ...]) -> nn.Module | None:
    """The last submodule of ``root`` (in registration order) that is an instance of ``kinds``."""
    found = None
    for module in root.modules():
        if isinstance(module, kinds):
            found = module
    return found


def modules_of(root: nn.Module, kinds: tuple[type, ...]) -> list[nn.Module]:
    """Every submodule of ``root`` that is an instance of ``kinds``, in registration order."""
    return [m for m in root.modules() if isinstance(m, kinds)]


@contextlib.contextmanager
def record_outputs(modules: list[nn.Module]) -> Iterator[list[torch.Tensor | None]]:
    """Within the block, ``outputs[i]`` holds the latest output of ``modules[i]`` (forward hooks)."""
    outputs: list[torch.Tensor | None] = [None] * len(modules)

    def hook_for(i: int):
        def hook(_module, _inputs, output):
            outputs[i] = output

        return hook

    handles = [m.register_forward_hook(hook_for(i)) for i, m in enumerate(modules)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Model in eval mode with no parameter gradients inside the block (for optimising inputs)."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)


def pca(x: torch.Tensor, components: int) -> torch.Tensor:
    """Rows of ``x`` projected on their top ``components`` principal directions (centred SVD)."""
    centred = x - x.mean(0, keepdim=True)
    k = max(1, min(components, *centred.shape))
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return centred @ vh[:k].t()


def two_means(x: torch.Tensor, generator: torch.Generator, iterations: int = 50, restarts: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """2-means (Lloyd, k-means++ seeding, best of ``restarts`` by inertia): ``(assignment (n,), centroids (2, d))``."""
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    for _ in range(restarts):
        first = x[torch.randint(len(x), (1,), generator=generator)]
        far = torch.cdist(x, first).flatten().pow(2)
        second = x[torch.multinomial(far + 1e-12, 1, generator=generator)]
        centroids = torch.cat([first, second])
        for _ in range(iterations):
            assign = torch.cdist(x, centroids).argmin(1)
            updated = torch.stack([x[assign == k].mean(0) if (assign == k).any() else centroids[k] for k in range(2)])
            if torch.allclose(updated, centroids):
                break
            centroids = updated
        assign = torch.cdist(x, centroids).argmin(1)
        inertia = float((x - centroids[assign]).pow(2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, assign, centroids)
    return best[1], best[2]
