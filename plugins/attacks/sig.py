"""SIG (Barni et al., 2019): a sinusoidal signal added to target-class training images only (clean-label)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hashbench import Attack, AttackContext, Poisoning, ThreatModel, hookimpl, param, to_float, to_uint8


@dataclass(frozen=True)
class SigParams:
    delta: float = param(20.0, "amplitude Δ of the signal, in grey levels (0-255)")
    frequency: float = param(6.0, "f: periods of the sine across the image width (so it scales with the size)")

    def validate(self) -> None:
        if not 0 < self.delta <= 255:
            raise ValueError("delta must be in (0, 255]")
        if self.frequency <= 0:
            raise ValueError("frequency must be positive")


def sine_signal(size: int, delta: float, frequency: float, device: torch.device) -> torch.Tensor:
    """v(i, j) = Δ·sin(2π·j·f / m) on every row and channel, as a float (1, 1, size, size) in [0, 1] units."""
    columns = torch.arange(size, device=device, dtype=torch.float32)
    row = (delta / 255.0) * torch.sin(2 * math.pi * columns * frequency / size)
    return row.expand(size, size)[None, None]


class Sig(Attack):
    """A horizontal sinusoid on target-class training images (labels kept); the same sinusoid on queries."""

    name = "sig"
    Params = SigParams
    threat_model = ThreatModel(clean_label=True, needs_surrogate=False, sample_specific=False, invisible=False)

    def trigger(self, images: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        signal = sine_signal(images.shape[-1], self.params.delta, self.params.frequency, ctx.device)
        return to_uint8(to_float(images.to(ctx.device)) + signal).to(images.device)

    def poison(self, ctx: AttackContext) -> Poisoning:
        return self.clean_label_poisons(ctx)


@hookimpl
def register_attacks(register):
    register(Sig)
