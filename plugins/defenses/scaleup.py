"""SCALE-UP (Guo et al., ICLR 2023) for hashing: amplify a query's pixel values and see whether its code
holds. Triggered queries stay at the target's code under amplification far more than clean ones."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hashbench import DefenseContext, InputDetector, Work, WorkSizes, hookimpl, param, to_float

from ._common import codes_of_floats


@dataclass(frozen=True)
class ScaleUpParams:
    max_factor: int = param(5, "largest amplification k; the query is scaled by 2, 3, ..., k (then clipped to [0, 1])")

    def validate(self) -> None:
        if self.max_factor < 2:
            raise ValueError("max_factor must be at least 2")


class ScaleUp(InputDetector):
    """Score = mean over factors 2..k of the fraction of bits where the amplified query's code equals its own."""

    name = "scaleup"
    Params = ScaleUpParams

    def estimated_work(self, sizes: WorkSizes) -> Work:
        # the image and its amplifications by 2..max_factor, for the clean set, queries and triggered queries
        return Work(encode=self.params.max_factor * (sizes.clean + 2 * sizes.query))

    def score(self, images: torch.Tensor, ctx: DefenseContext) -> torch.Tensor:
        x = to_float(images).to(ctx.device)
        original = codes_of_floats(ctx.model, x)
        agreement = torch.zeros(len(images), device=original.device)
        factors = range(2, self.params.max_factor + 1)
        for factor in factors:
            scaled = codes_of_floats(ctx.model, (x * factor).clamp(0, 1))
            agreement += (scaled == original).float().mean(1)
        return (agreement / len(factors)).cpu()


@hookimpl
def register_defenses(register):
    register(ScaleUp)
