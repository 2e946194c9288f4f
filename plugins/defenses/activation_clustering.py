"""Activation Clustering (Chen et al., 2018) on a hashing model: per label, reduce the backbone features
of the training samples (PCA) and split them with 2-means; one cluster is suspected of being the poisons.
Which one: by default the cluster that lies farther from the other labels' features (poisons are
hyper-typical of their label in a backdoored model: the trigger is a stronger feature of the target
than any natural one), or the paper's smaller cluster. A label's suspected cluster is removed when it
holds less than ``size_threshold`` of the label (the paper's relative-size rule)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from hashbench import DataFilter, DefenseContext, FilterResult, Work, WorkSizes, hookimpl, param

from ._common import label_groups, model_features, pca, two_means

SILHOUETTE_SAMPLE = 2000  # members of a label used to estimate its silhouette (pairwise distances)


@dataclass(frozen=True)
class ActivationClusteringParams:
    components: int = param(10, "PCA dimensions the features are reduced to before clustering")
    size_threshold: float = param(0.35, "a label's suspected cluster is removed when its share of the label is below this")
    suspect: Literal["typical", "smaller"] = param(
        "typical", "the suspected cluster of a label: 'typical' = the one farther from the other labels' features; "
                   "'smaller' = the paper's rule")

    def validate(self) -> None:
        if self.components < 1 or not 0 < self.size_threshold <= 0.5:
            raise ValueError("components must be >= 1 and size_threshold in (0, 0.5]")


class ActivationClustering(DataFilter):
    """Score = label silhouette × relative closeness to the label's suspected cluster; remove small suspects."""

    name = "activation_clustering"
    Params = ActivationClusteringParams

    def estimated_work(self, sizes: WorkSizes) -> Work:
        return Work(encode=sizes.train)  # the activations of the whole training set

    def filter(self, ctx: DefenseContext) -> FilterResult:
        features = model_features(ctx.model, ctx.train_set, ctx.device)
        groups = label_groups(ctx.train_set.labels)
        centroids = torch.stack([features[m].mean(0) if len(m) else features.new_full((features.shape[1],), float("inf"))
                                 for m in groups])
        n = len(features)
        scores = torch.full((n,), -1.0)
        keep = torch.ones(n, dtype=torch.bool)
        flagged_labels = 0
        for label, members in enumerate(groups):
            if len(members) < 4:
                continue
            reduced = pca(features[members], self.params.components)
            assign, cluster_centres = two_means(reduced, ctx.generator)
            suspect = self.suspected_cluster(assign, features[members], centroids, label)
            # a label whose activations do not split (low silhouette) scores near 0 whatever its clusters
            separation = silhouette(reduced, assign, ctx.generator)
            closeness = cluster_closeness(reduced, cluster_centres, suspect)
            scores[members] = torch.maximum(scores[members], separation * closeness)  # multi-label: worst label
            if float((assign == suspect).double().mean()) < self.params.size_threshold:
                keep[members[assign == suspect]] = False
                flagged_labels += 1
        report = {"removed_fraction": float((~keep).double().mean()), "ac_flagged_labels": float(flagged_labels)}
        return FilterResult(scores, keep, report=report)

    def suspected_cluster(self, assign: torch.Tensor, features: torch.Tensor, centroids: torch.Tensor, label: int) -> int:
        if self.params.suspect == "smaller":
            return int((assign == 1).sum() < (assign == 0).sum())
        others = torch.cat([centroids[:label], centroids[label + 1 :]])
        nearest_other = torch.cdist(features, others).min(1).values
        distance = [float(nearest_other[assign == k].mean()) if (assign == k).any() else -1.0 for k in (0, 1)]
        return int(distance[1] > distance[0])


def cluster_closeness(x: torch.Tensor, centres: torch.Tensor, cluster: int) -> torch.Tensor:
    """(d_other − d_cluster) / |c_0 − c_1| per row, in about [−1, 1]: higher = nearer ``cluster``."""
    distances = torch.cdist(x, centres)
    separation = (centres[0] - centres[1]).norm().clamp_min(1e-12)
    return (distances[:, 1 - cluster] - distances[:, cluster]) / separation


def silhouette(x: torch.Tensor, assign: torch.Tensor, generator: torch.Generator) -> float:
    """Mean silhouette of a two-cluster split (on a seeded sample of at most SILHOUETTE_SAMPLE rows);
    0 when a cluster has fewer than two members."""
    if len(x) > SILHOUETTE_SAMPLE:
        pick = torch.randperm(len(x), generator=generator)[:SILHOUETTE_SAMPLE]
        x, assign = x[pick], assign[pick]
    if min(int((assign == 0).sum()), int((assign == 1).sum())) < 2:
        return 0.0
    distances = torch.cdist(x, x)
    values = torch.zeros(len(x))
    for k in (0, 1):
        own = assign == k
        within = distances[own][:, own].sum(1) / (own.sum() - 1)
        between = distances[own][:, ~own].mean(1)
        values[own] = (between - within) / torch.maximum(within, between).clamp_min(1e-12)
    return float(values.mean())


@hookimpl
def register_defenses(register):
    register(ActivationClustering)
