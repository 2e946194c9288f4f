"""What each stage does. One function per stage kind; all are pure functions of (stage, store, device),
so an in-process executor and a Ray worker run them identically."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch

from . import METRIC_CONVENTIONS_VERSION, __version__
from .api import (
    AttackContext,
    DatasetContext,
    DataFilter,
    DefenseContext,
    InputDetector,
    InputPurifier,
    ModelRepair,
    Poisoning,
    Target,
)
from .data import DatasetSplits, ImageSet, iterate_batches
from .devices import peak_memory_mb, resolve_device
from .errors import ConfigError, PluginError, StageError, StoreError
from .evaluation import auroc, encode_set, encode_tensor, target_rank, threshold_at_fpr, tpr_at_fpr
from .models import HashModel, freeze
from .params import build_params
from .pretraining import pretrain_backbone, pretraining_images
from .plan import Stage, canonical_json
from .plugins import get_registry
from .retrieval import average_precisions, pack_codes, retrieval_curves, unpack_codes
from .seeding import derive_seed, make_generator, seed_everything
from .stealth import stealth_report
from .store import StageWriter, Store
from .training import TrainConfig, build_model, train_hash_model

log = logging.getLogger("hashbench")
MODEL_FILE = "model.pt"
DB_CODES_FILE = "database_codes.pt"
QUERY_CODES_FILE = "query_codes.pt"
BACKBONE_FILE = "backbone.pt"
# Extra files of an evaluate stage, read by the report (which never evaluates anything itself): the
# precision@K / precision-recall curves, and the codes of the triggered queries and poisons.
CURVES_FILE = "curves.pt"
EVAL_CODES_FILE = "attack_codes.pt"


def cache_dir() -> Path:
    return Path(os.environ.get("HASHBENCH_CACHE", Path.home() / ".cache" / "hashbench"))


# ----------------------------------------------------------------------------------- plugin building


def instantiate(kind: str, identity: dict[str, Any]):
    cls = get_registry().get(kind, identity["name"])
    return cls(build_params(cls.Params, identity["params"], f"{kind} '{identity['name']}'"))


@lru_cache(maxsize=8)
def _load_dataset_cached(identity_json: str) -> DatasetSplits:
    import json

    identity = json.loads(identity_json)
    dataset = instantiate("dataset", identity)
    return dataset.load(DatasetContext(cache_dir=cache_dir() / "datasets", seed=0))


def load_dataset(identity: dict[str, Any]) -> DatasetSplits:
    """Datasets are loaded once per process (every stage of a run shares them)."""
    return _load_dataset_cached(canonical_json(identity))


def resolve_target(label: Any, splits: DatasetSplits) -> Target:
    """A class name, an index, or a list of them -> a multi-hot Target, with a clear error otherwise."""
    labels = label if isinstance(label, list) else [label]
    vector = torch.zeros(splits.num_classes)
    for item in labels:
        if isinstance(item, int) and 0 <= item < splits.num_classes:
            vector[item] = 1
        elif isinstance(item, str) and item in splits.class_names:
            vector[splits.class_names.index(item)] = 1
        else:
            shown = ", ".join(splits.class_names[:12]) + (" ..." if splits.num_classes > 12 else "")
            raise ConfigError(f"target label {item!r} is not a class of this dataset; use an index below "
                              f"{splits.num_classes} or one of: {shown}", "[target]")
    if len(labels) > 1 and not splits.multi_label:
        raise ConfigError("a list of target labels needs a multi-label dataset", "[target]")
    return Target(vector, "+".join(map(str, labels)))


def _victim_parts(identity: dict[str, Any]):
    method = instantiate("method", identity["method"])
    backbone = instantiate("backbone", identity["backbone"])
    train = build_params(TrainConfig, identity["train"], "[victim]")
    return method, backbone, identity["bits"], train


def victim_generator(config: dict[str, Any]) -> torch.Generator:
    """The training generator of a victim: a function of its seed and settings only, so the clean and every
    backdoored or retrained victim of one seed draw the same method state (e.g. CSQ's hash centres)."""
    return make_generator(config["seed"], "train", canonical_json(config["victim"]))


def new_model(victim: dict[str, Any], image_size: int, seed: int) -> HashModel:
    """A freshly initialised victim model; the init depends only on the victim config and seed, so a
    clean and a backdoored victim of one seed start from the same weights."""
    _, backbone, bits, _ = _victim_parts(victim)
    torch.manual_seed(derive_seed(seed, "init", canonical_json(victim)))
    return build_model(backbone, bits, image_size)


# ----------------------------------------------------------------------------------- the stage runner


@dataclass
class StageOutcome:
    stage_id: str
    status: str  # "done", "cached", "failed", "skipped"
    seconds: float = 0.0
    error: str | None = None
    # Why a cached copy was not used although one existed (a file failing its checksum, or an input that
    # was rebuilt in this run); executors then recompute the stages downstream of it too.
    rebuilt: str | None = None


class StageRunner:
    """Runs one stage at a time against a store; used by every executor."""

    def __init__(self, results: str | Path, device: str = "auto", log_fn: Callable[[str], None] | None = None):
        self.store = Store(results)
        self.device = resolve_device(device)
        self.say = log_fn or (lambda message: log.info(message))
        self.verified: set[str] = set()  # ids of stages whose files passed their checksums in this run

    def run(self, stage: Stage, force: bool = False) -> StageOutcome:
        """Compute ``stage`` unless a sound copy is cached.

        The store is checked again under the stage's lock, so two runs sharing a results folder never
        compute one stage twice. A cached copy is verified against its checksums the first time this
        runner uses it; one that fails is moved aside and recomputed, and ``rebuilt`` says which file.
        """
        store = self.store
        with store.lock(stage.kind, stage.key):
            exists = store.stage_dir(stage.kind, stage.key).exists()
            problem = None
            if exists and not force:
                problem = self.verify_once(stage.id)
                if problem is None:
                    return StageOutcome(stage.id, "cached")
                self.say(f"{stage.label}: {problem}; recomputing it")
            self._check_inputs(stage)
            if exists:
                store.discard(stage.kind, stage.key)
            started = time.perf_counter()
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            seed_everything(derive_seed(stage.config.get("seed", 0), stage.kind, stage.key))
            with store.open_stage(stage.kind, stage.key, stage.config | {"deps": list(stage.deps), "label": stage.label}) as writer:
                STAGE_FUNCTIONS[stage.kind](self, stage, writer)
                writer.manifest["device"] = str(self.device)
                writer.manifest["peak_memory_mb"] = peak_memory_mb(self.device)
            self.verified.add(stage.id)
            rebuilt = f"its cached copy was rejected: {problem}" if problem else None
            return StageOutcome(stage.id, "done", time.perf_counter() - started, rebuilt=rebuilt)

    def verify_once(self, stage_id: str) -> str | None:
        """What is wrong with a stored stage (None: sound); checksums are read once per runner."""
        if stage_id in self.verified:
            return None
        problem = self.store.verify(*stage_id.split("/"))
        if problem is None:
            self.verified.add(stage_id)
        return problem

    def _check_inputs(self, stage: Stage) -> None:
        """Refuse to compute from an input that is missing or fails its checksums."""
        for dep in stage.deps:
            problem = self.verify_once(dep)
            if problem is not None:
                raise StoreError(f"input {dep} of {stage.id} cannot be used ({problem}); "
                                 "run the benchmark again to recompute it")

    # -- helpers shared by stages
    def dep(self, stage: Stage, kind: str) -> tuple[str, str]:
        for dep_id in stage.deps:
            dep_kind, key = dep_id.split("/")
            if dep_kind == kind:
                return dep_kind, key
        raise StageError(f"stage {stage.id} has no '{kind}' dependency")

    def dep_manifest(self, stage: Stage, kind: str) -> dict[str, Any]:
        manifest = self.store.manifest(*self.dep(stage, kind))
        if manifest is None:
            raise StoreError(f"stage {stage.id} needs {kind} {self.dep(stage, kind)[1]}, which is not computed")
        return manifest

    def load_model(self, kind: str, key: str) -> HashModel:
        config = self.store.manifest(kind, key)["config"]
        splits = load_dataset(config["dataset"])
        model = new_model(config["victim"], splits.image_size, config["seed"])
        model.load_state_dict(self.store.load(kind, key, MODEL_FILE))
        return model.to(self.device).eval()

    def train_victim(self, writer: StageWriter, stage: Stage, train_set: ImageSet, what: str) -> HashModel:
        """A victim trained on ``train_set``, from the pretrained backbone when ``stage`` depends on one."""
        config = stage.config
        method, _, _, train = _victim_parts(config["victim"])
        splits = load_dataset(config["dataset"])
        model = new_model(config["victim"], splits.image_size, config["seed"])
        if any(dep.startswith("pretrain/") for dep in stage.deps):
            model.backbone.load_state_dict(self.store.load(*self.dep(stage, "pretrain"), BACKBONE_FILE))
        report = train_hash_model(
            model, method, train_set, train, self.device, victim_generator(config), what=what,
            on_epoch=lambda epoch, loss: self.say(f"  {what}: epoch {epoch + 1}/{train.epochs} loss {loss:.4f}"),
        )
        writer.manifest["logs"]["epoch_losses"] = report.epoch_losses
        writer.manifest["metrics"]["train_seconds"] = report.seconds
        writer.manifest["metrics"]["train_images_per_second"] = report.images_per_second
        return model

    def save_model(self, writer: StageWriter, model: HashModel, splits: DatasetSplits) -> None:
        """The weights, plus the database and query codes (packed bits), computed once per model: every
        results row of the model reads them instead of encoding the sets again."""
        writer.save(MODEL_FILE, {k: v.cpu() for k, v in model.state_dict().items()})
        # encode as a reloaded model would be (training leaves it channels-last on CUDA), so cached codes
        # and codes encoded at evaluation come from the same kernels
        model = model.to(memory_format=torch.contiguous_format)
        for filename, image_set in ((DB_CODES_FILE, splits.database), (QUERY_CODES_FILE, splits.query)):
            codes = encode_set(model, image_set, self.device)
            writer.save(filename, {"packed": pack_codes(codes), "bits": model.bits})

    def _stored_codes(self, kind: str, key: str, filename: str) -> torch.Tensor:
        saved = self.store.load(kind, key, filename)
        return unpack_codes(saved["packed"], int(saved["bits"]))

    def database_codes(self, kind: str, key: str) -> torch.Tensor:
        return self._stored_codes(kind, key, DB_CODES_FILE)

    def query_codes(self, kind: str, key: str, model: HashModel, splits: DatasetSplits) -> torch.Tensor:
        """The model's codes of the clean query set; encoded here for stages stored before they were cached."""
        if QUERY_CODES_FILE not in self.store.manifest(kind, key).get("files", {}):
            return encode_set(model, splits.query, self.device)
        return self._stored_codes(kind, key, QUERY_CODES_FILE)

    def _surrogate_loader(self, stage_id: str) -> Callable[[], HashModel]:
        """Loads the frozen surrogate on first use, once."""
        kind, key = stage_id.split("/")
        cached: dict[str, HashModel] = {}

        def load() -> HashModel:
            if "model" not in cached:
                cached["model"] = freeze(self.load_model(kind, key))
            return cached["model"]

        return load

    def attack_context(self, attack_config: dict[str, Any], artifact_dir: Path, poison_rate: float = 0.0) -> AttackContext:
        splits = load_dataset(attack_config["dataset"])
        surrogate_id = attack_config.get("surrogate")
        loader = self._surrogate_loader(surrogate_id) if surrogate_id else None

        return AttackContext(
            splits=splits,
            target=resolve_target(attack_config["target"], splits),
            poison_rate=poison_rate,
            device=self.device,
            seed=attack_config["seed"],
            generator=make_generator(attack_config["seed"], "attack", canonical_json(attack_config["attack"]), poison_rate),
            artifact_dir=artifact_dir,
            surrogate_loader=loader,
            log=lambda **metrics: None,
            progress=_progress,
        )


def _progress(iterable, **kwargs):
    from tqdm.auto import tqdm

    return tqdm(iterable, leave=False, disable=os.environ.get("HASHBENCH_QUIET") == "1", **kwargs)


# ----------------------------------------------------------------------------------- stage kinds


def run_pretrain(runner: StageRunner, stage: Stage, writer: StageWriter) -> None:
    config = stage.config
    splits = load_dataset(config["dataset"])
    recipe = TrainConfig(**config["pretrain"])
    runner.say(f"{stage.label}: {recipe.pretrain_epochs} epochs on {len(pretraining_images(splits, recipe.pretrain_on))} "
               f"{recipe.pretrain_on} images")
    weights, report = pretrain_backbone(
        instantiate("backbone", config["backbone"]), splits, recipe, runner.device,
        make_generator(config["seed"], "pretrain", canonical_json(config)),
    )
    writer.save(BACKBONE_FILE, weights)
    writer.manifest["logs"]["epoch_losses"] = report.epoch_losses
    writer.manifest["metrics"]["train_seconds"] = report.seconds
    writer.manifest["metrics"]["train_images_per_second"] = report.images_per_second


def run_clean_victim(runner: StageRunner, stage: Stage, writer: StageWriter) -> None:
    splits = load_dataset(stage.config["dataset"])
    model = runner.train_victim(writer, stage, splits.train, f"clean victim ({stage.label})")
    runner.save_model(writer, model, splits)


def _query_trigger_indices(splits: DatasetSplits, target: Target) -> torch.Tensor:
    """Queries whose labels do not contain the target: the ones a trigger should redirect."""
    return torch.nonzero(~target.overlaps(splits.query.labels)).flatten()


def _logger(writer: StageWriter):
    def record(**metrics: float) -> None:
        for name, value in metrics.items():
            writer.manifest["logs"].setdefault(name, []).append(float(value))

    return record


def run_attack(runner: StageRunner, stage: Stage, writer: StageWriter) -> None:
    attack = instantiate("attack", stage.config["attack"])
    ctx = runner.attack_context(stage.config, writer.dir)
    ctx.log = _logger(writer)
    started = time.perf_counter()
    attack.prepare(ctx)
    writer.manifest["metrics"]["prepare_seconds"] = time.perf_counter() - started
    state = {k: v.detach().cpu() for k, v in attack.state_dict().items()}
    writer.save("attack_state.pt", state)
    indices = _query_trigger_indices(ctx.splits, ctx.target)
    clean = ctx.splits.query.images(indices)
    triggered = _trigger_in_batches(attack, clean, ctx)
    writer.save("triggered_queries.pt", {"indices": indices, "images": triggered})
    report = stealth_report(clean, triggered, runner.device)
    writer.manifest["metrics"].update({f"query_{k}": v for k, v in report.items()})


def _trigger_in_batches(attack, images: torch.Tensor, ctx: AttackContext, batch_size: int = 256) -> torch.Tensor:
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        result = attack.trigger(batch, ctx)
        if result.dtype != torch.uint8 or result.shape != batch.shape:
            raise PluginError(
                f"attack '{attack.name}'.trigger must return uint8 images shaped {tuple(batch.shape)}; "
                f"got {result.dtype} {tuple(result.shape)}"
            )
        out.append(result.cpu())
    return torch.cat(out) if out else images.clone()


def _restore_attack(runner: StageRunner, attack_key: str, artifact_dir: Path, poison_rate: float = 0.0):
    config = runner.store.manifest("attack", attack_key)["config"]
    attack = instantiate("attack", config["attack"])
    attack.load_state_dict(runner.store.load("attack", attack_key, "attack_state.pt"))
    return attack, runner.attack_context(config, artifact_dir, poison_rate), config


def validate_poisoning(attack, poisoning: Poisoning, train: ImageSet) -> None:
    """Enforce the poison contract so a buggy plugin fails loudly instead of skewing a leaderboard."""
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


def validate_label_scores(plugin: str, scores: dict[int, float] | None, num_classes: int) -> None:
    """Enforce the ``RepairResult.label_scores`` contract: a wrong score would silently give a wrong
    ``flagged_target_rank``."""
    if scores is not None and not (isinstance(scores, dict) and all(
            isinstance(c, int) and 0 <= c < num_classes and isinstance(v, float) and math.isfinite(v)
            for c, v in scores.items())):
        raise PluginError(f"{plugin}: label_scores must map class indices below {num_classes} to finite "
                          f"floats; got {scores!r}")


def run_poison(runner: StageRunner, stage: Stage, writer: StageWriter) -> None:
    _, attack_key = runner.dep(stage, "attack")
    attack, ctx, _ = _restore_attack(runner, attack_key, writer.dir, stage.config["poison_rate"])
    ctx.log = _logger(writer)
    poisoning = attack.poison(ctx)
    validate_poisoning(attack, poisoning, ctx.splits.train)
    writer.save("poisoning.pt", {"indices": poisoning.indices, "images": poisoning.images, "labels": poisoning.labels.float()})
    originals = ctx.splits.train.images(poisoning.indices)
    report = stealth_report(originals, poisoning.images, runner.device)
    writer.manifest["metrics"].update({f"poison_{k}": v for k, v in report.items()})
    writer.manifest["metrics"]["poison_count"] = len(poisoning.indices)
    target_share = float(ctx.target.overlaps(poisoning.labels.float()).float().mean()) if len(poisoning.indices) else 0.0
    writer.manifest["metrics"]["poison_target_label_share"] = target_share


def poisoned_train_set(runner: StageRunner, poison_key: str, splits: DatasetSplits) -> tuple[ImageSet, torch.Tensor]:
    saved = runner.store.load("poison", poison_key, "poisoning.pt")
    train = splits.train.with_replacements(saved["indices"], saved["images"], saved["labels"])
    return train, saved["indices"]


def run_victim(runner: StageRunner, stage: Stage, writer: StageWriter) -> None:
    splits = load_dataset(stage.config["dataset"])
    _, poison_key = runner.dep(stage, "poison")
    train, _ = poisoned_train_set(runner, poison_key, splits)
    model = runner.train_victim(writer, stage, train, f"backdoored victim ({stage.label})")
    runner.save_model(writer, model, splits)


def _clean_subset(splits: DatasetSplits, poisoned: torch.Tensor, fraction: float, seed: int) -> ImageSet:
    """The defender's clean data: ``fraction`` of the training set, drawn from samples that were not poisoned."""
    mask = torch.ones(len(splits.train), dtype=torch.bool)
    mask[poisoned] = False
    candidates = torch.nonzero(mask).flatten()
    count = max(1, min(len(candidates), int(round(fraction * len(splits.train)))))
    pick = torch.randperm(len(candidates), generator=make_generator(seed, "clean_subset", fraction))[:count]
    return splits.train.subset(candidates[pick].sort().values)


def run_defend(runner: StageRunner, stage: Stage, writer: StageWriter) -> None:
    config = stage.config
    splits = load_dataset(config["dataset"])
    defense = instantiate("defense", config["defense"])
    _, victim_key = runner.dep(stage, "victim")
    _, poison_key = runner.dep(stage, "poison")
    _, attack_key = runner.dep(stage, "attack")
    train, poisoned = poisoned_train_set(runner, poison_key, splits)
    method, _, _, train_config = _victim_parts(config["victim"])

    def train_fn(model: HashModel, image_set: ImageSet, epochs: int | None = None, lr: float | None = None, **overrides):
        cfg = replace(train_config, **{k: v for k, v in {"epochs": epochs, "lr": lr, **overrides}.items() if v is not None})
        fresh_method = instantiate("method", config["victim"]["method"])
        # The victim's own generator: methods draw their state from it in setup (CSQ's random hash centres),
        # so a repair fine-tunes towards the same targets the victim was trained with.
        generator = victim_generator(config)
        return train_hash_model(model, fresh_method, image_set, cfg, runner.device, generator, what=f"defense {defense.name}")

    ctx = DefenseContext(
        model=copy.deepcopy(runner.load_model("victim", victim_key)),
        clean_set=_clean_subset(splits, poisoned, config["clean_fraction"], config["seed"]),
        train_set=train,
        num_classes=splits.num_classes,
        device=runner.device,
        seed=config["seed"],
        generator=make_generator(config["seed"], "defense", defense.name),
        artifact_dir=writer.dir,
        train=train_fn,
        log=_logger(writer),
        progress=_progress,
    )
    metrics = writer.manifest["metrics"]
    metrics["defense_clean_samples"] = len(ctx.clean_set)
    started = time.perf_counter()
    if isinstance(defense, InputPurifier):
        # purifiers act at evaluation time; purify the queries here once so their cost is measured too
        for images in _batches(splits.query):
            defense.purify(images)
        metrics["defense_images"] = len(splits.query)
    elif isinstance(defense, InputDetector):
        defense.fit(ctx)
        clean_scores = _scores(defense, _batches(ctx.clean_set), ctx)
        query_scores = _scores(defense, _batches(splits.query), ctx)
        triggered = runner.store.load("attack", attack_key, "triggered_queries.pt")
        triggered_scores = _scores(defense, triggered["images"].split(SCORE_BATCH), ctx)
        threshold = threshold_at_fpr(clean_scores, 0.05)
        writer.save("detection.pt", {"threshold": torch.tensor(threshold), "query_scores": query_scores,
                                     "triggered_scores": triggered_scores})
        untriggered = query_scores[triggered["indices"]]
        metrics.update(
            detection_auroc=auroc(untriggered, triggered_scores),
            detection_tpr_at_5fpr=tpr_at_fpr(untriggered, triggered_scores, 0.05),
            detection_clean_rejection=float((query_scores > threshold).double().mean()),
            detection_triggered_rejection=float((triggered_scores > threshold).double().mean()),
        )
    elif isinstance(defense, ModelRepair):
        result = defense.repair(ctx)
        metrics.update(result.report)
        writer.manifest["report_keys"] = sorted(result.report)  # run_evaluate copies these into the row
        validate_label_scores(f"defense '{defense.name}'", result.label_scores, splits.num_classes)
        if result.flagged_labels is not None or result.label_scores:
            target = resolve_target(runner.store.manifest("attack", attack_key)["config"]["target"], splits)
            if result.flagged_labels is not None:
                metrics["flagged_labels"] = list(result.flagged_labels)
                metrics["flagged_target"] = float(any(c in target.classes for c in result.flagged_labels))
            if result.label_scores:
                metrics["flagged_target_rank"] = target_rank(result.label_scores, target.classes)
        writer.manifest["has_model"] = True
        runner.save_model(writer, result.model, splits)
    elif isinstance(defense, DataFilter):
        result = defense.filter(ctx)
        if result.scores.shape != (len(train),) or result.keep.shape != (len(train),) or result.keep.dtype != torch.bool:
            raise PluginError(f"defense '{defense.name}'.filter must return one score and one bool keep flag per training sample")
        result = replace(result, scores=result.scores.detach().double().cpu(), keep=result.keep.cpu())
        filter_seconds = time.perf_counter() - started
        is_poison = torch.zeros(len(train), dtype=torch.bool)
        is_poison[poisoned] = True
        removed = ~result.keep
        metrics.update(result.report)
        writer.manifest["report_keys"] = sorted(result.report)
        metrics.update(
            defense_filter_seconds=filter_seconds,
            detection_auroc=auroc(result.scores[~is_poison], result.scores[is_poison]),
            detection_tpr_at_5fpr=tpr_at_fpr(result.scores[~is_poison], result.scores[is_poison], 0.05),
            removed_poison_fraction=float(removed[is_poison].double().mean()) if len(poisoned) else 0.0,
            removed_clean_fraction=float(removed[~is_poison].double().mean()),
        )
        kept = train.subset(torch.nonzero(result.keep).flatten())
        model = runner.train_victim(writer, stage, kept, f"retrained victim ({defense.name})")
        writer.manifest["has_model"] = True
        runner.save_model(writer, model, splits)
    metrics["defense_seconds"] = time.perf_counter() - started


SCORE_BATCH = 256


def _batches(image_set: ImageSet):
    """The uint8 image batches of a set; a file-backed set is decoded on DataLoader workers, never held whole."""
    workers = 0 if image_set.in_memory else min(4, os.cpu_count() or 1)
    return (images for images, _, _ in iterate_batches(image_set, SCORE_BATCH, num_workers=workers))


def _scores(defense: InputDetector, batches, ctx: DefenseContext) -> torch.Tensor:
    out = [defense.score(images, ctx).detach().float().cpu() for images in batches]
    return torch.cat(out) if out else torch.zeros(0)


def run_evaluate(runner: StageRunner, stage: Stage, writer: StageWriter) -> None:
    """One results row: the metrics of docs/metrics.md for one (victim, attack, defense)."""
    store = runner.store
    _, clean_key = runner.dep(stage, "clean_victim")
    clean_config = store.manifest("clean_victim", clean_key)["config"]
    splits = load_dataset(clean_config["dataset"])
    topk = splits.topk
    db_labels = splits.database.labels
    clean_model = runner.load_model("clean_victim", clean_key)
    clean_db = runner.database_codes("clean_victim", clean_key)
    clean_query_codes = runner.query_codes("clean_victim", clean_key, clean_model, splits)
    row: dict[str, Any] = _row_identity(clean_config, stage.config["row"])
    m = writer.manifest["metrics"]
    m["clean_map_clean_model"] = _map(clean_query_codes, clean_db, splits.query.labels, db_labels, topk)
    _metric_plugins(m, clean_query_codes, clean_db, splits.query.labels, db_labels, topk, "clean_model_")
    if stage.config["row"]["attack"] is None:
        m["clean_map"] = m["clean_map_clean_model"]
        # the evaluated model is the clean one, so the metric plugins' columns are its clean_model_ ones
        m.update({k.removeprefix("clean_model_"): v for k, v in list(m.items()) if k.startswith("clean_model_")})
        writer.save(CURVES_FILE, {"clean": retrieval_curves(clean_query_codes, clean_db, splits.query.labels, db_labels)})
        writer.manifest["row"] = row
        return

    _, attack_key = runner.dep(stage, "attack")
    _, poison_key = runner.dep(stage, "poison")
    _, victim_key = runner.dep(stage, "victim")
    _, defend_key = runner.dep(stage, "defend")
    attack_manifest = store.manifest("attack", attack_key)
    poison_manifest = store.manifest("poison", poison_key)
    defend_manifest = store.manifest("defend", defend_key)
    row.update(_attack_identity(attack_manifest["config"], poison_manifest["config"], defend_manifest["config"]))
    target = resolve_target(attack_manifest["config"]["target"], splits)

    model_kind, model_key = ("defend", defend_key) if defend_manifest.get("has_model") else ("victim", victim_key)
    model = runner.load_model(model_kind, model_key)
    db_codes = runner.database_codes(model_kind, model_key)
    defense = instantiate("defense", defend_manifest["config"]["defense"])
    purify = defense.purify if isinstance(defense, InputPurifier) else None

    triggered = store.load("attack", attack_key, "triggered_queries.pt")
    trig_idx, trig_images = triggered["indices"], triggered["images"]
    query_codes = (encode_set(model, splits.query, runner.device, transform=purify) if purify
                   else runner.query_codes(model_kind, model_key, model, splits))
    trig_codes = encode_tensor(model, purify(trig_images) if purify else trig_images, runner.device)
    untrig_codes = query_codes[trig_idx]
    target_rows = target.labels.reshape(1, -1).expand(len(trig_idx), -1)
    true_rows = splits.query.labels[trig_idx]

    keep_trig = torch.ones(len(trig_idx), dtype=torch.bool)
    keep_query = torch.ones(len(splits.query), dtype=torch.bool)
    if isinstance(defense, InputDetector):
        detection = store.load("defend", defend_key, "detection.pt")
        threshold = float(detection["threshold"])
        keep_trig = detection["triggered_scores"] <= threshold
        keep_query = detection["query_scores"] <= threshold
        m["passed_triggered_fraction"] = float(keep_trig.double().mean()) if len(keep_trig) else 0.0

    m["t_map"] = _map(trig_codes[keep_trig], db_codes, target_rows[keep_trig], db_labels, topk)
    m["t_map_untriggered"] = _map(untrig_codes, db_codes, target_rows, db_labels, topk)
    clean_trig_codes = encode_tensor(clean_model, trig_images, runner.device)
    m["t_map_clean_model"] = _map(clean_trig_codes, clean_db, target_rows, db_labels, topk)
    m["map_triggered"] = _map(trig_codes[keep_trig], db_codes, true_rows[keep_trig], db_labels, topk)
    m["clean_map"] = _map(query_codes[keep_query], db_codes, splits.query.labels[keep_query], db_labels, topk)
    m["delta_map"] = m["clean_map"] - m["clean_map_clean_model"]
    _metric_plugins(m, query_codes, db_codes, splits.query.labels, db_labels, topk, "")
    writer.save(CURVES_FILE, {
        "clean": retrieval_curves(query_codes[keep_query], db_codes, splits.query.labels[keep_query], db_labels),
        "triggered": retrieval_curves(trig_codes[keep_trig], db_codes, target_rows[keep_trig], db_labels),
        "triggered_clean_model": retrieval_curves(clean_trig_codes, clean_db, target_rows, db_labels),
    })
    poisons = store.load("poison", poison_key, "poisoning.pt")
    writer.save(EVAL_CODES_FILE, {"bits": model.bits, "poison_indices": poisons["indices"], **{
        name: pack_codes(codes) for name, codes in (
            ("triggered", trig_codes), ("triggered_clean_model", clean_trig_codes),
            ("poisons", encode_tensor(model, poisons["images"], runner.device)),
            ("poisons_clean_model", encode_tensor(clean_model, poisons["images"], runner.device)))}})
    for key in ("poison_psnr", "poison_ssim", "poison_lpips", "poison_linf", "poison_l2", "poison_count"):
        m[key] = poison_manifest["metrics"].get(key)
    # the rate the poisons really are (poison_rate rounded to whole images), shown beside poison_rate
    m["poison_rate_actual"] = m["poison_count"] / len(splits.train) if m["poison_count"] is not None else None
    for key in ("query_psnr", "query_ssim", "query_lpips", "query_linf", "query_l2"):
        m[key] = attack_manifest["metrics"].get(key)
    for key, value in defend_manifest["metrics"].items():
        if key.startswith(("detection_", "removed_", "flagged_", "defense_")) or key in defend_manifest.get("report_keys", []):
            m[key] = value
    m["defense_cost_seconds"] = defend_manifest.get("seconds")
    m["attack_cost_seconds"] = attack_manifest.get("seconds")
    m["victim_train_seconds"] = store.manifest("victim", victim_key).get("seconds")
    writer.manifest["row"] = row


def _map(query_codes, db_codes, query_labels, db_labels, topk) -> float:
    if len(query_codes) == 0:
        return float("nan")
    return float(average_precisions(query_codes, db_codes, query_labels, db_labels, topk).mean())


def _metric_plugins(metrics: dict, query_codes, db_codes, query_labels, db_labels, topk, prefix: str) -> None:
    registry = get_registry()
    for name in registry.names("metric"):
        plugin = registry.get("metric", name)()
        for key, value in plugin.compute(query_codes, db_codes, query_labels, db_labels, topk).items():
            metrics[f"{prefix}{key}"] = value


def _row_identity(victim_config: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    victim = victim_config["victim"]
    return {
        "dataset": victim_config["dataset"]["name"],
        "dataset_params": canonical_json(victim_config["dataset"]["params"]),
        "method": victim["method"]["name"],
        "backbone": victim["backbone"]["name"],
        "bits": victim["bits"],
        # the method's and backbone's parameters and the training recipe: two recipes are two configurations
        "victim_params": canonical_json({"method": victim["method"]["params"], "backbone": victim["backbone"]["params"],
                                         "train": victim["train"]}),
        "seed": victim_config["seed"],
        "attack": row["attack"] or "(clean)",
        "attack_params": "",
        "poison_rate": 0.0,
        "surrogate": "",
        "target": "",
        "defense": row["defense"] or "none",
        "defense_params": "",
        "clean_fraction": None,
        "hashbench_version": __version__,
        "metric_conventions": METRIC_CONVENTIONS_VERSION,
    }


def _attack_identity(attack_config: dict, poison_config: dict, defend_config: dict) -> dict[str, Any]:
    return {
        "attack_params": canonical_json(attack_config["attack"]["params"]),
        "poison_rate": poison_config["poison_rate"],
        "surrogate": attack_config.get("surrogate_label") or ("victim" if attack_config.get("surrogate") else ""),
        "target": str(attack_config["target"]),
        "defense_params": canonical_json(defend_config["defense"]["params"]),
        "clean_fraction": defend_config["clean_fraction"],
    }


STAGE_FUNCTIONS: dict[str, Callable[[StageRunner, Stage, StageWriter], None]] = {
    "pretrain": run_pretrain,
    "clean_victim": run_clean_victim,
    "attack": run_attack,
    "poison": run_poison,
    "victim": run_victim,
    "defend": run_defend,
    "evaluate": run_evaluate,
}
