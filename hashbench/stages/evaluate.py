"""The evaluate stage: one results row, the metrics of docs/metrics.md for one (victim, attack, defense).

It reads, in one pass, its record and the files of the stages it depends on: the models' codes, the
triggered queries, the poisons, a detector's scores or a purifier's codes, and the metrics those stages
recorded in their manifests. It builds no attack or defense.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .. import METRIC_CONVENTIONS_VERSION, __version__, artifacts
from ..artifacts import CURVES_FILE, EVAL_CODES_FILE, Detection, PoisonSet, PurifiedCodes, TriggeredQueries
from ..evaluation import encode_tensor
from ..loading import instantiate, load_dataset
from ..records import DefendStage, EvaluateStage, canonical_json
from ..retrieval import pack_codes, score_rankings
from ..store import StageWriter
from .common import database_codes, load_model, query_codes

if TYPE_CHECKING:
    from ..runner import StageRunner

POISON_METRICS = ("poison_psnr", "poison_ssim", "poison_lpips", "poison_linf", "poison_l2", "poison_count")
QUERY_METRICS = ("query_psnr", "query_ssim", "query_lpips", "query_linf", "query_l2")


def run_evaluate(runner: StageRunner, stage: EvaluateStage, writer: StageWriter) -> None:
    clean = stage.clean
    splits = load_dataset(clean.dataset)
    topk = splits.topk
    db_labels = splits.database.labels
    clean_model = load_model(runner, clean)
    clean_db = database_codes(runner, clean.id)
    clean_query_codes = query_codes(runner, clean.id, clean_model, splits)
    row = _row_identity(stage)
    m = writer.manifest["metrics"]
    # every mAP and curve of a row comes from one ranking per set of codes (score_rankings), not one per metric
    clean_scores = score_rankings(clean_query_codes, clean_db, db_labels, {"own": splits.query.labels}, topk,
                                  curves=["own"] if stage.defended is None else [])["own"]
    m["clean_map_clean_model"] = clean_scores.mean_average_precision()
    _metric_plugins(stage, m, clean_query_codes, clean_db, splits.query.labels, db_labels, topk, "clean_model_")
    if stage.defended is None:
        m["clean_map"] = m["clean_map_clean_model"]
        # the evaluated model is the clean one, so the metric plugins' columns are its clean_model_ ones
        m.update({k.removeprefix("clean_model_"): v for k, v in list(m.items()) if k.startswith("clean_model_")})
        writer.save(CURVES_FILE, {"clean": clean_scores.curves()})
        writer.manifest["row"] = row
        return

    defended = stage.defended
    target = defended.attack.resolved_target()
    # the evaluated model: the defend stage's when the defense produced one, else the backdoored victim's
    model_id = defended.id if defended.produces_model else defended.backdoored.id
    model = load_model(runner, defended.backdoored, model_id)
    db_codes = database_codes(runner, model_id)
    triggered = artifacts.load(runner.store, defended.attack.id, TriggeredQueries)
    trig_idx = triggered.indices
    if defended.role == "purify":  # the purifier ran in the defend stage, which stored the victim's codes
        purified = artifacts.load(runner.store, defended.id, PurifiedCodes)
        queries, trig_codes = purified.query_codes(), purified.triggered_codes()
    else:
        queries = query_codes(runner, model_id, model, splits)
        trig_codes = encode_tensor(model, triggered.images, runner.device)
    target_rows = target.labels.reshape(1, -1).expand(len(queries), -1)  # every query judged against the target
    trig_target_rows = target_rows[: len(trig_idx)]

    keep_trig = torch.ones(len(trig_idx), dtype=torch.bool)
    keep_query = torch.ones(len(splits.query), dtype=torch.bool)
    if defended.role == "detect":
        detection = artifacts.load(runner.store, defended.id, Detection)
        threshold = float(detection.threshold)
        keep_trig = detection.triggered_scores <= threshold
        keep_query = detection.query_scores <= threshold
        m["passed_triggered_fraction"] = float(keep_trig.double().mean()) if len(keep_trig) else 0.0

    on_queries = score_rankings(queries, db_codes, db_labels, {"own": splits.query.labels, "target": target_rows},
                                topk, curves=["own"])
    on_triggered = score_rankings(trig_codes, db_codes, db_labels, {
        "target": trig_target_rows, "own": splits.query.labels[trig_idx]}, topk, curves=["target"])
    clean_trig_codes = encode_tensor(clean_model, triggered.images, runner.device)
    clean_on_triggered = score_rankings(clean_trig_codes, clean_db, db_labels, {"target": trig_target_rows}, topk,
                                        curves=["target"])["target"]
    m["t_map"] = on_triggered["target"].mean_average_precision(keep_trig)
    m["t_map_untriggered"] = on_queries["target"].mean_average_precision(trig_idx)
    m["t_map_clean_model"] = clean_on_triggered.mean_average_precision()
    m["map_triggered"] = on_triggered["own"].mean_average_precision(keep_trig)
    m["clean_map"] = on_queries["own"].mean_average_precision(keep_query)
    m["delta_map"] = m["clean_map"] - m["clean_map_clean_model"]
    _metric_plugins(stage, m, queries, db_codes, splits.query.labels, db_labels, topk, "")
    writer.save(CURVES_FILE, {
        "clean": on_queries["own"].curves(keep_query),
        "triggered": on_triggered["target"].curves(keep_trig),
        "triggered_clean_model": clean_on_triggered.curves(),
    })
    poisons = artifacts.load(runner.store, defended.poison.id, PoisonSet)
    writer.save(EVAL_CODES_FILE, {"bits": model.bits, "poison_indices": poisons.indices, **{
        name: pack_codes(codes) for name, codes in (
            ("triggered", trig_codes), ("triggered_clean_model", clean_trig_codes),
            ("poisons", encode_tensor(model, poisons.images, runner.device)),
            ("poisons_clean_model", encode_tensor(clean_model, poisons.images, runner.device)))}})
    _copy_stage_metrics(runner, defended, m, len(splits.train))
    row.update(_attack_identity(defended))
    writer.manifest["row"] = row


def _copy_stage_metrics(runner: StageRunner, defended: DefendStage, m: dict[str, Any], train_size: int) -> None:
    """The metrics and costs the attack, poison, victim and defend stages recorded in their manifests."""
    manifest = {stage.kind: runner.store.manifest(*stage.id.split("/"))
                for stage in (defended.attack, defended.poison, defended.backdoored, defended)}
    for key in POISON_METRICS:
        m[key] = manifest["poison"]["metrics"].get(key)
    # the rate the poisons really are (poison_rate rounded to whole images), shown beside poison_rate
    m["poison_rate_actual"] = m["poison_count"] / train_size if m["poison_count"] is not None else None
    for key in QUERY_METRICS:
        m[key] = manifest["attack"]["metrics"].get(key)
    defend = manifest["defend"]
    for key, value in defend["metrics"].items():
        if key.startswith(("detection_", "removed_", "flagged_", "defense_")) or key in defend.get("report_keys", []):
            m[key] = value
    m["defense_cost_seconds"] = defend.get("seconds")
    m["attack_cost_seconds"] = manifest["attack"].get("seconds")
    m["victim_train_seconds"] = manifest["victim"].get("seconds")


def _metric_plugins(stage: EvaluateStage, metrics: dict, query_codes, db_codes, query_labels, db_labels, topk,
                    prefix: str) -> None:
    """The columns of the metric plugins the stage was planned with, built with their planned parameters
    (its key holds their versions and parameters)."""
    for identity in stage.metrics.values():
        plugin = instantiate("metric", identity)
        for key, value in plugin.compute(query_codes, db_codes, query_labels, db_labels, topk).items():
            metrics[f"{prefix}{key}"] = value


def _row_identity(stage: EvaluateStage) -> dict[str, Any]:
    clean = stage.clean
    victim = clean.victim
    defended = stage.defended
    return {
        "dataset": clean.dataset["name"],
        "dataset_params": canonical_json(clean.dataset["params"]),
        "method": victim["method"]["name"],
        "backbone": victim["backbone"]["name"],
        "bits": victim["bits"],
        # the method's and backbone's parameters and the training recipe: two recipes are two configurations
        "victim_params": canonical_json({"method": victim["method"]["params"], "backbone": victim["backbone"]["params"],
                                         "train": victim["train"]}),
        "seed": clean.seed,
        "attack": defended.attack.attack["name"] if defended else "(clean)",
        "attack_params": "",
        "poison_rate": 0.0,
        "surrogate": "",
        "target": "",
        "defense": defended.defense["name"] if defended else "none",
        "defense_params": "",
        "clean_fraction": None,
        "hashbench_version": __version__,
        "metric_conventions": METRIC_CONVENTIONS_VERSION,
    }


def _attack_identity(defended: DefendStage) -> dict[str, Any]:
    attack = defended.attack
    return {
        "attack_params": canonical_json(defended.poison.attack_identity()["params"]),
        "poison_rate": defended.poison.poison_rate,
        "surrogate": attack.surrogate_label or ("victim" if attack.surrogate else ""),
        "target": str(attack.target_label),
        "defense_params": canonical_json(defended.defense["params"]),
        "clean_fraction": defended.clean_fraction,
    }
