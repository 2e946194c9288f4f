"""Blended (Chen et al., 2017): a full-image pattern blended into the image at ratio α (poison-label)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from hashbench import (
    Attack,
    AttackContext,
    DataError,
    PluginError,
    Poisoning,
    ThreatModel,
    hookimpl,
    param,
    to_float,
    to_uint8,
)


@dataclass(frozen=True)
class BlendedParams:
    alpha: float = param(0.2, "blend ratio α: poisoned = (1 − α)·image + α·pattern")
    pattern: str = param("noise", "'noise' (seeded uniform noise) or the path of an image file (PNG/JPEG)")
    pattern_seed: int = param(0, "seed of the noise pattern")

    def validate(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")


def noise_pattern(size: int, seed: int) -> torch.Tensor:
    """Uniform uint8 noise at the image's resolution (the paper's random-noise key)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)


def image_pattern(path: str, size: int) -> torch.Tensor:
    """An image file read as RGB and resized (antialiased) to ``size``×``size``."""
    from torchvision.io import ImageReadMode, decode_image

    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"blended: pattern file '{file}' does not exist; give a PNG/JPEG path or pattern = \"noise\"")
    try:
        image = decode_image(str(file), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"blended: cannot read pattern file '{file}' as an image ({exc})") from None
    resized = F.interpolate(image[None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized[0].round().clamp(0, 255).to(torch.uint8)


class Blended(Attack):
    """A fixed full-image pattern blended at ratio α; poisons are non-target images relabelled to the target."""

    name = "blended"
    Params = BlendedParams
    threat_model = ThreatModel(clean_label=False, needs_surrogate=False, sample_specific=False, invisible=False)

    def __init__(self, params: BlendedParams | None = None):
        super().__init__(params)
        self._patterns: dict[int, torch.Tensor] = {}

    def pattern(self, size: int) -> torch.Tensor:
        """The uint8 (3, size, size) pattern, built once per size (a missing file fails here, clearly)."""
        if size not in self._patterns:
            p = self.params
            self._patterns[size] = noise_pattern(size, p.pattern_seed) if p.pattern == "noise" else image_pattern(p.pattern, size)
        return self._patterns[size]

    def prepare(self, ctx: AttackContext) -> None:
        """Build the pattern now, so that a missing pattern file stops the attack before any poisoning."""
        self.pattern(ctx.splits.image_size)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The pattern itself, so a cached stage does not depend on the file still being there."""
        return {f"pattern_{size}": pattern for size, pattern in self._patterns.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for key, pattern in state.items():
            if not key.startswith("pattern_"):
                raise PluginError(f"blended: unexpected state entry '{key}'")
            self._patterns[int(key.removeprefix("pattern_"))] = pattern.to(torch.uint8)

    def trigger(self, images: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        alpha = self.params.alpha
        pattern = to_float(self.pattern(images.shape[-1]).to(ctx.device))
        blended = (1 - alpha) * to_float(images.to(ctx.device)) + alpha * pattern
        return to_uint8(blended).to(images.device)

    def poison(self, ctx: AttackContext) -> Poisoning:
        return self.relabelled_poisons(ctx)


@hookimpl
def register_attacks(register):
    register(Blended)
