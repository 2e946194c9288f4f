"""STRIP (Gao et al., 2019) for hashing: superimpose each query with clean images and measure how much
the resulting codes disagree. A trigger survives the blending and keeps every blend at the target's
code (low dispersion); a clean query's blends scatter."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hashbench import DefenseContext, InputDetector, Work, WorkSizes, hookimpl, param, to_float

from ._common import codes_of_floats


@dataclass(frozen=True)
class StripParams:
    overlays: int = param(8, "clean images superimposed on each query (N)")
    alpha: float = param(0.5, "weight of the query in each blend (the clean image gets 1 − alpha)")

    def validate(self) -> None:
        if self.overlays < 2:
            raise ValueError("overlays must be at least 2 (dispersion needs pairs)")
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must be in (0, 1)")


class Strip(InputDetector):
    """Score = −(mean pairwise Hamming distance / bits) among the codes of N blends of the query."""

    name = "strip"
    Params = StripParams

    def estimated_work(self, sizes: WorkSizes) -> Work:
        # `overlays` blends of each scored image: the clean set, the queries and the triggered queries
        return Work(encode=self.params.overlays * (sizes.clean + 2 * sizes.query))

    def fit(self, ctx: DefenseContext) -> None:
        """Keep the defender's clean images as the overlay pool, and a seeded generator to draw from it."""
        self.pool = to_float(ctx.clean_set.all_images())
        self.generator = torch.Generator().manual_seed(ctx.seed)

    def score(self, images: torch.Tensor, ctx: DefenseContext) -> torch.Tensor:
        n, k = len(images), self.params.overlays
        pick = torch.randint(len(self.pool), (n, k), generator=self.generator)
        alpha = self.params.alpha
        blends = alpha * to_float(images)[:, None] + (1 - alpha) * self.pool[pick]  # (n, k, 3, H, W)
        codes = codes_of_floats(ctx.model, blends.flatten(0, 1).to(ctx.device)).view(n, k, -1).cpu()
        return -mean_pairwise_hamming(codes)


def mean_pairwise_hamming(codes: torch.Tensor) -> torch.Tensor:
    """(n, k, bits) ±1 codes -> (n,) mean normalised Hamming distance over the k·(k−1) ordered pairs."""
    k, bits = codes.shape[1], codes.shape[2]
    agreement = codes @ codes.transpose(1, 2)  # (n, k, k): bits − 2·hamming
    hamming = (bits - agreement) / 2
    return hamming.sum((1, 2)) / (k * (k - 1) * bits)


@hookimpl
def register_defenses(register):
    register(Strip)
