"""Activation Clustering (Chen et al., 2018) on a hashing model: per label, reduce the backbone features
of the training samples (PCA) and split them with 2-means; poisons form their own, smaller cluster.
A label's smaller cluster is removed when it holds less than ``size_threshold`` of the label."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hashbench import DataFilter, DefenseContext, FilterResult, hookimpl, param

from ._common import label_groups, model_features, pca, two_means


@dataclass(frozen=True)
class ActivationClusteringParams:
    components: int = param(10, "PCA dimensions the features are reduced to before clustering")
    size_threshold: float = param(0.35, "a label's smaller cluster is removed when its share of the label is below this")

    def validate(self) -> None:
        if self.components < 1 or not 0 < self.size_threshold <= 0.5:
            raise ValueError("components must be >= 1 and size_threshold in (0, 0.5]")


class ActivationClustering(DataFilter):
    """Score = relative closeness to the label's smaller cluster; remove small clusters."""

    name = "activation_clustering"
    Params = ActivationClusteringParams

    def filter(self, ctx: DefenseContext) -> FilterResult:
        features = model_features(ctx.model, ctx.train_set, ctx.device)
        n = len(features)
        scores = torch.full((n,), -1.0)
        keep = torch.ones(n, dtype=torch.bool)
        flagged_labels = 0
        for members in label_groups(ctx.train_set.labels):
            if len(members) < 4:
                continue
            reduced = pca(features[members], self.params.components)
            assign, centroids = two_means(reduced, ctx.generator)
            small = int((assign == 1).sum() < (assign == 0).sum())
            closeness = small_cluster_closeness(reduced, centroids, small)
            scores[members] = torch.maximum(scores[members], closeness)  # multi-label: a sample's worst label
            if float((assign == small).double().mean()) < self.params.size_threshold:
                keep[members[assign == small]] = False
                flagged_labels += 1
        report = {"removed_fraction": float((~keep).double().mean()), "ac_flagged_labels": float(flagged_labels)}
        return FilterResult(scores, keep, report=report)


def small_cluster_closeness(x: torch.Tensor, centroids: torch.Tensor, small: int) -> torch.Tensor:
    """(d_large − d_small) / |c_large − c_small| per row, in about [−1, 1]: higher = nearer the smaller cluster."""
    distances = torch.cdist(x, centroids)
    separation = (centroids[0] - centroids[1]).norm().clamp_min(1e-12)
    return (distances[:, 1 - small] - distances[:, small]) / separation


@hookimpl
def register_defenses(register):
    register(ActivationClustering)
