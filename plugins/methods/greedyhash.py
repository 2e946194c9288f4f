"""GreedyHash (Su et al., NeurIPS 2018): sign in the forward pass, straight-through gradient backward,
a classifier on the binary codes and a cubic penalty pulling outputs to ±1."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hashbench import HashMethod, MethodSetup, hookimpl, param


@dataclass(frozen=True)
class GreedyHashParams:
    alpha: float = param(0.1, "weight of the penalty mean(| |z| - 1 |³)")


class _SignStraightThrough(torch.autograd.Function):
    """sign(z) forward; the gradient passes through unchanged (the greedy principle of the paper)."""

    @staticmethod
    def forward(ctx, z):
        return torch.where(z >= 0, 1.0, -1.0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad


def sign_straight_through(z: torch.Tensor) -> torch.Tensor:
    return _SignStraightThrough.apply(z)


class GreedyHash(HashMethod):
    """Classify the binary codes themselves: a bias-free linear classifier on sign(z) is trained with the
    model (softmax cross-entropy, or sigmoid cross-entropy on multi-label data)."""

    name = "greedyhash"
    Params = GreedyHashParams

    def setup(self, setup: MethodSetup) -> None:
        num_classes = setup.train_labels.shape[1]
        bound = 1.0 / math.sqrt(setup.bits)  # nn.Linear's default init, drawn from the run's generator
        weight = (torch.rand(num_classes, setup.bits, generator=setup.generator) * 2 - 1) * bound
        self.classifier = torch.nn.Parameter(weight.to(setup.device))
        self.multi_label = bool((setup.train_labels.sum(dim=1) != 1).any())

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.classifier]

    def loss(self, z: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        logits = sign_straight_through(z) @ self.classifier.T
        if self.multi_label:
            classification = F.binary_cross_entropy_with_logits(logits, labels.float())
        else:
            classification = F.cross_entropy(logits, labels.argmax(dim=1))
        penalty = (z.abs() - 1).abs().pow(3).mean()
        return classification + self.params.alpha * penalty


@hookimpl
def register_methods(register):
    register(GreedyHash)
