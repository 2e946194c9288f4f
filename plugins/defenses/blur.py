"""Gaussian blur of queries: an input purifier that smooths away small, high-contrast triggers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hashbench import InputPurifier, hookimpl, param, to_float, to_uint8


@dataclass(frozen=True)
class BlurParams:
    sigma: float = param(1.0, "standard deviation of the Gaussian kernel, in pixels")

    def validate(self) -> None:
        if self.sigma <= 0:
            raise ValueError("sigma must be positive")


class Blur(InputPurifier):
    """Blur every query with a Gaussian kernel (side 2·ceil(3σ)+1) before hashing it."""

    name = "blur"
    Params = BlurParams

    def purify(self, images: torch.Tensor) -> torch.Tensor:
        if len(images) == 0:
            return images
        side = 2 * math.ceil(3 * self.params.sigma) + 1
        side = min(side, 2 * ((images.shape[-1] - 1) // 2) + 1)  # reflect padding needs the kernel inside the image
        from torchvision.transforms.functional import gaussian_blur  # torchvision takes seconds to import

        return to_uint8(gaussian_blur(to_float(images), [side, side], [self.params.sigma, self.params.sigma]))


@hookimpl
def register_defenses(register):
    register(Blur)
