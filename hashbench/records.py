"""The typed stage records a plan is made of, and their keys.

A record holds everything its stage body reads, resolved once at planning: plugin identities, the seed,
the records of the stages it depends on, and values resolved from them (the target's classes, a
defense's role, the installed metric plugins). Its key hashes only its *identity* (:meth:`Stage.identity`):
what determines the stage. Values resolved from the identity (a target's class index from its name, a
defense's role from its name) add no information and stay out of it, so stages stored before the
records existed keep their keys (docs/architecture.md, "Stage keys").

Records are plain picklable data: any executor, in-process or on a Ray worker, runs one with
:meth:`hashbench.runner.StageRunner.run`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

from .errors import StageError

if TYPE_CHECKING:
    from .api import Target

STAGE_KINDS = ("pretrain", "clean_victim", "attack", "poison", "victim", "defend", "evaluate")
# Stages that train a model: executors give them a whole GPU.
TRAINING_KINDS = {"pretrain", "clean_victim", "attack", "victim", "defend"}


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stage_key(kind: str, identity: dict[str, Any], deps: Iterable[str]) -> str:
    from . import __version__

    text = canonical_json({"kind": kind, "config": identity, "deps": sorted(deps), "hashbench": __version__})
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True, eq=False)
class Stage:
    """One stage of the graph; two records with one id are the same stage."""

    kind: ClassVar[str]
    label: str
    seed: int

    def identity(self) -> dict[str, Any]:
        """What determines the stage's output, apart from its inputs: hashed into its key and written as
        ``config`` into its manifest."""
        raise NotImplementedError

    def inputs(self) -> list[Stage]:
        """The stages whose files this one reads."""
        return []

    @cached_property
    def config(self) -> dict[str, Any]:
        """The identity, computed once: what the key hashes and the manifest records as ``config``."""
        return self.identity()

    @cached_property
    def deps(self) -> tuple[str, ...]:
        return tuple(stage.id for stage in self.inputs())

    @cached_property
    def key(self) -> str:
        return stage_key(self.kind, self.config, self.deps)

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.key}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stage) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


@dataclass(frozen=True, eq=False)
class PretrainStage(Stage):
    """A backbone pretrained as a classifier. ``seed`` is the recipe's pretrain_seed, not the benchmark's."""

    kind: ClassVar[str] = "pretrain"
    dataset: dict[str, Any]
    backbone: dict[str, Any]
    recipe: dict[str, Any]

    def identity(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "backbone": self.backbone, "pretrain": self.recipe, "seed": self.seed}


@dataclass(frozen=True, eq=False)
class CleanVictimStage(Stage):
    """A victim trained on clean data (also a surrogate), from ``pretrain``'s backbone when there is one."""

    kind: ClassVar[str] = "clean_victim"
    dataset: dict[str, Any]
    victim: dict[str, Any]
    pretrain: PretrainStage | None

    def identity(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "victim": self.victim, "seed": self.seed}

    def inputs(self) -> list[Stage]:
        return [self.pretrain] if self.pretrain else []


@dataclass(frozen=True, eq=False)
class AttackStage(Stage):
    """``Attack.prepare`` and the triggered queries. ``target`` is the target resolved against the dataset
    (None when the plan was built without resolving it, as `hashbench plan` does: such a plan lists keys
    but cannot run attacks)."""

    kind: ClassVar[str] = "attack"
    attack: dict[str, Any]
    dataset: dict[str, Any]
    target_label: Any  # as the benchmark file gives it
    surrogate: CleanVictimStage | None
    surrogate_label: str | None  # the surrogate's victim label when it is not the victim itself
    target: Target | None = None

    def identity(self) -> dict[str, Any]:
        return {"attack": self.attack, "dataset": self.dataset, "target": self.target_label, "seed": self.seed,
                "surrogate": self.surrogate.id if self.surrogate else None, "surrogate_label": self.surrogate_label}

    def inputs(self) -> list[Stage]:
        return [self.surrogate] if self.surrogate else []

    def resolved_target(self) -> Target:
        if self.target is None:
            raise StageError(f"{self.label}: planned without resolving the target; plan a run with "
                             "hashbench.benchmark.plan_run")
        return self.target


