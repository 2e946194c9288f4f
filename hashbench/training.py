"""The one training loop. Victims, repairing defenses and retrained victims all go through it.

It never synchronises with the device inside an epoch: losses accumulate on the device and the first
non-finite step is tracked there too, so one ``.item()`` per epoch is the only host sync.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch

from .api import Backbone, HashMethod, MethodSetup
from .data import ImageSet, iterate_batches, to_float
from .devices import autocast, memory_format
from .errors import StageError
from .models import HashModel
from .params import param


@dataclass(frozen=True)
class TrainConfig:
    """How a victim is trained (the `[victim]` table's training keys)."""

    epochs: int = param(20, "passes over the training set")
    batch_size: int = param(64, "images per step")
    lr: float = param(1e-3, "learning rate")
    weight_decay: float = param(1e-5, "L2 weight decay")
    optimizer: Literal["adam", "sgd"] = param("adam", "adam or sgd (momentum 0.9)")
    schedule: Literal["constant", "cosine"] = param("constant", "learning rate: constant, or cosine decay to 0 over the steps")
    augment: Literal["none", "crop", "crop_flip"] = param(
        "none", "random crop (zero-padded by 1/8 of the side) and horizontal flip of every training image, poisons included")
    amp: bool = param(True, "bf16 autocast on CUDA (ignored on the CPU)")
    num_workers: int = param(2, "DataLoader workers for file-backed datasets (in-memory sets need none)")
    pretrain_epochs: int = param(
        0, "epochs of classifier pretraining of the backbone, shared by every victim of the dataset, backbone "
           "and seed (0: start from the backbone's own initialisation); see docs/victims.md")
    pretrain_on: Literal["train", "database"] = param(
        "database", "images the pretraining classifies: the training split, or every database image (never a query)")
    pretrain_lr: float = param(3e-3, "learning rate of the pretraining (cosine decay to 0)")
    pretrain_batch_size: int = param(128, "images per pretraining step")
    pretrain_seed: int = param(0, "seed of the pretraining; fixed across the benchmark's seeds, as published pretrained weights are")

    def validate(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs must be >= 0, batch_size >= 1 and lr > 0")
        if self.pretrain_epochs < 0 or self.pretrain_lr <= 0 or self.pretrain_batch_size < 1:
            raise ValueError("pretrain_epochs must be >= 0, pretrain_lr > 0 and pretrain_batch_size >= 1")

    def pretraining(self) -> dict[str, object] | None:
        """What a pretraining stage depends on (None: no pretraining): the keys it reads, nothing else, so
        victims that differ only in method, bits or fine-tuning share one pretrained backbone."""
        if self.pretrain_epochs == 0:
            return None
        keys = ("pretrain_epochs", "pretrain_on", "pretrain_lr", "pretrain_batch_size", "pretrain_seed", "weight_decay",
                "optimizer", "augment")
        return {k: getattr(self, k) for k in keys}


@dataclass
class TrainReport:
    epoch_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = 0.0


def build_model(backbone: Backbone, bits: int, image_size: int) -> HashModel:
    module, feature_dim = backbone.build(image_size)
    return HashModel(module, feature_dim, bits)


def _optimizer(model: torch.nn.Module, method: HashMethod, config: TrainConfig) -> torch.optim.Optimizer:
    """One optimiser over the model's trainable parameters and those the method owns."""
    params = [p for p in model.parameters() if p.requires_grad] + list(method.parameters())
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, steps: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Per-step cosine decay to zero over the whole run, or None for a constant learning rate."""
    if config.schedule == "constant" or steps == 0:
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)


def augment_batch(images: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """The standard small-image augmentation, on uint8 batches on any device without a host sync.

    ``crop``: zero-pad by side/8 and cut a random window of the original size (4 px at 32 px, as the
    CIFAR-10 recipe of backdoor benchmarks); ``crop_flip`` also mirrors half the images left-right. The
    offsets are drawn on the CPU with the training generator, so runs are identical across devices.
    """
    if mode == "none":
        return images
    n, c, h, w = images.shape
    pad = max(1, h // 8)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(images.device, non_blocking=True)
    rows = (offsets[0, :, None] + torch.arange(h, device=images.device))[:, None, :, None].expand(n, c, h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (offsets[1, :, None] + torch.arange(w, device=images.device))[:, None, None, :].expand(n, c, h, w)
    out = out.gather(3, cols)
    if mode == "crop_flip":
        flip = (torch.rand(n, generator=generator) < 0.5).to(images.device, non_blocking=True)
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


def train_hash_model(
    model: HashModel,
    method: HashMethod,
    train_set: ImageSet,
    config: TrainConfig,
    device: torch.device,
    generator: torch.Generator,
    *,
    what: str = "training",
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainReport:
    """Train ``model`` in place on ``train_set`` with ``method``'s objective; return per-epoch losses.

    Raises StageError naming the epoch and step when the loss stops being finite.
    """
    fmt = memory_format(device)
    model.to(device=device, memory_format=fmt).train()
    method.setup(MethodSetup(train_set.labels.to(device), model.bits, device, generator))
    optimizer = _optimizer(model, method, config)
    steps_per_epoch = len(train_set) // config.batch_size + (len(train_set) % config.batch_size > 0)
    schedule = _schedule(optimizer, config, steps_per_epoch * config.epochs)
    pin = device.type == "cuda"
    report = TrainReport()
    started = time.perf_counter()
    seen = 0
    step = 0
    for epoch in range(config.epochs):
        total = torch.zeros((), device=device)
        first_bad_step = torch.full((), -1, device=device, dtype=torch.long)
        batches = 0
        for images, labels, indices in iterate_batches(
            train_set, config.batch_size, shuffle=True, generator=generator,
            num_workers=config.num_workers, pin_memory=pin,
        ):
            images = augment_batch(images.to(device, non_blocking=True), config.augment, generator)
            x = to_float(images).contiguous(memory_format=fmt)
            y = labels.to(device, non_blocking=True)
            idx = indices.to(device, non_blocking=True)
            with autocast(device, config.amp):
                z = model(x)
            loss = method.loss(z.float(), y, idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            detached = loss.detach()
            total += detached
            first_bad_step = torch.where(
                (first_bad_step < 0) & ~torch.isfinite(detached), torch.full_like(first_bad_step, step), first_bad_step
            )
            batches += 1
            step += 1
            seen += len(images)
        mean_loss = (total / max(batches, 1)).item()  # the one host sync per epoch
        if not torch.isfinite(torch.tensor(mean_loss)):
            bad = int(first_bad_step.item())
            raise StageError(
                f"{what}: the loss became non-finite at epoch {epoch + 1}, step {bad} "
                f"(lower lr={config.lr} or check the data); nothing from this stage was kept"
            )
        report.epoch_losses.append(mean_loss)
        if on_epoch is not None:
            on_epoch(epoch, mean_loss)
    model.eval()
    report.seconds = time.perf_counter() - started
    report.images_per_second = seen / report.seconds if report.seconds > 0 else 0.0
    return report
