"""Pretraining a backbone as a classifier, once per dataset, backbone and recipe.

Hashing papers fine-tune ImageNet-pretrained backbones; BadHash's surrogate and victim share such weights.
The CPU-scale counterpart is a backbone trained here to classify a dataset's images, stored as a
``pretrain`` stage and loaded by every victim of that dataset and backbone, whatever its method, code
length or benchmark seed (clean, backdoored, retrained by a defense, and the surrogate); the recipe's
own ``pretrain_seed`` seeds it. It goes through the one training loop, with a
classification objective in place of a hashing method. Which images it sees is the ``pretrain_on``
setting (docs/victims.md); it never sees a query.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .api import Backbone, HashMethod
from .data import DatasetSplits, ImageSet
from .models import HashModel
from .training import TrainConfig, TrainReport, train_hash_model


class ClassificationObjective(HashMethod):
    """Cross-entropy over the classes (single-label data) or per-class logistic loss (multi-label data),
    on the outputs of a head with one unit per class."""

    name = "classification"

    def __init__(self, multi_label: bool):
        super().__init__()
        self.multi_label = multi_label

    def loss(self, z: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        if self.multi_label:
            return F.binary_cross_entropy_with_logits(z, labels)
        return F.cross_entropy(z, labels.argmax(1))


def pretraining_images(splits: DatasetSplits, pretrain_on: str) -> ImageSet:
    """The images the pretraining sees: the training split, or the whole database (which, in protocols
    whose training images are drawn from the database, includes them). Never the queries."""
    return splits.database if pretrain_on == "database" else splits.train


def pretrain_backbone(backbone: Backbone, splits: DatasetSplits, config: TrainConfig, device: torch.device,
                      generator: torch.Generator) -> tuple[dict[str, torch.Tensor], TrainReport]:
    """Train ``backbone`` with a classification head on ``pretraining_images``; return the backbone's
    weights (the head is dropped) and the training report."""
    module, feature_dim = backbone.build(splits.image_size)
    model = HashModel(module, feature_dim, splits.num_classes)  # the "hash head" is the classifier here
    recipe = TrainConfig(
        epochs=config.pretrain_epochs, batch_size=config.pretrain_batch_size, lr=config.pretrain_lr,
        weight_decay=config.weight_decay, optimizer=config.optimizer, schedule="cosine",
        augment=config.augment, amp=config.amp, num_workers=config.num_workers,
    )
    report = train_hash_model(model, ClassificationObjective(splits.multi_label),
                              pretraining_images(splits, config.pretrain_on), recipe, device, generator,
                              what="pretraining")
    return {k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}, report
