"""Spectral Signatures (Tran et al., NeurIPS 2018) on a hashing model: per label, poisons leave a trace
along the top singular vector of the centred backbone features. Each training sample scores its
squared projection on that vector; the top 1.5·ε of every label are removed and the victim is retrained.

By default a label is centred at the mean of the defender's clean samples of that label rather than at
the label's own mean: poison-label attacks can make poisons half of the target label, where the label
mean sits between the two groups and both project equally far."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from hashbench import DataFilter, DefenseContext, FilterResult, Work, WorkSizes, hookimpl, param

from ._common import label_groups, model_features


@dataclass(frozen=True)
class SpectralParams:
    poison_fraction: float = param(0.1, "expected fraction ε of poisons among a label's samples")
    removal_factor: float = param(1.5, "remove removal_factor·ε of each label's samples, highest scores first")
    centre: Literal["clean", "label"] = param("clean", "centre a label at its clean-subset mean ('clean') or its own mean ('label', the paper)")

    def validate(self) -> None:
        if not 0 < self.poison_fraction < 1 or self.removal_factor <= 0:
            raise ValueError("poison_fraction must be in (0, 1) and removal_factor > 0")


class Spectral(DataFilter):
    """Score = squared projection on the label's top singular vector; drop the top removal_factor·ε per label."""

    name = "spectral"
    Params = SpectralParams

    def estimated_work(self, sizes: WorkSizes) -> Work:
        return Work(encode=sizes.train)  # the features of the whole training set

    def filter(self, ctx: DefenseContext) -> FilterResult:
        features = model_features(ctx.model, ctx.train_set, ctx.device).double()
        centres = self.label_centres(ctx, features)
        n = len(features)
        scores = torch.zeros(n, dtype=torch.float64)
        keep = torch.ones(n, dtype=torch.bool)
        share = self.params.removal_factor * self.params.poison_fraction
        for label, members in enumerate(label_groups(ctx.train_set.labels)):
            if len(members) < 2:
                continue
            label_scores = spectral_scores(features[members] - centres[label])
            scores[members] = torch.maximum(scores[members], label_scores)  # multi-label: a sample's worst label
            count = math.ceil(round(share * len(members), 6))  # round first: 0.15 · 200 is 30.000000000000004
            removed = label_scores.topk(min(len(members), count)).indices
            keep[members[removed]] = False
        return FilterResult(scores.float(), keep, report={"removed_fraction": float((~keep).double().mean())})

    def label_centres(self, ctx: DefenseContext, features: torch.Tensor) -> list[torch.Tensor]:
        """Per label, the mean of the reference features: the clean subset's (when it has samples of the
        label and ``centre`` is 'clean'), else the training samples' own."""
        train_groups = label_groups(ctx.train_set.labels)
        if self.params.centre == "label":
            return [features[g].mean(0) for g in train_groups]
        clean = model_features(ctx.model, ctx.clean_set, ctx.device).double()
        clean_groups = label_groups(ctx.clean_set.labels)
        return [clean[c].mean(0) if len(c) else features[g].mean(0) for g, c in zip(train_groups, clean_groups)]


def spectral_scores(centred: torch.Tensor) -> torch.Tensor:
    """Squared projection of each (already centred) feature row on the top right singular vector."""
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ vh[0]).pow(2)


@hookimpl
def register_defenses(register):
    register(Spectral)
