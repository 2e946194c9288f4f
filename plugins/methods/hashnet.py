"""HashNet (Cao et al., ICCV 2017): weighted pairwise likelihood on tanh(βz), with β raised by continuation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hashbench import HashMethod, MethodSetup, hookimpl, param


@dataclass(frozen=True)
class HashNetParams:
    alpha: float = param(0.0, "scale of the inner product inside the sigmoid; 0 means 10 / bits (HashNet's value)")
    init_scale: float = param(1.0, "β at step 0")
    gamma: float = param(0.005, "continuation: β = init_scale · (1 + gamma · step) ^ power")
    power: float = param(0.5, "continuation exponent")

    def validate(self) -> None:
        if self.alpha < 0 or self.init_scale <= 0 or self.gamma < 0:
            raise ValueError("alpha and gamma must be >= 0 and init_scale > 0")


def pair_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(similar, dissimilar) boolean masks over the ordered pairs of distinct batch items."""
    share = labels.float() @ labels.float().T > 0
    distinct = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return share & distinct, ~share & distinct


class HashNet(HashMethod):
    """Pairs sharing a label should have a large inner product; similar and dissimilar pairs are weighted
    so that each kind contributes equally (the paper's |S|/|S1|, |S|/|S0| weights), and tanh(βz) is
    sharpened towards sign(z) as β grows with the step count."""

    name = "hashnet"
    Params = HashNetParams

    def setup(self, setup: MethodSetup) -> None:
        self.alpha = self.params.alpha or 10.0 / setup.bits
        self.step = 0

    def scale(self) -> float:
        """β at the current step (the continuation schedule)."""
        return self.params.init_scale * (1.0 + self.params.gamma * self.step) ** self.params.power

    def loss(self, z: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.scale() * z)
        self.step += 1
        similar, dissimilar = pair_masks(labels)
        theta = self.alpha * h @ h.T
        nll = F.softplus(theta) - similar.float() * theta  # -log p(s | h_i, h_j), overflow-safe
        positive = (nll * similar).sum() / similar.sum().clamp(min=1)
        negative = (nll * dissimilar).sum() / dissimilar.sum().clamp(min=1)
        return positive + negative


@hookimpl
def register_methods(register):
    register(HashNet)
