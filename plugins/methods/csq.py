"""CSQ (Yuan et al., CVPR 2020): central similarity quantisation towards fixed hash centres."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hashbench import HashMethod, MethodSetup, hookimpl, param


@dataclass(frozen=True)
class CSQParams:
    lambda_q: float = param(1e-4, "weight of the quantisation term (|u| - 1)²")


def hadamard(n: int) -> torch.Tensor:
    """Sylvester's construction; ``n`` must be a power of two."""
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def hash_centres(num_classes: int, bits: int, generator: torch.Generator) -> torch.Tensor:
    """One ±1 centre per class: Hadamard rows (and their negations) when they suffice, which keeps
    every pair of centres at least bits/2 apart; random Bernoulli centres otherwise."""
    if bits & (bits - 1) == 0 and num_classes <= 2 * bits:
        h = hadamard(bits)
        return torch.cat([h, -h], 0)[:num_classes]
    return torch.randint(0, 2, (num_classes, bits), generator=generator).float() * 2 - 1


class CSQ(HashMethod):
    """Central similarity quantisation: each image's code is pulled to the hash centre of its label(s)."""

    name = "csq"
    Params = CSQParams

    def setup(self, setup: MethodSetup) -> None:
        num_classes = setup.train_labels.shape[1]
        self.centres = hash_centres(num_classes, setup.bits, setup.generator).to(setup.device)
        # Ties in a multi-label centre's majority vote are broken by a fixed random code.
        self.tie_break = (torch.randint(0, 2, (setup.bits,), generator=setup.generator).float() * 2 - 1).to(setup.device)

    def centre_of(self, labels: torch.Tensor) -> torch.Tensor:
        summed = labels.float() @ self.centres
        return torch.where(summed == 0, self.tie_break.expand_as(summed), torch.sign(summed))

    def loss(self, z: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        u = torch.tanh(z)
        target = (self.centre_of(labels) + 1) / 2
        centre_loss = F.binary_cross_entropy((u + 1).clamp(1e-6, 2 - 1e-6) / 2, target)
        quantisation = (u.abs() - 1).pow(2).mean()
        return centre_loss + self.params.lambda_q * quantisation


@hookimpl
def register_methods(register):
    register(CSQ)
