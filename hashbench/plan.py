"""A benchmark spec -> a DAG of stages, each with a content key.

A stage's key hashes its kind, its canonical config (plugin names, versions, every parameter), the keys
of the stages it depends on and hashbench's version, so a stage is recomputed exactly when something
it depends on changes, and adding one defense to a file plans only that defense's stages.

Stages are plain data (kind, key, config, deps): any executor, in-process or on a Ray worker, runs one
with :func:`hashbench.runner.run_stage`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from .config import AttackSpec, BenchmarkSpec, DefenseSpec, PluginSpec, VictimSpec
from .plugins import Registry, get_registry

STAGE_KINDS = ("pretrain", "clean_victim", "attack", "poison", "victim", "defend", "evaluate")
# Stages that train a model: executors give them a whole GPU.
TRAINING_KINDS = {"pretrain", "clean_victim", "attack", "victim", "defend"}


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stage_key(kind: str, config: dict[str, Any], deps: Iterable[str]) -> str:
    from . import __version__

    text = canonical_json({"kind": kind, "config": config, "deps": sorted(deps), "hashbench": __version__})
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Stage:
    kind: str
    key: str
    config: dict[str, Any] = field(hash=False, compare=False)
    deps: tuple[str, ...] = ()  # ids ("kind/key") of the stages this one reads
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.key}"


@dataclass
class Plan:
    spec: BenchmarkSpec
    stages: dict[str, Stage] = field(default_factory=dict)  # id -> stage, in topological order

    def add(self, kind: str, config: dict[str, Any], deps: list[Stage], label: str) -> Stage:
        dep_ids = tuple(d.id for d in deps)
        stage = Stage(kind, stage_key(kind, config, dep_ids), config, dep_ids, label)
        self.stages.setdefault(stage.id, stage)
        return self.stages[stage.id]

    def ordered(self) -> list[Stage]:
        return list(self.stages.values())

    def evaluations(self) -> list[Stage]:
        return [s for s in self.stages.values() if s.kind == "evaluate"]

    def dependents(self, stage_id: str) -> set[str]:
        """Every stage that (transitively) reads ``stage_id``."""
        out: set[str] = set()
        frontier = {stage_id}
        while frontier:
            frontier = {s.id for s in self.stages.values() if set(s.deps) & frontier} - out
            out |= frontier
        return out


def _victim_config(dataset: PluginSpec, victim: VictimSpec, seed: int) -> dict[str, Any]:
    return {"dataset": dataset.identity(), "victim": victim.identity(), "seed": seed}


def _pretraining(plan: Plan, dataset: PluginSpec, victim: VictimSpec) -> list[Stage]:
    """The pretrain stage a victim starts from ([] when it trains from scratch). Its key holds only what
    pretraining reads (its own seed, not the benchmark's), so every victim of one dataset and backbone, of
    every method, code length and seed, shares it."""
    recipe = victim.train.pretraining()
    if recipe is None:
        return []
    config = {"dataset": dataset.identity(), "backbone": victim.backbone.identity(), "pretrain": recipe,
              "seed": recipe["pretrain_seed"]}
    return [plan.add("pretrain", config, [], f"pretrain {victim.backbone.name} on {dataset.name}")]


def _evaluate_config(registry: Registry, row: dict[str, Any], seed: int) -> dict[str, Any]:
    """An evaluate stage's config. The installed metric plugins and their versions are part of it, so that
    installing (or upgrading) one recomputes the evaluations, and only them, and every row gets its
    column; with none installed the key is what it was before metric plugins were keyed, so results
    computed then stay cached."""
    config: dict[str, Any] = {"row": row, "seed": seed}
    metrics = {info.name: info.cls.version for info in registry.infos("metric")}
    if metrics:
        config["metrics"] = metrics
    return config


def build_plan(spec: BenchmarkSpec, registry: Registry | None = None) -> Plan:
    registry = registry or get_registry()
    plan = Plan(spec)
    target = spec.target.label
    for seed in spec.settings.seeds:
        for dataset in spec.datasets:
            for victim in spec.victims:
                where = f"{dataset.name} {victim.label()} seed={seed}"
                pretrained = _pretraining(plan, dataset, victim)
                clean = plan.add("clean_victim", _victim_config(dataset, victim, seed), pretrained, f"clean victim {where}")
                plan.add(
                    "evaluate",
                    _evaluate_config(registry, {"attack": None, "defense": None}, seed),
                    [clean],
                    f"evaluate clean {where}",
                )
                for attack in spec.attacks:
                    _plan_attack(plan, registry, dataset, victim, attack, spec.defenses, clean, pretrained, target, seed, where)
    return plan


def _plan_attack(
    plan: Plan,
    registry: Registry,
    dataset: PluginSpec,
    victim: VictimSpec,
    attack: AttackSpec,
    defenses: list[DefenseSpec],
    clean: Stage,
    pretrained: list[Stage],
    target: Any,
    seed: int,
    where: str,
) -> None:
    attack_cls = registry.get("attack", attack.plugin.name)
    deps: list[Stage] = []
    surrogate_id = None
    if attack_cls.threat_model.needs_surrogate:
        if attack.surrogate is None:
            surrogate = clean
        else:
            surrogate = plan.add(
                "clean_victim",
                _victim_config(dataset, attack.surrogate, seed),
                _pretraining(plan, dataset, attack.surrogate),
                f"surrogate {dataset.name} {attack.surrogate.label()} seed={seed}",
            )
        deps.append(surrogate)
        surrogate_id = surrogate.id
    attack_label = f"{attack.plugin.name} on {dataset.name} seed={seed}"
    prepared = plan.add(
        "attack",
        {
            "attack": attack.plugin.identity(),
            "dataset": dataset.identity(),
            "target": target,
            "seed": seed,
            "surrogate": surrogate_id,
            "surrogate_label": (attack.surrogate.label() if attack.surrogate else None),
        },
        deps,
        f"attack {attack_label}" + (f" (surrogate {victim.label() if attack.surrogate is None else attack.surrogate.label()})" if surrogate_id else ""),
    )
    poisoned = plan.add(
        "poison", {"poison_rate": attack.poison_rate, "seed": seed}, [prepared], f"poison {attack_label} rate={attack.poison_rate}"
    )
    backdoored = plan.add(
        "victim",
        _victim_config(dataset, victim, seed),
        [poisoned, *pretrained],
        f"backdoored victim {where} {attack.plugin.name}@{attack.poison_rate}",
    )
    for defense in defenses:
        defended = plan.add(
            "defend",
            {"defense": defense.plugin.identity(), "clean_fraction": defense.clean_fraction, "seed": seed,
             "victim": victim.identity(), "dataset": dataset.identity()},
            [backdoored, poisoned, prepared, *pretrained],  # a data filter retrains from the pretrained backbone
            f"defend {defense.plugin.name} {where} {attack.plugin.name}",
        )
        plan.add(
            "evaluate",
            _evaluate_config(registry, {"attack": attack.plugin.name, "defense": defense.plugin.name}, seed),
            [clean, prepared, poisoned, backdoored, defended],
            f"evaluate {where} {attack.plugin.name} x {defense.plugin.name}",
        )