@dataclass(frozen=True, eq=False)
class PoisonStage(Stage):
    """``Attack.poison`` at one rate, from the attack's stored state."""

    kind: ClassVar[str] = "poison"
    poison_rate: float
    attack: AttackStage
    # the attack's parameters that only ``poison`` reads (``Attack.poison_params``): they key this stage
    # and not the attack stage, so changing one re-poisons without preparing the attack again
    poison_params: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> dict[str, Any]:
        identity = {"poison_rate": self.poison_rate, "seed": self.seed}
        return identity | ({"attack_params": self.poison_params} if self.poison_params else {})

    def attack_identity(self) -> dict[str, Any]:
        """The attack's whole identity, ``{"name", "version", "params"}``: the prepared attack's
        parameters and this stage's poison-only ones."""
        prepared = self.attack.attack
        return prepared | {"params": prepared["params"] | self.poison_params}

    def inputs(self) -> list[Stage]:
        return [self.attack]


@dataclass(frozen=True, eq=False)
class VictimStage(Stage):
    """A victim trained on the poisoned training set."""

    kind: ClassVar[str] = "victim"
    dataset: dict[str, Any]
    victim: dict[str, Any]
    poison: PoisonStage
    pretrain: PretrainStage | None

    def identity(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "victim": self.victim, "seed": self.seed}

    def inputs(self) -> list[Stage]:
        return [self.poison, *([self.pretrain] if self.pretrain else [])]


@dataclass(frozen=True, eq=False)
class DefendStage(Stage):
    """One defense against one backdoored victim. ``role`` is the defense class's (purify, detect, repair,
    filter or none): which outputs the stage writes and evaluate reads."""

    kind: ClassVar[str] = "defend"
    defense: dict[str, Any]
    role: str
    clean_fraction: float
    backdoored: VictimStage

    @property
    def poison(self) -> PoisonStage:
        return self.backdoored.poison

    @property
    def attack(self) -> AttackStage:
        return self.backdoored.poison.attack

    @property
    def produces_model(self) -> bool:
        return self.role in ("repair", "filter")

    def identity(self) -> dict[str, Any]:
        identity = {"defense": self.defense, "clean_fraction": self.clean_fraction, "seed": self.seed,
                    "victim": self.backdoored.victim, "dataset": self.backdoored.dataset}
        if self.role == "purify":
            # A purifier's stage stores the victim's codes of the purified queries since the typed records
            # (#16), and evaluate reads them; this entry gave those stages new keys, so one stored before,
            # without them, is never read.
            identity["purified_codes"] = True
        return identity

    def inputs(self) -> list[Stage]:
        # a data filter retrains from the pretrained backbone
        return [self.backdoored, self.poison, self.attack, *([self.backdoored.pretrain] if self.backdoored.pretrain else [])]


@dataclass(frozen=True, eq=False)
class EvaluateStage(Stage):
    """One results row: the clean victim's (``defended`` None) or an attack x defense one. ``metrics`` are
    the identities of the installed metric plugins (name, version and parameters, by name), so installing
    one, or setting its parameters, recomputes the evaluations."""

    kind: ClassVar[str] = "evaluate"
    clean: CleanVictimStage
    defended: DefendStage | None
    metrics: dict[str, dict[str, Any]]

    def identity(self) -> dict[str, Any]:
        row = ({"attack": None, "defense": None} if self.defended is None else
               {"attack": self.defended.attack.attack["name"], "defense": self.defended.defense["name"]})
        identity: dict[str, Any] = {"row": row, "seed": self.seed}
        if self.metrics:  # absent when none is installed: the key of the rows computed before metric plugins
            identity["metrics"] = {name: metric["version"] for name, metric in self.metrics.items()}
        # only the metrics that have parameters: rows of parameterless metrics keep the keys they had before
        # metric parameters existed
        params = {name: metric["params"] for name, metric in self.metrics.items() if metric["params"]}
        if params:
            identity["metric_params"] = params
        return identity

    def inputs(self) -> list[Stage]:
        if self.defended is None:
            return [self.clean]
        d = self.defended
        return [self.clean, d.attack, d.poison, d.backdoored, d]
