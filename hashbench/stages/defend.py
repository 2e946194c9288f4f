"""The defend stage: one defense against one backdoored victim.

What it writes depends on the defense's role (docs/architecture.md): a purifier's codes of the purified
queries, a detector's scores, a repaired or retrained model with its codes. Every role is timed.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from .. import artifacts
from ..api import InputDetector
from ..artifacts import Detection, PoisonSet, PurifiedCodes, TriggeredQueries
from ..contexts import defense_context, victim_trainer
from ..contract import validate_filter, validate_label_scores
from ..data import DatasetSplits, ImageSet, iterate_batches
from ..evaluation import auroc, encode_set, encode_tensor, target_rank, threshold_at_fpr, tpr_at_fpr
from ..loading import instantiate, load_dataset, victim_generator, victim_recipe
from ..models import HashModel
from ..records import DefendStage
from ..seeding import make_generator
from ..store import StageWriter
from .common import load_model, logger, save_model, train_victim
from .victims import poisoned_train_set

if TYPE_CHECKING:
    from ..api import DefenseContext
    from ..runner import StageRunner

SCORE_BATCH = 256


def clean_subset(splits: DatasetSplits, poisoned: torch.Tensor, fraction: float, seed: int) -> ImageSet:
    """The defender's clean data: ``fraction`` of the training set, drawn from samples that were not poisoned."""
    mask = torch.ones(len(splits.train), dtype=torch.bool)
    mask[poisoned] = False
    candidates = torch.nonzero(mask).flatten()
    count = max(1, min(len(candidates), int(round(fraction * len(splits.train)))))
    pick = torch.randperm(len(candidates), generator=make_generator(seed, "clean_subset", fraction))[:count]
    return splits.train.subset(candidates[pick].sort().values)


def run_defend(runner: StageRunner, stage: DefendStage, writer: StageWriter) -> None:
    victim = stage.backdoored
    splits = load_dataset(victim.dataset)
    defense = instantiate("defense", stage.defense)
    train, poisoning = poisoned_train_set(runner, stage.poison, splits.train)
    model = load_model(runner, victim)
    trainer = victim_trainer(lambda: instantiate("method", victim.victim["method"]), victim_recipe(victim.victim),
                             lambda: victim_generator(victim.victim, victim.seed), runner.device,
                             f"defense {defense.name}")
    ctx = defense_context(defense.name, copy.deepcopy(model), clean_subset(splits, poisoning.indices, stage.clean_fraction,
                          stage.seed), train, splits.num_classes, stage.seed, runner.device, writer.dir, trainer,
                          logger(writer))
    metrics = writer.manifest["metrics"]
    metrics["defense_clean_samples"] = len(ctx.clean_set)
    started = time.perf_counter()
    if stage.role == "purify":
        _purify(runner, stage, writer, defense, model, splits)
    elif stage.role == "detect":
        _detect(runner, stage, writer, defense, ctx, splits)
    elif stage.role == "repair":
        _repair(runner, stage, writer, defense, ctx, splits)
    elif stage.role == "filter":
        _filter(runner, stage, writer, defense, ctx, splits, train, poisoning, started)
    metrics.setdefault("defense_seconds", time.perf_counter() - started)


def _purify(runner: StageRunner, stage: DefendStage, writer: StageWriter, defense: Any, model: HashModel,
            splits: DatasetSplits) -> None:
    """The purifier runs once, here: the victim's codes of the purified queries and triggered queries are
    stored for evaluate. ``defense_seconds`` is the purifier's own time on the query set, as before."""
    spent = {"seconds": 0.0}

    def purify(images: torch.Tensor) -> torch.Tensor:
        started = time.perf_counter()
        out = defense.purify(images)
        spent["seconds"] += time.perf_counter() - started
        return out

    queries = encode_set(model, splits.query, runner.device, transform=purify)
    writer.manifest["metrics"]["defense_seconds"] = spent["seconds"]
    writer.manifest["metrics"]["defense_images"] = len(splits.query)
    triggered = artifacts.load(runner.store, stage.attack.id, TriggeredQueries)
    artifacts.save(writer, PurifiedCodes.of(queries, encode_tensor(model, defense.purify(triggered.images), runner.device),
                                            model.bits))


