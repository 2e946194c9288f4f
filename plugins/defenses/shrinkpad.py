"""ShrinkPad (Li et al., 2021): shrink each query and pad it back at a random offset, breaking the
spatial alignment that a fixed-position trigger relies on."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hashbench import InputPurifier, hookimpl, param, to_float, to_uint8


@dataclass(frozen=True)
class ShrinkPadParams:
    pad: int = param(4, "pixels the image is shrunk by (and padded back with zeros)")
    seed: int = param(0, "seed of the random padding offsets")

    def validate(self) -> None:
        if self.pad < 1:
            raise ValueError("pad must be at least 1")


class ShrinkPad(InputPurifier):
    """Resize every query to (side − pad) and zero-pad it back at a seeded random offset."""

    name = "shrinkpad"
    Params = ShrinkPadParams

    def purify(self, images: torch.Tensor) -> torch.Tensor:
        if len(images) == 0:
            return images
        side, pad = images.shape[-1], self.params.pad
        if pad >= side:
            raise ValueError(f"shrinkpad: pad={pad} must be smaller than the image side {side}")
        small = F.interpolate(to_float(images), size=(side - pad, side - pad), mode="bilinear", antialias=True, align_corners=False)
        # one fresh generator per call: a given batch is always purified the same way
        offsets = torch.randint(0, pad + 1, (len(images), 2), generator=torch.Generator().manual_seed(self.params.seed))
        out = torch.zeros(images.shape, dtype=small.dtype)
        for i, (top, left) in enumerate(offsets.tolist()):
            out[i, :, top : top + side - pad, left : left + side - pad] = small[i]
        return to_uint8(out)


@hookimpl
def register_defenses(register):
    register(ShrinkPad)
