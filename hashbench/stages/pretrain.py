"""The pretrain stage: the backbone trained as a classifier on the dataset (docs/victims.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..artifacts import BACKBONE_FILE
from ..loading import instantiate, load_dataset
from ..pretraining import pretrain_backbone, pretraining_images
from ..records import PretrainStage, canonical_json
from ..seeding import make_generator
from ..store import StageWriter
from ..training import TrainConfig

if TYPE_CHECKING:
    from ..runner import StageRunner


def run_pretrain(runner: StageRunner, stage: PretrainStage, writer: StageWriter) -> None:
    splits = load_dataset(stage.dataset)
    recipe = TrainConfig(**stage.recipe)
    runner.say(f"{stage.label}: {recipe.pretrain_epochs} epochs on {len(pretraining_images(splits, recipe.pretrain_on))} "
               f"{recipe.pretrain_on} images")
    weights, report = pretrain_backbone(
        instantiate("backbone", stage.backbone), splits, recipe, runner.device,
        make_generator(stage.seed, "pretrain", canonical_json(stage.config)),
    )
    writer.save(BACKBONE_FILE, weights)
    writer.manifest["logs"]["epoch_losses"] = report.epoch_losses
    writer.manifest["metrics"]["train_seconds"] = report.seconds
    writer.manifest["metrics"]["train_images_per_second"] = report.images_per_second
