"""The hashing model: any backbone plus the core's hash head (Linear -> bits).

Models take float images in [0, 1]; the per-channel normalisation lives inside the model, so attacks
optimise and clamp in pixel space and never need to know a backbone's statistics.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sign_codes(z: torch.Tensor) -> torch.Tensor:
    """±1 codes from real outputs; 0 maps to +1 (docs/metrics.md, "Retrieval")."""
    return torch.where(z >= 0, 1.0, -1.0).to(z.dtype if z.is_floating_point() else torch.float32)


def majority_code(codes: torch.Tensor) -> torch.Tensor:
    """The bitwise majority (component voting) of a set of codes: ``codes`` is (n, bits) of ±1 codes, or
    real outputs taken by their sign; the result is one (bits,) ±1 code, a tie giving +1 as
    :func:`sign_codes` maps 0. An attack's anchor, a defense's per-label code and the report's target
    code are all this one rule."""
    return sign_codes(sign_codes(codes).sum(dim=0))


class HashModel(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, bits: int):
        super().__init__()
        self.backbone = backbone
        self.hash_head = nn.Linear(feature_dim, bits)
        self.bits = bits
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features of float images in [0, 1] (what data-level defenses inspect)."""
        return self.backbone((images - self.mean) / self.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Real-valued hash outputs ``z``; the code is ``sign(z)``."""
        return self.hash_head(self.features(images))

    @torch.no_grad()
    def codes(self, images: torch.Tensor) -> torch.Tensor:
        return sign_codes(self.forward(images).float())


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
