"""DSH (Liu et al., CVPR 2016): contrastive loss with margin on relaxed codes, plus an L1 pull to ±1."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hashbench import HashMethod, MethodSetup, hookimpl, param


@dataclass(frozen=True)
class DSHParams:
    margin: float = param(0.0, "margin m on the squared distance of dissimilar pairs; 0 means 2 · bits (the paper's)")
    alpha: float = param(0.01, "weight of the regulariser || |u| - 1 ||₁")
    balanced: bool = param(True, "average similar and dissimilar pairs separately (false: one mean over pairs)")

    def validate(self) -> None:
        if self.margin < 0 or self.alpha < 0:
            raise ValueError("margin and alpha must be >= 0")


class DSH(HashMethod):
    """Similar pairs are pulled together, dissimilar pairs pushed beyond the margin (pairs formed inside
    the mini-batch, as in the paper); each output is pulled towards ±1 in L1. With few similar pairs
    (about 1/C of them on C classes) a single mean lets the push dominate and codes scatter at chance
    level; ``balanced`` weighs both kinds equally (as DPSH and HashNet here)."""

    name = "dsh"
    Params = DSHParams

    def setup(self, setup: MethodSetup) -> None:
        self.margin = self.params.margin or 2.0 * setup.bits

    def loss(self, z: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        distinct = 1 - torch.eye(len(z), device=z.device)
        similar = (labels.float() @ labels.float().T > 0).float() * distinct
        dissimilar = (1 - similar) * distinct
        dist = torch.cdist(z, z).pow(2)
        pull, push = 0.5 * dist * similar, 0.5 * (self.margin - dist).clamp(min=0) * dissimilar
        if self.params.balanced:
            contrastive = pull.sum() / similar.sum().clamp(min=1) + push.sum() / dissimilar.sum().clamp(min=1)
        else:
            contrastive = (pull + push).sum() / distinct.sum().clamp(min=1)
        # The paper adds alpha·(r_i + r_j) to every pair; averaged over pairs that is 2·alpha·mean_i r_i.
        regulariser = (z.abs() - 1).abs().sum(dim=1).mean()
        return contrastive + 2 * self.params.alpha * regulariser


@hookimpl
def register_methods(register):
    register(DSH)
