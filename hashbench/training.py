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
    amp: bool = param(True, "bf16 autocast on CUDA (ignored on the CPU)")
    num_workers: int = param(2, "DataLoader workers for file-backed datasets (in-memory sets need none)")

    def validate(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs must be >= 0, batch_size >= 1 and lr > 0")


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
            x = to_float(images.to(device, non_blocking=True)).contiguous(memory_format=fmt)
            y = labels.to(device, non_blocking=True)
            idx = indices.to(device, non_blocking=True)
            with autocast(device, config.amp):
                z = model(x)
            loss = method.loss(z.float(), y, idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
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
