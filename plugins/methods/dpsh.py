"""DPSH (Li, Wang & Kang, IJCAI 2016): pairwise-label likelihood with a quantisation penalty."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hashbench import HashMethod, MethodSetup, hookimpl, param


@dataclass(frozen=True)
class DPSHParams:
    alpha: float = param(0.1, "weight of the quantisation term ||u - sign(u)||²")


class DPSH(HashMethod):
    """Deep pairwise-supervised hashing: pairs sharing a label should have a large inner product."""

    name = "dpsh"
    Params = DPSHParams

    def setup(self, setup: MethodSetup) -> None:
        # Memory bank of the latest outputs for every training sample: each batch is compared with the
        # whole training set, not only with itself, as in the paper's alternating optimisation.
        n = setup.train_labels.shape[0]
        self.bank = torch.zeros(n, setup.bits, device=setup.device)
        self.bank_labels = setup.train_labels.float()

    def loss(self, z: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        u = z
        self.bank[indices] = u.detach()
        similar = (labels.float() @ self.bank_labels.T > 0).float()
        theta = 0.5 * u @ self.bank.T
        # -log p(s | theta) with p = sigmoid(theta), written in a form that cannot overflow
        likelihood = F.softplus(-theta.abs()) + theta.clamp(min=0) - similar * theta
        quantisation = (u - torch.sign(u)).pow(2).mean()
        return likelihood.mean() + self.params.alpha * quantisation


@hookimpl
def register_methods(register):
    register(DPSH)
