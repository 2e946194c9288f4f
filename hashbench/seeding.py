"""Deterministic seeding (torch, numpy, random; DataLoader workers seed from torch's initial seed)."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(seed: int, *salt: object) -> int:
    """A stable 63-bit seed from a base seed and any labels (a stage kind, a plugin name...)."""
    text = "/".join([str(seed), *map(str, salt)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_generator(seed: int, *salt: object) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, *salt))
    return g