def _batches(image_set: ImageSet):
    """The uint8 image batches of a set; a file-backed set is decoded on DataLoader workers, never held whole."""
    workers = 0 if image_set.in_memory else min(4, os.cpu_count() or 1)
    return (images for images, _, _ in iterate_batches(image_set, SCORE_BATCH, num_workers=workers))


def _scores(defense: InputDetector, batches, ctx: DefenseContext) -> torch.Tensor:
    out = [defense.score(images, ctx).detach().float().cpu() for images in batches]
    return torch.cat(out) if out else torch.zeros(0)


def _detect(runner: StageRunner, stage: DefendStage, writer: StageWriter, defense: Any, ctx: DefenseContext,
            splits: DatasetSplits) -> None:
    defense.fit(ctx)
    clean_scores = _scores(defense, _batches(ctx.clean_set), ctx)
    query_scores = _scores(defense, _batches(splits.query), ctx)
    triggered = artifacts.load(runner.store, stage.attack.id, TriggeredQueries)
    triggered_scores = _scores(defense, triggered.images.split(SCORE_BATCH), ctx)
    threshold = threshold_at_fpr(clean_scores, 0.05)
    artifacts.save(writer, Detection(torch.tensor(threshold), query_scores, triggered_scores))
    untriggered = query_scores[triggered.indices]
    writer.manifest["metrics"].update(
        detection_auroc=auroc(untriggered, triggered_scores),
        detection_tpr_at_5fpr=tpr_at_fpr(untriggered, triggered_scores, 0.05),
        detection_clean_rejection=float((query_scores > threshold).double().mean()),
        detection_triggered_rejection=float((triggered_scores > threshold).double().mean()),
    )


def _repair(runner: StageRunner, stage: DefendStage, writer: StageWriter, defense: Any, ctx: DefenseContext,
            splits: DatasetSplits) -> None:
    result = defense.repair(ctx)
    metrics = writer.manifest["metrics"]
    metrics.update(result.report)
    writer.manifest["report_keys"] = sorted(result.report)  # evaluate copies these into the row
    validate_label_scores(f"defense '{defense.name}'", result.label_scores, splits.num_classes)
    target = stage.attack.resolved_target()
    if result.flagged_labels is not None:
        metrics["flagged_labels"] = list(result.flagged_labels)
        metrics["flagged_target"] = float(any(c in target.classes for c in result.flagged_labels))
    if result.label_scores:
        metrics["flagged_target_rank"] = target_rank(result.label_scores, target.classes)
    writer.manifest["has_model"] = True
    save_model(runner, writer, result.model, splits)


def _filter(runner: StageRunner, stage: DefendStage, writer: StageWriter, defense: Any, ctx: DefenseContext,
            splits: DatasetSplits, train: ImageSet, poisoning: PoisonSet, started: float) -> None:
    result = defense.filter(ctx)
    validate_filter(defense, result, len(train))
    result = replace(result, scores=result.scores.detach().double().cpu(), keep=result.keep.cpu())
    filter_seconds = time.perf_counter() - started
    is_poison = torch.zeros(len(train), dtype=torch.bool)
    is_poison[poisoning.indices] = True
    removed = ~result.keep
    metrics = writer.manifest["metrics"]
    metrics.update(result.report)
    writer.manifest["report_keys"] = sorted(result.report)
    metrics.update(
        defense_filter_seconds=filter_seconds,
        detection_auroc=auroc(result.scores[~is_poison], result.scores[is_poison]),
        detection_tpr_at_5fpr=tpr_at_fpr(result.scores[~is_poison], result.scores[is_poison], 0.05),
        removed_poison_fraction=float(removed[is_poison].double().mean()) if len(poisoning.indices) else 0.0,
        removed_clean_fraction=float(removed[~is_poison].double().mean()),
    )
    kept = train.subset(torch.nonzero(result.keep).flatten())
    model = train_victim(runner, writer, stage.backdoored, kept, f"retrained victim ({defense.name})")
    writer.manifest["has_model"] = True
    save_model(runner, writer, model, splits)

