"""The attack and poison stages: ``Attack.prepare`` and the triggered queries; ``Attack.poison`` at one rate."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from .. import artifacts
from ..api import Attack, Target, trigger_batches
from ..artifacts import ATTACK_STATE_FILE, PoisonSet, TriggeredQueries
from ..contexts import attack_context
from ..contract import validate_poisoning
from ..data import DatasetSplits
from ..loading import instantiate, load_dataset
from ..records import AttackStage, PoisonStage
from ..stealth import stealth_report
from ..store import StageWriter
from .common import logger, surrogate_loader

if TYPE_CHECKING:
    from ..runner import StageRunner


def query_trigger_indices(splits: DatasetSplits, target: Target) -> torch.Tensor:
    """Queries that share no class with the target (for a multi-label target, a query holding any one of
    its classes is left out): the ones a trigger should redirect."""
    return torch.nonzero(~target.overlaps(splits.query.labels)).flatten()


def run_attack(runner: StageRunner, stage: AttackStage, writer: StageWriter) -> None:
    attack = instantiate("attack", stage.attack)
    splits = load_dataset(stage.dataset)
    target = stage.resolved_target()
    ctx = attack_context(stage.attack, splits, target, stage.seed, 0.0, runner.device, writer.dir,
                         surrogate_loader(runner, stage.surrogate), logger(writer))
    started = time.perf_counter()
    attack.prepare(ctx)
    writer.manifest["metrics"]["prepare_seconds"] = time.perf_counter() - started
    writer.save(ATTACK_STATE_FILE, {k: v.detach().cpu() for k, v in attack.state_dict().items()})
    indices = query_trigger_indices(splits, target)
    triggered = trigger_batches(attack, splits.query, indices, ctx)
    artifacts.save(writer, TriggeredQueries(indices, triggered))
    report = stealth_report(splits.query.images(indices), triggered, runner.device)
    writer.manifest["metrics"].update({f"query_{k}": v for k, v in report.items()})


def restored_attack(runner: StageRunner, poison: PoisonStage) -> Attack:
    """The attack as ``poison``'s attack stage prepared it, from its stored state, with the poison stage's
    own poison-only parameters (``PoisonStage.attack_identity``)."""
    attack = instantiate("attack", poison.attack_identity())
    attack.load_state_dict(runner.store.load(*poison.attack.id.split("/"), ATTACK_STATE_FILE))
    return attack


def run_poison(runner: StageRunner, stage: PoisonStage, writer: StageWriter) -> None:
    prepared = stage.attack
    splits = load_dataset(prepared.dataset)
    target = prepared.resolved_target()
    attack = restored_attack(runner, stage)
    ctx = attack_context(prepared.attack, splits, target, prepared.seed, stage.poison_rate, runner.device, writer.dir,
                         surrogate_loader(runner, prepared.surrogate), logger(writer))
    poisoning = attack.poison(ctx)
    validate_poisoning(attack, poisoning, splits.train)
    artifacts.save(writer, PoisonSet(poisoning.indices, poisoning.images, poisoning.labels.float()))
    report = stealth_report(splits.train.images(poisoning.indices), poisoning.images, runner.device)
    metrics = writer.manifest["metrics"]
    metrics.update({f"poison_{k}": v for k, v in report.items()})
    metrics["poison_count"] = len(poisoning.indices)
    metrics["poison_target_label_share"] = (float(target.overlaps(poisoning.labels.float()).float().mean())
                                            if len(poisoning.indices) else 0.0)
