"""The clean_victim and victim stages: a hashing model trained on the clean or the poisoned training set."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import artifacts
from ..artifacts import PoisonSet
from ..data import ImageSet
from ..loading import load_dataset
from ..records import CleanVictimStage, PoisonStage, VictimStage
from ..store import StageWriter
from .common import save_model, train_victim

if TYPE_CHECKING:
    from ..runner import StageRunner


def run_clean_victim(runner: StageRunner, stage: CleanVictimStage, writer: StageWriter) -> None:
    splits = load_dataset(stage.dataset)
    model = train_victim(runner, writer, stage, splits.train, f"clean victim ({stage.label})")
    save_model(runner, writer, model, splits)


def poisoned_train_set(runner: StageRunner, poison: PoisonStage, train: ImageSet) -> tuple[ImageSet, PoisonSet]:
    """``train`` with the poison stage's images and labels in place of the originals, and the poisoning."""
    saved = artifacts.load(runner.store, poison.id, PoisonSet)
    return train.with_replacements(saved.indices, saved.images, saved.labels), saved


def run_victim(runner: StageRunner, stage: VictimStage, writer: StageWriter) -> None:
    splits = load_dataset(stage.dataset)
    train, _ = poisoned_train_set(runner, stage.poison, splits.train)
    model = train_victim(runner, writer, stage, train, f"backdoored victim ({stage.label})")
    save_model(runner, writer, model, splits)
