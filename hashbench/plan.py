"""A benchmark spec -> a DAG of typed stage records (:mod:`hashbench.records`), each with a content key.

A stage's key hashes its kind, its identity (plugin names, versions, every parameter), the keys of the
stages it depends on and hashbench's version, so a stage is recomputed exactly when something it depends
on changes, and adding one defense to a file plans only that defense's stages.

The inputs a stage body needs are resolved here, once: the records it reads, each defense's role, the
installed metric plugins, and (when given, see :func:`hashbench.benchmark.plan_run`) the target's classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, TypeVar

from .config import AttackSpec, BenchmarkSpec, DefenseSpec, PluginSpec, VictimSpec
from .plugins import Registry, get_registry
from .records import (
    AttackStage,
    CleanVictimStage,
    DefendStage,
    EvaluateStage,
    PoisonStage,
    PretrainStage,
    Stage,
    VictimStage,
    canonical_json,
)

if TYPE_CHECKING:
    from .api import Target

S = TypeVar("S", bound=Stage)


@dataclass
class Plan:
    spec: BenchmarkSpec
    stages: dict[str, Stage] = field(default_factory=dict)  # id -> stage, in topological order

    def add(self, stage: S) -> S:
        """``stage``, or the planned stage with its id (one stage shared by several rows)."""
        return self.stages.setdefault(stage.id, stage)  # type: ignore[return-value]

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


def _pretraining(plan: Plan, dataset: PluginSpec, victim: VictimSpec) -> PretrainStage | None:
    """The pretrain stage a victim starts from (None when it trains from scratch). Its key holds only what
    pretraining reads (its own seed, not the benchmark's), so every victim of one dataset and backbone, of
    every method, code length and seed, shares it."""
    recipe = victim.train.pretraining()
    if recipe is None:
        return None
    return plan.add(PretrainStage(f"pretrain {victim.backbone.name} on {dataset.name}", recipe["pretrain_seed"],
                                  dataset.identity(), victim.backbone.identity(), recipe))


def _clean_victim(plan: Plan, dataset: PluginSpec, victim: VictimSpec, seed: int, label: str) -> CleanVictimStage:
    return plan.add(CleanVictimStage(label, seed, dataset.identity(), victim.identity(), _pretraining(plan, dataset, victim)))


def target_key(dataset: PluginSpec) -> str:
    """How ``build_plan``'s ``targets`` name a dataset's resolved target."""
    return canonical_json(dataset.identity())


def build_plan(spec: BenchmarkSpec, registry: Registry | None = None, targets: Mapping[str, Target] | None = None) -> Plan:
    """The plan of ``spec``. ``targets`` (by :func:`target_key`) are the target resolved against each
    dataset; without them the plan lists every stage and key but cannot run an attack."""
    registry = registry or get_registry()
    plan = Plan(spec)
    # the installed metric plugins, with the file's parameters or their defaults: part of every evaluate
    # stage's identity
    metrics = {info.name: PluginSpec("metric", info.name, spec.metrics.get(info.name, info.cls.Params()),
                                     info.cls.version).identity() for info in registry.infos("metric")}
    for seed in spec.settings.seeds:
        for dataset in spec.datasets:
            target = (targets or {}).get(target_key(dataset))
            for victim in spec.victims:
                where = f"{dataset.name} {victim.label()} seed={seed}"
                clean = _clean_victim(plan, dataset, victim, seed, f"clean victim {where}")
                plan.add(EvaluateStage(f"evaluate clean {where}", seed, clean, None, metrics))
                for attack in spec.attacks:
                    _plan_attack(plan, registry, dataset, victim, attack, spec.defenses, clean, target, seed, where,
                                 spec.target.label, metrics)
    return plan


def _plan_attack(
    plan: Plan,
    registry: Registry,
    dataset: PluginSpec,
    victim: VictimSpec,
    attack: AttackSpec,
    defenses: list[DefenseSpec],
    clean: CleanVictimStage,
    target: Target | None,
    seed: int,
    where: str,
    target_label: object,
    metrics: dict[str, dict],
) -> None:
    attack_class = registry.get("attack", attack.plugin.name)
    prepare_identity, poison_params = _split_poison_params(attack.plugin.identity(), attack_class.poison_params)
    surrogate = None
    if attack_class.threat_model.needs_surrogate:
        surrogate = clean if attack.surrogate is None else _clean_victim(
            plan, dataset, attack.surrogate, seed, f"surrogate {dataset.name} {attack.surrogate.label()} seed={seed}")
    attack_label = f"{attack.plugin.name} on {dataset.name} seed={seed}"
    surrogate_note = ""
    if surrogate is not None:
        surrogate_note = f" (surrogate {victim.label() if attack.surrogate is None else attack.surrogate.label()})"
    prepared = plan.add(AttackStage(
        f"attack {attack_label}{surrogate_note}", seed, prepare_identity, dataset.identity(), target_label,
        surrogate, attack.surrogate.label() if attack.surrogate else None, target))
    poisoned = plan.add(PoisonStage(f"poison {attack_label} rate={attack.poison_rate}", seed, attack.poison_rate,
                                    prepared, poison_params))
    backdoored = plan.add(VictimStage(
        f"backdoored victim {where} {attack.plugin.name}@{attack.poison_rate}", seed, dataset.identity(),
        victim.identity(), poisoned, clean.pretrain))
    for defense in defenses:
        role = registry.get("defense", defense.plugin.name).role
        defended = plan.add(DefendStage(
            f"defend {defense.plugin.name} {where} {attack.plugin.name}", seed, defense.plugin.identity(), role,
            defense.clean_fraction, backdoored))
        plan.add(EvaluateStage(f"evaluate {where} {attack.plugin.name} x {defense.plugin.name}", seed, clean,
                               defended, metrics))


def _split_poison_params(identity: dict[str, Any], names: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An attack's identity without its poison-only parameters, and those parameters: one prepared attack
    (one trained generator) then serves every poison stage that differs only in them."""
    params = identity["params"]
    poison_only = {name: params[name] for name in names}
    return identity | {"params": {k: v for k, v in params.items() if k not in poison_only}}, poison_only
