"""WaNet (Nguyen & Tran, ICLR 2021): an invisible, smooth image warp as the trigger (poison-label).

The warp is a random k×k field of 2-D offsets, normalised to mean magnitude 1, upsampled (bicubic) to the
image size and scaled by the strength s. Its "noise mode" adds training samples warped by the same field
plus per-pixel random jitter that keep their true labels, so the model learns the exact warp and not
"any warp".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hashbench import Attack, AttackContext, PluginError, Poisoning, ThreatModel, hookimpl, param, to_float, to_uint8

# The paper's offsets are s/H of the [-1, 1] grid at H = 32; dividing by this constant instead of the image
# side keeps the warp the same fraction of the image at every size (identical to the paper at 32×32).
REFERENCE_SIZE = 32


@dataclass(frozen=True)
class WaNetParams:
    grid_size: int = param(4, "k: side of the random control grid of the warping field")
    strength: float = param(0.5, "s: strength of the warp (offsets of about s/2 px at 32×32, scaled with the image)")
    cross_ratio: float = param(2.0, "noise mode: label-keeping jittered-warp samples per backdoor sample, within the poison budget")

    def validate(self) -> None:
        if self.grid_size < 2:
            raise ValueError("grid_size must be at least 2")
        if self.strength <= 0:
            raise ValueError("strength must be positive")
        if self.cross_ratio < 0:
            raise ValueError("cross_ratio must be >= 0")


def random_field(grid_size: int, generator: torch.Generator) -> torch.Tensor:
    """A (2, k, k) field of uniform offsets in [-1, 1], normalised to mean absolute value 1."""
    field = torch.rand(2, grid_size, grid_size, generator=generator) * 2 - 1
    return field / field.abs().mean()


def warp_grid(field: torch.Tensor, size: int, strength: float) -> torch.Tensor:
    """The (1, size, size, 2) sampling grid for ``grid_sample``: identity plus the upsampled, scaled field."""
    offsets = F.interpolate(field[None], size=(size, size), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    line = torch.linspace(-1, 1, size, device=field.device)
    yy, xx = torch.meshgrid(line, line, indexing="ij")
    identity = torch.stack((xx, yy), dim=-1)[None]
    return (identity + strength * offsets / REFERENCE_SIZE).clamp(-1, 1)


def jitter(count: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """The noise mode's per-pixel offsets: uniform in [-1, 1]/32 of the grid, drawn at 32×32 (the paper's
    resolution) and upsampled, so their scale relative to the image does not change with its size."""
    low = min(size, REFERENCE_SIZE)
    noise = (torch.rand(count, 2, low, low, generator=generator) * 2 - 1).to(device)
    noise = F.interpolate(noise, size=(size, size), mode="bilinear", align_corners=True)
    return noise.permute(0, 2, 3, 1) / REFERENCE_SIZE


def warp(images: torch.Tensor, grid: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images resampled through ``grid`` (broadcast over the batch); uint8 out, on the input's device."""
    x = to_float(images.to(device))
    grid = grid.expand(len(x), -1, -1, -1)
    return to_uint8(F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)).to(images.device)


class WaNet(Attack):
    """A fixed smooth warp; poisons are non-target images relabelled to the target, plus noise-mode samples."""

    name = "wanet"
    Params = WaNetParams
    threat_model = ThreatModel(clean_label=False, needs_surrogate=False, sample_specific=False, invisible=True)

    def __init__(self, params: WaNetParams | None = None):
        super().__init__(params)
        self.field: torch.Tensor | None = None

    def prepare(self, ctx: AttackContext) -> None:
        """Draw the k×k warping field from the run's generator (so each seed is its own trigger)."""
        self.field = random_field(self.params.grid_size, ctx.generator)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {} if self.field is None else {"field": self.field}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.field = state.get("field")

    def grid(self, size: int, device: torch.device) -> torch.Tensor:
        if self.field is None:
            raise PluginError("wanet: prepare() (or load_state_dict) must run before trigger/poison")
        return warp_grid(self.field.to(device), size, self.params.strength)

    def trigger(self, images: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        return warp(images, self.grid(images.shape[-1], ctx.device), ctx.device)

    def poison(self, ctx: AttackContext) -> Poisoning:
        """``poison_count()`` non-target images: 1/(1 + cross_ratio) of them warped and relabelled to the target,
        the rest noise-mode samples (jittered warp, labels kept). Backdoor positions come first."""
        train = ctx.splits.train
        chosen = ctx.choose_poison_indices(~ctx.target.overlaps(train.labels), "non-target")
        chosen = chosen[torch.randperm(len(chosen), generator=ctx.generator)]
        n_backdoor = max(1, round(len(chosen) / (1 + self.params.cross_ratio)))
        backdoor, noise_idx = chosen[:n_backdoor].sort().values, chosen[n_backdoor:].sort().values
        size = train.image_size
        grid = self.grid(size, ctx.device)
        noisy_grid = (grid + jitter(len(noise_idx), size, ctx.generator, ctx.device)).clamp(-1, 1)
        indices = torch.cat([backdoor, noise_idx])
        images = torch.cat([warp(train.images(backdoor), grid, ctx.device), warp(train.images(noise_idx), noisy_grid, ctx.device)])
        labels = torch.cat([ctx.target.labels.expand(len(backdoor), -1), train.labels[noise_idx]])
        return Poisoning(indices, images, labels)


@hookimpl
def register_attacks(register):
    register(WaNet)
