"""JPEG compression of queries: a classic input purifier against high-frequency triggers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.io import decode_jpeg, encode_jpeg

from hashbench import InputPurifier, hookimpl, param


@dataclass(frozen=True)
class JpegParams:
    quality: int = param(75, "JPEG quality, 1 (strongest) to 100")

    def validate(self) -> None:
        if not 1 <= self.quality <= 100:
            raise ValueError("quality must be between 1 and 100")


class Jpeg(InputPurifier):
    """Re-encode every query as JPEG at a given quality before hashing it."""

    name = "jpeg"
    Params = JpegParams

    def purify(self, images: torch.Tensor) -> torch.Tensor:
        if len(images) == 0:
            return images
        encoded = encode_jpeg(list(images.contiguous()), quality=self.params.quality)
        return torch.stack(decode_jpeg(encoded))


@hookimpl
def register_defenses(register):
    register(Jpeg)
