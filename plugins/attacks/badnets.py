"""BadNets (Gu et al., 2017): a visible patch, poisoned images relabelled to the target (poison-label)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from hashbench import Attack, AttackContext, Poisoning, ThreatModel, hookimpl, param


@dataclass(frozen=True)
class BadNetsParams:
    patch_fraction: float = param(0.125, "patch side as a fraction of the image side (4 px at 32×32)")
    position: Literal["bottom_right", "top_left", "center"] = param("bottom_right", "where the patch goes")
    pattern: Literal["checkerboard", "white", "random"] = param("checkerboard", "patch content ('random' is seeded)")
    pattern_seed: int = param(0, "seed of the random pattern")

    def validate(self) -> None:
        if not 0 < self.patch_fraction <= 0.5:
            raise ValueError("patch_fraction must be in (0, 0.5]")


class BadNets(Attack):
    """A fixed visible patch; poisons are non-target images relabelled to the target."""

    name = "badnets"
    Params = BadNetsParams
    threat_model = ThreatModel(clean_label=False, needs_surrogate=False, sample_specific=False, invisible=False)

    def patch(self, image_size: int) -> torch.Tensor:
        side = max(1, round(self.params.patch_fraction * image_size))
        if self.params.pattern == "white":
            return torch.full((3, side, side), 255, dtype=torch.uint8)
        if self.params.pattern == "random":
            g = torch.Generator().manual_seed(self.params.pattern_seed)
            return torch.randint(0, 256, (3, side, side), generator=g, dtype=torch.uint8)
        yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        return (((yy + xx) % 2) * 255).to(torch.uint8).expand(3, side, side).clone()

    def trigger(self, images: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        size = images.shape[-1]
        patch = self.patch(size)
        side = patch.shape[-1]
        top, left = {"bottom_right": (size - side, size - side), "top_left": (0, 0),
                     "center": ((size - side) // 2, (size - side) // 2)}[self.params.position]
        out = images.clone()
        out[:, :, top : top + side, left : left + side] = patch
        return out

    def poison(self, ctx: AttackContext) -> Poisoning:
        return self.relabelled_poisons(ctx)


@hookimpl
def register_attacks(register):
    register(BadNets)
