"""Fine-Pruning (Liu et al., 2018): prune the channels of the backbone's last convolution that stay
dormant on clean data (backdoor neurons tend to hide there), then fine-tune on the clean subset."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from hashbench import DefenseContext, HashModel, ModelRepair, PluginError, RepairResult, Work, WorkSizes, hookimpl, iterate_batches, param, to_float

from ._common import BATCH, final_loss, last_module, record_outputs


@dataclass(frozen=True)
class FinePruneParams:
    prune_ratio: float = param(0.2, "fraction of the last conv layer's channels to prune, least active first")
    epochs: int = param(10, "fine-tuning passes over the clean subset after pruning (0: prune only)")
    lr: float = param(1e-3, "fine-tuning learning rate")

    def validate(self) -> None:
        if not 0 <= self.prune_ratio < 1:
            raise ValueError("prune_ratio must be in [0, 1)")
        if self.epochs < 0 or self.lr <= 0:
            raise ValueError("epochs must be >= 0 and lr > 0")


class FinePrune(ModelRepair):
    """Zero the least-active channels of the last conv (+ its BatchNorm) and fine-tune with them held at zero."""

    name = "fineprune"
    Params = FinePruneParams

    def estimated_work(self, sizes: WorkSizes) -> Work:
        return Work(train=self.params.epochs * sizes.clean, encode=sizes.clean)  # + the activations

    def repair(self, ctx: DefenseContext) -> RepairResult:
        conv = last_module(ctx.model.backbone, (nn.Conv2d,))
        if conv is None:
            raise PluginError("fineprune needs a backbone with at least one nn.Conv2d")
        norm = _norm_after(ctx.model.backbone, conv)
        activity = channel_activity(ctx.model, norm or conv, ctx)
        pruned = activity.argsort()[: int(self.params.prune_ratio * len(activity))].to(ctx.device)
        layers = [m for m in (conv, norm) if m is not None]
        _zero_channels(layers, pruned)
        report = {"pruned_channels": float(len(pruned)), "total_channels": float(len(activity))}
        if self.params.epochs > 0:
            with _held_at_zero(layers, pruned):
                report |= final_loss(ctx.train(ctx.model, ctx.clean_set, epochs=self.params.epochs, lr=self.params.lr))
        return RepairResult(ctx.model, report=report)


def _norm_after(backbone: nn.Module, conv: nn.Conv2d) -> nn.BatchNorm2d | None:
    """The BatchNorm registered right after ``conv`` with matching channels, if any (conv -> BN -> act)."""
    modules = list(backbone.modules())
    following = modules[modules.index(conv) + 1 :]
    for module in following:
        if isinstance(module, nn.BatchNorm2d) and module.num_features == conv.out_channels:
            return module
        if isinstance(module, nn.Conv2d):
            break
    return None


@torch.no_grad()
def channel_activity(model: HashModel, layer: nn.Module, ctx: DefenseContext) -> torch.Tensor:
    """Mean post-ReLU activation of each output channel of ``layer`` over the clean subset (CPU tensor)."""
    model.eval()
    total = None
    with record_outputs([layer]) as outputs:
        for images, _, _ in iterate_batches(ctx.clean_set, BATCH):
            model(to_float(images.to(ctx.device)))
            batch = outputs[0].float().relu().sum((0, 2, 3))
            total = batch if total is None else total + batch
    return (total / len(ctx.clean_set)).cpu()


@torch.no_grad()
def _zero_channels(layers: list[nn.Module], channels: torch.Tensor) -> None:
    """Make the pruned channels output exactly zero: conv filters, BN scale and shift (and biases)."""
    for layer in layers:
        for name in ("weight", "bias"):
            tensor = getattr(layer, name, None)
            if tensor is not None:
                tensor[channels] = 0


@contextlib.contextmanager
def _held_at_zero(layers: list[nn.Module], channels: torch.Tensor) -> Iterator[None]:
    """During fine-tuning, zero the gradients of the pruned rows so they stay pruned (Adam then leaves
    zero weights at zero, weight decay included)."""

    def mask(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[channels] = 0
        return grad

    handles = [getattr(layer, name).register_hook(mask) for layer in layers for name in ("weight", "bias") if getattr(layer, name, None) is not None]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@hookimpl
def register_defenses(register):
    register(FinePrune)
