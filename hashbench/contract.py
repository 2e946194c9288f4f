"""The rules a plugin's outputs must follow, checked where the stages receive them.

One function per rule set: triggered queries, poisonings, a data filter's result and a repair's label
scores. The stages call them at run time, so a buggy plugin fails loudly instead of skewing a leaderboard;
:mod:`hashbench.testing` calls the same functions on tiny data and reports a failure as a
``ContractError``. Each raises :class:`~hashbench.errors.PluginError` naming the plugin and the rule.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from .errors import PluginError

if TYPE_CHECKING:
    from .api import Attack, DataFilter, FilterResult, Poisoning
    from .data import ImageSet


def validate_triggered(attack: Attack, batch: torch.Tensor, result: torch.Tensor) -> None:
    """``Attack.trigger`` returns uint8 images of its input's shape."""
    if not isinstance(result, torch.Tensor) or result.dtype != torch.uint8 or result.shape != batch.shape:
        raise PluginError(
            f"attack '{attack.name}'.trigger must return uint8 images shaped {tuple(batch.shape)}; "
            f"got {getattr(result, 'dtype', type(result).__name__)} {tuple(getattr(result, 'shape', ()))}"
        )


def validate_poisoning(attack: Attack, poisoning: Poisoning, train: ImageSet) -> None:
    """``Attack.poison`` returns unique training-set positions, uint8 images of the training set's size,
    multi-hot labels, and leaves the labels alone when the attack declares itself clean-label."""
    name = attack.name
    idx = poisoning.indices
    n = len(idx)
    if idx.dtype != torch.long or idx.dim() != 1:
        raise PluginError(f"attack '{name}': poison indices must be a 1-D long tensor")
    if n and (idx.min() < 0 or idx.max() >= len(train) or len(torch.unique(idx)) != n):
        raise PluginError(f"attack '{name}': poison indices must be unique positions in the training set")
    expected = (n, 3, train.image_size, train.image_size)
    if poisoning.images.dtype != torch.uint8 or tuple(poisoning.images.shape) != expected:
        raise PluginError(f"attack '{name}': poison images must be uint8 {expected}; got "
                          f"{poisoning.images.dtype} {tuple(poisoning.images.shape)}")
    if tuple(poisoning.labels.shape) != (n, train.labels.shape[1]):
        raise PluginError(f"attack '{name}': poison labels must be ({n}, {train.labels.shape[1]}) multi-hot")
    if attack.threat_model.clean_label and not torch.equal(poisoning.labels.float(), train.labels[idx]):
        raise PluginError(f"attack '{name}' declares clean_label=True but changed the labels of its poisons")


def validate_filter(defense: DataFilter, result: FilterResult, train_size: int) -> None:
    """``DataFilter.filter`` returns one score and one bool keep flag per training sample."""
    scores, keep = result.scores, result.keep
    if (not isinstance(scores, torch.Tensor) or not isinstance(keep, torch.Tensor)
            or scores.shape != (train_size,) or keep.shape != (train_size,) or keep.dtype != torch.bool):
        raise PluginError(f"defense '{defense.name}'.filter must return one score and one bool keep flag per training sample")


def validate_label_scores(plugin: str, scores: dict[int, float] | None, num_classes: int) -> None:
    """``RepairResult.label_scores`` is None or maps class indices to finite floats: a wrong score would
    silently give a wrong ``flagged_target_rank``."""
    if scores is not None and not (isinstance(scores, dict) and all(
            isinstance(c, int) and 0 <= c < num_classes and isinstance(v, float) and math.isfinite(v)
            for c, v in scores.items())):
        raise PluginError(f"{plugin}: label_scores must map class indices below {num_classes} to finite "
                          f"floats; got {scores!r}")
