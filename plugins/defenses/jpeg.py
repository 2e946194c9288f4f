"""JPEG compression of queries: a classic input purifier against high-frequency triggers."""

from __future__ import annotations

from dataclasses import dataclass

import io

import numpy as np
import torch
from PIL import Image

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
        out = torch.empty_like(images)
        for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=self.params.quality)
            buffer.seek(0)
            out[i] = torch.from_numpy(np.array(Image.open(buffer).convert("RGB"))).permute(2, 0, 1)
        return out


@hookimpl
def register_defenses(register):
    register(Jpeg)
