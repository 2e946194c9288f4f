"""The contexts a plugin is called with, built one way for the stages and for ``hashbench.testing``.

An attack's and a defense's context, and the ``train`` function a defense retrains a model with: the
stages build them from a stage record and the store, the conformance checks from tiny data, both through
these functions, so a plugin that passes the checks meets the contexts a benchmark gives it.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

from .api import AttackContext, DefenseContext, HashMethod, Target
from .data import DatasetSplits, ImageSet
from .models import HashModel
from .records import canonical_json
from .seeding import make_generator
from .training import TrainConfig, TrainReport, train_hash_model


def progress_bar(iterable, **kwargs):
    """The ``progress`` of every context: a transient bar, silent under HASHBENCH_QUIET=1."""
    from tqdm.auto import tqdm

    return tqdm(iterable, leave=False, disable=os.environ.get("HASHBENCH_QUIET") == "1", **kwargs)


def attack_context(attack: dict[str, Any], splits: DatasetSplits, target: Target, seed: int, poison_rate: float,
                   device: torch.device, artifact_dir: Path, surrogate_loader: Callable[[], HashModel] | None,
                   log: Callable[..., None] = lambda **metrics: None) -> AttackContext:
    """An attack's context: poison rate 0 for prepare and trigger, the stage's rate for poison. Its
    generator is a function of the attack's identity (``{"name", "version", "params"}``), seed and rate."""
    return AttackContext(
        splits=splits, target=target, poison_rate=poison_rate, device=device, seed=seed,
        generator=make_generator(seed, "attack", canonical_json(attack), poison_rate),
        artifact_dir=artifact_dir, surrogate_loader=surrogate_loader, log=log, progress=progress_bar,
    )


def victim_trainer(method: Callable[[], HashMethod], recipe: TrainConfig, generator: Callable[[], torch.Generator],
                   device: torch.device, what: str) -> Callable[..., TrainReport]:
    """``DefenseContext.train``: the victim's own training loop and objective, ``recipe`` with the overrides a
    defense passes. Each call trains with a fresh method and the victim's generator: methods draw their
    state from it in setup (CSQ's random hash centres), so a repair fine-tunes towards the same targets
    the victim was trained with."""

    def train(model: HashModel, image_set: ImageSet, epochs: int | None = None, lr: float | None = None,
              **overrides: Any) -> TrainReport:
        chosen = {k: v for k, v in {"epochs": epochs, "lr": lr, **overrides}.items() if v is not None}
        return train_hash_model(model, method(), image_set, replace(recipe, **chosen), device, generator(), what=what)

    return train


def defense_context(defense: str, model: HashModel, clean_set: ImageSet, train_set: ImageSet, num_classes: int,
                    seed: int, device: torch.device, artifact_dir: Path, train: Callable[..., TrainReport],
                    log: Callable[..., None] = lambda **metrics: None) -> DefenseContext:
    """A defender's view: ``model`` (a private copy the defense may modify), its clean data, the training
    set the victim saw, and ``train``. Its generator is a function of the seed and the defense's name."""
    return DefenseContext(
        model=model, clean_set=clean_set, train_set=train_set, num_classes=num_classes, device=device, seed=seed,
        generator=make_generator(seed, "defense", defense), artifact_dir=artifact_dir, train=train, log=log,
        progress=progress_bar,
    )
