"""DPSH (Li, Wang & Kang, IJCAI 2016): pairwise-label likelihood with a quantisation penalty.

Each batch is compared with a memory bank holding the latest output of every training sample, so every
step sees pairs with the whole training set, as in the paper's optimisation.

Pair balance: with C equally frequent classes only about 1/C of the pairs are similar. Averaged
uniformly (``balanced = false``, the paper's sum), the dissimilar pairs dominate the gradient while the
inner products are still small; on 10 classes the outputs then drift to a shared component, which the
one-epoch-stale bank makes oscillate (the likelihood rises above log 2 and mAP stays at chance). By
default the similar and dissimilar pairs are therefore averaged separately and summed, so each kind
weighs the same whatever the number of classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hashbench import HashMethod, MethodSetup, hookimpl, param


@dataclass(frozen=True)
class DPSHParams:
    alpha: float = param(0.1, "weight of the quantisation term mean ||u - sign(u)||²")
    balanced: bool = param(True, "average similar and dissimilar pairs separately (false: one mean, the paper's sum)")


def pair_nll(theta: torch.Tensor, similar: torch.Tensor) -> torch.Tensor:
    """-log p(s | theta) with p(s = 1) = sigmoid(theta), elementwise, in a form that cannot overflow."""
    return F.softplus(theta) - similar * theta


class DPSH(HashMethod):
    """Deep pairwise-supervised hashing: pairs sharing a label should have a large inner product."""

    name = "dpsh"
    Params = DPSHParams

    def setup(self, setup: MethodSetup) -> None:
        n = setup.train_labels.shape[0]
        self.bank = torch.zeros(n, setup.bits, device=setup.device)
        self.bank_labels = setup.train_labels.float()

    def loss(self, z: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        self.bank[indices] = z.detach()
        similar = (labels.float() @ self.bank_labels.T > 0).float()
        nll = pair_nll(0.5 * z @ self.bank.T, similar)
        if self.params.balanced:
            likelihood = (nll * similar).sum() / similar.sum().clamp(min=1) + (
                nll * (1 - similar)).sum() / (1 - similar).sum().clamp(min=1)
        else:
            likelihood = nll.mean()
        quantisation = (z - torch.sign(z)).pow(2).mean()
        return likelihood + self.params.alpha * quantisation


@hookimpl
def register_methods(register):
    register(DPSH)
