"""Conformance checks for plugin authors: one call per kind, in the spirit of scikit-learn's ``check_estimator``.

    from hashbench.testing import check_attack
    from hashbench_myattack import MyAttack

    def test_my_attack_honours_the_contract():
        check_attack(MyAttack)

Each check exercises the contract of docs/plugins.md on tiny synthetic data (a hundred 32×32 images made
here, no plugin and no download involved) and a tiny surrogate hashing model, in a few seconds on a CPU.
A broken rule raises :class:`ContractError` (an ``AssertionError``) naming the plugin and the rule.

Heavy plugins may declare ``testing_params``: a dict (a TOML-like table validated against ``Params``) or
a classmethod ``testing_params(cls, workdir: Path) -> dict`` that may write fixture files into
``workdir`` (e.g. a tiny image folder for a dataset that reads files). The checks use it when no
``params`` are passed. ``testing_params = None`` declares that the plugin cannot run offline (it needs
external data); the checks then raise ``unittest.SkipTest``, which pytest reports as a skip.
Backbones that cannot take 32×32 inputs declare ``testing_image_size``. Executors are checked by
:func:`hashbench.executors.check.check_executor`, re-exported here, on a stand-in runner. What a test run
should know about a plugin (a known failure, a check that cannot run it, a check too slow for a default
run) is declared on its class too, and read by :func:`parametrize_with_checks`.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import tempfile
import unittest
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .api import (
    Attack,
    AttackContext,
    Backbone,
    Dataset,
    DatasetContext,
    DataFilter,
    Defense,
    DefenseContext,
    FilterResult,
    HashMethod,
    InputDetector,
    InputPurifier,
    MethodSetup,
    ModelRepair,
    NoDefense,
    Poisoning,
    RepairResult,
    Target,
    ThreatModel,
)
from .contexts import attack_context, defense_context, victim_trainer
from .contract import validate_filter, validate_label_scores, validate_poisoning, validate_triggered
from .data import DatasetSplits, ImageSet, TensorImageSet
from .errors import ConfigError, PluginError
from .executors.check import check_executor  # an executor's check, run on a stand-in runner
from .models import HashModel
from .params import build_params, field_types, params_to_dict
from .scaffold import NAME_PATTERN  # the rule `hashbench new` applies to a plugin's name
from .seeding import make_generator, seed_everything
from .training import TrainConfig, build_model, train_hash_model

CPU = torch.device("cpu")
TARGET_CLASS = 0
BITS = 16
POISON_RATES = (0.05, 0.2)  # both below the target class's share (1/4), so clean-label attacks fit
PIXEL_TOLERANCE = 1  # uint8 levels: batched and single convolutions may round differently
TINY_TRAIN = TrainConfig(epochs=2, batch_size=32)  # what ctx.train runs unless a defense overrides it


class ContractError(AssertionError):
    """A plugin broke a rule of its contract; the message names the plugin, the rule and what was seen."""

    def __init__(self, plugin: str, rule: str, detail: str = ""):
        self.plugin, self.rule, self.detail = plugin, rule, detail
        super().__init__(f"{plugin} breaks the rule '{rule}'" + (f": {detail}" if detail else ""))


def _require(ok: Any, plugin: str, rule: str, detail: str = "") -> None:
    if not ok:
        raise ContractError(plugin, rule, detail)


@contextmanager
def _contract(plugin: str, rule: str) -> Iterator[None]:
    """A rule of :mod:`hashbench.contract`, which the stages enforce at run time, broken here: a ContractError."""
    try:
        yield
    except PluginError as exc:
        raise ContractError(plugin, rule, str(exc)) from None


def _label(cls: type) -> str:
    return f"{cls.kind or 'plugin'} '{getattr(cls, 'name', '') or cls.__name__}'"


# ----------------------------------------------------------------------------------- tiny fixtures


@dataclass(frozen=True)
class TinyData:
    """Sizes of the synthetic splits the checks run on."""

    image_size: int = 32
    num_classes: int = 4
    train_per_class: int = 25
    query_per_class: int = 5
    database_per_class: int = 25


def _tiny_images(labels: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """A smooth random texture with a disc whose colour defines the class (single-label)."""
    n, c = labels.shape
    texture = F.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=(size, size), mode="bilinear", align_corners=False)
    palette = torch.rand(c, 3, generator=g)
    colour = labels @ palette
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    centre = torch.rand(n, 2, generator=g) - 0.5
    disc = ((xx - centre[:, 0, None, None]) ** 2 + (yy - centre[:, 1, None, None]) ** 2 < 0.25).float().unsqueeze(1)
    images = texture * (1 - disc) + colour[:, :, None, None] * disc + 0.03 * torch.randn(n, 3, size, size, generator=g)
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


def _tiny_set(per_class: int, data: TinyData, g: torch.Generator) -> TensorImageSet:
    classes = torch.arange(data.num_classes).repeat_interleave(per_class)
    labels = F.one_hot(classes, data.num_classes).float()
    return TensorImageSet(_tiny_images(labels, data.image_size, g), labels)


def tiny_splits(data: TinyData = TinyData(), seed: int = 0) -> DatasetSplits:
    """Train / query / database splits of class-coloured discs on smooth textures, deterministic from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return DatasetSplits(
        train=_tiny_set(data.train_per_class, data, g),
        query=_tiny_set(data.query_per_class, data, g),
        database=_tiny_set(data.database_per_class, data, g),
        class_names=[f"class_{i}" for i in range(data.num_classes)],
        topk=-1,
    )


class _TinyBackbone(Backbone):
    """Two conv layers and global pooling: the surrogate and defense victims of the checks."""

    name = "tiny"

    def build(self, image_size: int) -> tuple[nn.Module, int]:
        module = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        return module, 16


class _CentreMethod(HashMethod):
    """Pulls each code to a random ±1 centre of its label (a minimal CSQ) to train the tiny models."""

    name = "tiny_centres"

    def setup(self, setup: MethodSetup) -> None:
        classes = setup.train_labels.shape[1]
        self.centres = (torch.randint(0, 2, (classes, setup.bits), generator=setup.generator).float() * 2 - 1).to(setup.device)

    def loss(self, z: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        target = torch.sign(labels @ self.centres).clamp(min=0)
        return F.binary_cross_entropy_with_logits(z, target)


def tiny_model(splits: DatasetSplits, seed: int = 0, epochs: int = 3) -> HashModel:
    """A 16-bit hashing model trained for a few epochs on ``splits.train``; frozen copies serve as surrogates."""
    torch.manual_seed(seed)
    model = build_model(_TinyBackbone(), BITS, splits.image_size)
    train_hash_model(model, _CentreMethod(), splits.train, TrainConfig(epochs=epochs, batch_size=32), CPU,
                     make_generator(seed, "tiny-model"))
    return model.eval()


# ----------------------------------------------------------------------------------- parameters


def testing_params(cls: type, workdir: Path) -> dict[str, Any] | None:
    """The parameter table the checks use for ``cls``: its ``testing_params`` (dict or classmethod), else {}."""
    spec = getattr(cls, "testing_params", {})
    if callable(spec):
        spec = spec(workdir)
    return None if spec is None else dict(spec)


def _resolve_params(cls: type, params: Any, workdir: Path) -> Any:
    """An instance of ``cls.Params`` from ``params`` (instance or table) or the plugin's testing params."""
    if params is not None and not isinstance(params, dict):
        return params
    table = params if params is not None else testing_params(cls, workdir)
    if table is None:
        raise unittest.SkipTest(f"{_label(cls)} declares testing_params = None: it cannot run without external data")
    try:
        return build_params(cls.Params, table, _label(cls))
    except ConfigError as exc:
        raise ContractError(_label(cls), "the testing parameters are valid Params", str(exc)) from None


def check_params(cls: type) -> None:
    """The class-level rules every plugin shares: name, docstring, and a documented Params dataclass."""
    who = _label(cls)
    _require(isinstance(cls.name, str) and NAME_PATTERN.match(cls.name), who,
             "name is a lower-case identifier", f"got {cls.name!r}")
    _require(isinstance(cls.version, str) and cls.version, who, "version is a non-empty string", repr(cls.version))
    _require(cls.summary(), who, "the class has a docstring (its first line is the summary `hashbench plugins` shows)")
    P = cls.Params
    _require(dataclasses.is_dataclass(P) and isinstance(P, type), who, "Params is a dataclass", repr(P))
    try:
        field_types(P)
    except Exception as exc:  # unresolvable annotations break config validation
        raise ContractError(who, "Params' type hints resolve", str(exc)) from None
    for f in dataclasses.fields(P):
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        _require(has_default, who, "every Params field has a default", f"'{f.name}' has none")
        doc = f.metadata.get("doc")
        _require(isinstance(doc, str) and doc.strip(), who, "every Params field has a one-line doc (hashbench.param)",
                 f"'{f.name}' has none")
    try:
        defaults = build_params(P, {}, who)
    except ConfigError as exc:
        raise ContractError(who, "the default Params are valid", str(exc)) from None
    try:
        json.dumps(params_to_dict(defaults))
    except TypeError as exc:
        raise ContractError(who, "Params values are JSON-serialisable (they enter stage keys)", str(exc)) from None
    try:
        build_params(P, {"no_such_key_xyz": 1}, who)
    except ConfigError:
        pass
    else:
        raise ContractError(who, "Params rejects unknown keys (build it with dataclasses, no **kwargs)")


@contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="hashbench-check-") as folder:
        yield Path(folder)


def _same_images(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal shapes and pixels within PIXEL_TOLERANCE uint8 levels."""
    if a.shape != b.shape:
        return False
    return len(a) == 0 or int((a.int() - b.int()).abs().max()) <= PIXEL_TOLERANCE


def _roundtrip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` after a ``torch.save`` / ``torch.load(weights_only=True)`` trip, as the store does."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# ----------------------------------------------------------------------------------- attacks


@dataclass
class _AttackRun:
    state: dict[str, torch.Tensor]
    triggered: torch.Tensor
    poisonings: list[Poisoning]


def _attack_context(cls: type, params: Any, splits: DatasetSplits, rate: float, seed: int, folder: Path,
                    surrogate: Callable[[], HashModel]) -> AttackContext:
    """The context the stages build (rate 0 for prepare/trigger, the stage's rate for poison), for the
    target class TARGET_CLASS."""
    target = Target(F.one_hot(torch.tensor(TARGET_CLASS), splits.num_classes).float(), f"class_{TARGET_CLASS}")
    identity = {"name": cls.name, "version": cls.version, "params": params_to_dict(params)}
    folder.mkdir(parents=True, exist_ok=True)
    return attack_context(identity, splits, target, seed, rate, CPU, folder,
                          surrogate if cls.threat_model.needs_surrogate else None)


def _run_attack(cls: type, params: Any, splits: DatasetSplits, queries: torch.Tensor, seed: int, folder: Path,
                surrogate: Callable[[], HashModel]) -> _AttackRun:
    """prepare + trigger on one instance, then poison on a fresh instance restored from the state (as the stages do)."""
    who = _label(cls)
    seed_everything(seed)
    attack = cls(params)
    ctx = _attack_context(cls, params, splits, 0.0, seed, folder / "prepare", surrogate)
    attack.prepare(ctx)
    state = attack.state_dict()
    _require(isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()),
             who, "state_dict() returns a dict of str -> tensor", repr(type(state)))
    state = _roundtrip({k: v.detach().cpu() for k, v in state.items()})
    sent = queries.clone()
    triggered = attack.trigger(sent, ctx)
    _require(torch.equal(sent, queries), who, "trigger() does not modify its input in place")
    _check_triggered(who, queries, triggered, attack, ctx)
    poisonings = []
    for rate in POISON_RATES:
        seed_everything(seed)
        restored = cls(params)
        restored.load_state_dict(state)
        poisonings.append(restored.poison(_attack_context(cls, params, splits, rate, seed, folder / f"poison-{rate}", surrogate)))
    restored_trigger = restored.trigger(queries.clone(), ctx)
    _require(_same_images(restored_trigger, triggered), who,
             "an attack restored with load_state_dict(state_dict()) triggers queries as the prepared one does",
             "state learned in prepare() is missing from state_dict()")
    return _AttackRun(state, triggered, poisonings)


def _check_triggered(who: str, queries: torch.Tensor, triggered: Any, attack: Attack, ctx: AttackContext) -> None:
    with _contract(who, "trigger() returns uint8 images of its input's shape"):
        validate_triggered(attack, queries, triggered)
    _require(not torch.equal(triggered, queries), who, "trigger() changes the query images")
    head = attack.trigger(queries[:3].clone(), ctx)
    _require(_same_images(head, triggered[:3]), who,
             "trigger() treats each image independently of its batch (the runner triggers in batches)")


def _check_poisoning(who: str, attack: Attack, poisoning: Any, splits: DatasetSplits, rate: float) -> None:
    _require(isinstance(poisoning, Poisoning), who, "poison() returns a hashbench.Poisoning", repr(type(poisoning)))
    with _contract(who, "poison() passes hashbench.contract.validate_poisoning"):
        validate_poisoning(attack, poisoning, splits.train)
    expected = max(1, int(round(rate * len(splits.train))))
    _require(len(poisoning.indices) == expected, who,
             "poison() poisons ctx.poison_count() samples (poison_rate × training-set size)",
             f"poison_rate {rate} on {len(splits.train)} images should give {expected}, got {len(poisoning.indices)}")
    originals = splits.train.images(poisoning.indices)
    _require(not torch.equal(originals, poisoning.images), who, "poisoned images differ from the training images")
    target = F.one_hot(torch.tensor(TARGET_CLASS), splits.num_classes).float()
    carries_target = poisoning.labels.float() @ target > 0
    if attack.threat_model.clean_label:
        _require(bool(carries_target.all()), who, "a clean-label attack poisons target-class images",
                 f"{int((~carries_target).sum())} of {len(carries_target)} poisons are not of the target class")


def check_attack(cls: type, params: Any = None) -> None:
    """Check an Attack class: parameters, threat model, prepare/state round trip, trigger, poison counts
    and labels (via ``validate_poisoning``), clean-label honesty, and determinism under a seed."""
    who = _label(cls)
    _require(isinstance(cls, type) and issubclass(cls, Attack), who, "the class subclasses hashbench.Attack")
    check_params(cls)
    _require(isinstance(cls.threat_model, ThreatModel), who, "threat_model is a hashbench.ThreatModel")
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    unknown = [name for name in cls.poison_params if name not in fields]
    _require(isinstance(cls.poison_params, tuple) and not unknown, who,
             "poison_params is a tuple of Params field names", f"not fields: {unknown}" if unknown else repr(cls.poison_params))
    splits = tiny_splits()
    train_before = splits.train.all_images().clone()
    queries = splits.query.images(torch.nonzero(splits.query.labels[:, TARGET_CLASS] == 0).flatten())
    surrogate_cache: dict[str, HashModel] = {}

    def surrogate() -> HashModel:
        if "model" not in surrogate_cache:
            model = tiny_model(splits)
            for p in model.parameters():
                p.requires_grad_(False)
            surrogate_cache["model"] = model
        return surrogate_cache["model"]

    with _workdir() as folder:
        params = _resolve_params(cls, params, folder)
        first = _run_attack(cls, params, splits, queries, 0, folder / "a", surrogate)
        _require(torch.equal(splits.train.all_images(), train_before), who, "the attack never modifies the training set in place")
        for rate, poisoning in zip(POISON_RATES, first.poisonings):
            _check_poisoning(who, cls(params), poisoning, splits, rate)
        second = _run_attack(cls, params, splits, queries, 0, folder / "b", surrogate)
    _check_attack_determinism(who, first, second)


def _check_attack_determinism(who: str, first: _AttackRun, second: _AttackRun) -> None:
    rule = "the attack is deterministic under a seed (two runs with seed 0 agree)"
    _require(first.state.keys() == second.state.keys(), who, rule, "state_dict keys differ")
    _require(_same_images(first.triggered, second.triggered), who, rule, "triggered queries differ")
    for a, b in zip(first.poisonings, second.poisonings):
        _require(torch.equal(a.indices, b.indices), who, rule, "poison indices differ")
        _require(torch.equal(a.labels.float(), b.labels.float()), who, rule, "poison labels differ")
        _require(_same_images(a.images, b.images), who, rule, "poison images differ")


# ----------------------------------------------------------------------------------- defenses

_ROLES = {InputPurifier: ("input", "purify"), InputDetector: ("input", "detect"),
          ModelRepair: ("model", "repair"), DataFilter: ("data", "filter"), NoDefense: ("model", "none")}


def _defense_context(cls: type, splits: DatasetSplits, model: HashModel, seed: int, folder: Path) -> DefenseContext:
    """The context the stages build: a private model copy, a fifth of the training set as clean data, and
    the training loop with the tiny models' method and recipe."""
    folder.mkdir(parents=True, exist_ok=True)
    clean = splits.train.subset(torch.arange(0, len(splits.train), 5))
    train = victim_trainer(_CentreMethod, TINY_TRAIN, lambda: make_generator(seed, "defense-train"), CPU,
                           f"defense {cls.name}")
    return defense_context(cls.name, copy.deepcopy(model), clean, splits.train, splits.num_classes, seed, CPU, folder, train)


def _defense_outcome(cls: type, params: Any, splits: DatasetSplits, model: HashModel, folder: Path) -> torch.Tensor:
    """Run the defense once (seeded) and return a tensor summarising what it produced, for determinism."""
    who = _label(cls)
    seed_everything(0)
    defense = cls(params)
    ctx = _defense_context(cls, splits, model, 0, folder)
    queries = splits.query.all_images()
    if isinstance(defense, InputPurifier):
        return _check_purifier(who, defense, queries)
    if isinstance(defense, InputDetector):
        defense.fit(ctx)
        scores = defense.score(queries.clone(), ctx)
        _require(isinstance(scores, torch.Tensor) and scores.shape == (len(queries),) and scores.is_floating_point(),
                 who, "score() returns one float per image", f"got {getattr(scores, 'dtype', type(scores))} "
                 f"{tuple(getattr(scores, 'shape', ()))} for {len(queries)} images")
        _require(torch.isfinite(scores).all(), who, "score() returns finite scores")
        return scores.detach().float()
    if isinstance(defense, ModelRepair):
        return _check_repair(who, defense.repair(ctx), splits)
    if isinstance(defense, DataFilter):
        return _check_filter(who, defense, defense.filter(ctx), len(splits.train))
    return torch.zeros(0)


def _check_purifier(who: str, defense: InputPurifier, queries: torch.Tensor) -> torch.Tensor:
    sent = queries.clone()
    out = defense.purify(sent)
    _require(torch.equal(sent, queries), who, "purify() does not modify its input in place")
    _require(isinstance(out, torch.Tensor) and out.dtype == torch.uint8 and out.shape == queries.shape, who,
             "purify() returns uint8 images of its input's shape",
             f"got {getattr(out, 'dtype', type(out))} {tuple(getattr(out, 'shape', ()))}")
    empty = defense.purify(queries[:0])
    _require(isinstance(empty, torch.Tensor) and empty.shape == queries[:0].shape, who, "purify() accepts an empty batch")
    return out


def _check_repair(who: str, result: Any, splits: DatasetSplits) -> torch.Tensor:
    _require(isinstance(result, RepairResult), who, "repair() returns a hashbench.RepairResult", repr(type(result)))
    _require(isinstance(result.model, HashModel) and result.model.bits == BITS, who,
             "the repaired model is a HashModel with the victim's code length")
    flagged = result.flagged_labels
    _require(flagged is None or all(isinstance(c, int) and 0 <= c < splits.num_classes for c in flagged), who,
             "flagged_labels is None or a list of class indices", repr(flagged))
    with _contract(who, "label_scores is None or maps class indices to finite float suspicion scores"):
        validate_label_scores(who, result.label_scores, splits.num_classes)
    _require(all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in result.report.items()), who,
             "report maps names to numbers", repr(result.report))
    with torch.no_grad():
        z = result.model.eval()(splits.query.all_images().float() / 255)
    _require(torch.isfinite(z).all(), who, "the repaired model's outputs are finite")
    return z


def _check_filter(who: str, defense: DataFilter, result: Any, n: int) -> torch.Tensor:
    _require(isinstance(result, FilterResult), who, "filter() returns a hashbench.FilterResult", repr(type(result)))
    with _contract(who, "filter() returns one score and one bool keep flag per training sample"):
        validate_filter(defense, result, n)
    _require(bool(torch.isfinite(result.scores.float()).all()), who, "filter() scores every training sample with a finite number")
    _require(bool(result.keep.any()), who, "filter() keeps at least one sample (the victim is retrained on them)")
    _require(all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in result.report.items()), who,
             "report maps names to numbers", repr(result.report))
    return torch.cat([result.scores.float(), result.keep.float()])


def check_defense(cls: type, params: Any = None) -> None:
    """Check a Defense class: parameters, a level/role matching its base class, the typed result of its
    kind (purified uint8 images, finite scores, a repaired HashModel, per-sample filter flags) and
    determinism under a seed."""
    who = _label(cls)
    _require(isinstance(cls, type) and issubclass(cls, Defense), who, "the class subclasses hashbench.Defense")
    check_params(cls)
    base = next((b for b in _ROLES if issubclass(cls, b)), None)
    _require(base is not None, who, "the class subclasses InputPurifier, InputDetector, ModelRepair or DataFilter")
    _require((cls.level, cls.role) == _ROLES[base], who, f"level/role match {base.__name__}",
             f"expected {_ROLES[base]}, got {(cls.level, cls.role)}")
    splits = tiny_splits()
    train_before = splits.train.all_images().clone()
    model = tiny_model(splits)
    with _workdir() as folder:
        params = _resolve_params(cls, params, folder)
        first = _defense_outcome(cls, params, splits, model, folder / "a")
        second = _defense_outcome(cls, params, splits, model, folder / "b")
    _require(torch.equal(splits.train.all_images(), train_before), who, "the defense never modifies the training set in place")
    _require(first.shape == second.shape and torch.allclose(first.float(), second.float(), atol=1e-4), who,
             "the defense is deterministic under a seed (two runs with seed 0 agree)")


# ----------------------------------------------------------------------------------- methods


def _method_loss(cls: type, params: Any, labels: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Set a fresh method up on ``labels`` and return (loss, dloss/dz) for the batch of the first rows."""
    who = _label(cls)
    method = cls(params)
    method.setup(MethodSetup(labels, BITS, CPU, make_generator(0, "method")))
    batch = torch.arange(0, len(z))
    z = z.clone().requires_grad_(True)
    loss = method.loss(z, labels[batch], batch)
    _require(isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.is_floating_point(), who,
             "loss() returns a scalar float tensor", f"got {getattr(loss, 'shape', type(loss))}")
    _require(torch.isfinite(loss), who, "loss() is finite", str(loss))
    loss.backward()
    _require(z.grad is not None and torch.isfinite(z.grad).all(), who, "loss() is differentiable in z with finite gradients")
    _require(z.grad.abs().sum() > 0, who, "loss() depends on the model outputs (non-zero gradient)")
    return loss.detach(), z.grad


def check_method(cls: type, params: Any = None) -> None:
    """Check a HashMethod class: parameters; on single- and multi-label data a finite, differentiable
    scalar loss; determinism from the setup generator; and a short run of the core training loop."""
    who = _label(cls)
    _require(isinstance(cls, type) and issubclass(cls, HashMethod), who, "the class subclasses hashbench.HashMethod")
    check_params(cls)
    g = torch.Generator().manual_seed(0)
    single = F.one_hot(torch.arange(40) % 4, 4).float()
    multi = (torch.rand(40, 5, generator=g) < 0.35).float()
    multi[torch.arange(40), torch.randint(0, 5, (40,), generator=g)] = 1
    z = torch.randn(16, BITS, generator=g)
    with _workdir() as folder:
        params = _resolve_params(cls, params, folder)
        for labels in (single, multi):
            first = _method_loss(cls, params, labels, z)
            second = _method_loss(cls, params, labels, z)
            _require(torch.allclose(first[0], second[0]) and torch.allclose(first[1], second[1]), who,
                     "loss() is deterministic given the setup generator")
    splits = tiny_splits()
    torch.manual_seed(0)
    model = build_model(_TinyBackbone(), BITS, splits.image_size)
    try:
        report = train_hash_model(model, cls(params), splits.train, TrainConfig(epochs=1, batch_size=32), CPU,
                                  make_generator(0, "train"))
    except Exception as exc:
        raise ContractError(who, "the method trains a model with hashbench's training loop", f"{type(exc).__name__}: {exc}") from None
    _require(len(report.epoch_losses) == 1, who, "the method trains a model with hashbench's training loop")


# ----------------------------------------------------------------------------------- backbones


def check_backbone(cls: type, params: Any = None, image_size: int | None = None) -> None:
    """Check a Backbone class: parameters; ``build`` returns (module, feature_dim) whose features have that
    width and are finite; the init depends only on torch's seed; gradients reach the backbone; eval mode is
    deterministic; and the weights survive a state_dict round trip."""
    who = _label(cls)
    _require(isinstance(cls, type) and issubclass(cls, Backbone), who, "the class subclasses hashbench.Backbone")
    check_params(cls)
    size = image_size or getattr(cls, "testing_image_size", 32)
    with _workdir() as folder:
        params = _resolve_params(cls, params, folder)
    built = cls(params).build(size)
    _require(isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], nn.Module)
             and isinstance(built[1], int) and built[1] > 0, who, "build(image_size) returns (nn.Module, feature_dim > 0)")
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(build_model(cls(params), BITS, size))
    first, second = models
    _require(all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values())), who,
             "the initial weights depend only on torch's seed (a clean and a backdoored victim start alike)")
    x = torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0))
    features = first.train().features(x)
    _require(features.shape == (4, built[1]), who, "features have shape (batch, feature_dim)",
             f"got {tuple(features.shape)}, declared feature_dim {built[1]}")
    first(x).sum().backward()
    grads = [p.grad for p in first.backbone.parameters() if p.requires_grad]
    _require(any(g is not None and g.abs().sum() > 0 for g in grads) or not grads, who, "gradients reach the backbone")
    _require(all(g is None or torch.isfinite(g).all() for g in grads), who, "gradients are finite")
    with torch.no_grad():
        out = first.eval()(x)
        _require(torch.isfinite(out).all(), who, "outputs are finite")
        _require(torch.allclose(out, first(x)), who, "eval-mode outputs are deterministic")
        second.load_state_dict(_roundtrip(first.state_dict()))
        _require(torch.allclose(out, second.eval()(x), atol=1e-5), who, "the weights survive a state_dict round trip")


# ----------------------------------------------------------------------------------- datasets


def _check_image_set(who: str, split: str, images: ImageSet, num_classes: int, multi_label: bool, size: int) -> None:
    _require(isinstance(images, ImageSet) and len(images) > 0, who, f"the {split} split is a non-empty ImageSet")
    labels = images.labels
    _require(labels.is_floating_point() and labels.shape == (len(images), num_classes), who,
             f"{split} labels are float (n, num_classes)", f"got {labels.dtype} {tuple(labels.shape)}")
    _require(bool(((labels == 0) | (labels == 1)).all()), who, f"{split} labels are multi-hot 0/1")
    per_row = labels.sum(dim=1)
    _require(bool((per_row >= 1).all()), who, f"every {split} image has at least one label")
    if not multi_label:
        _require(bool((per_row == 1).all()), who, f"single-label {split} labels are one-hot")
    probe = torch.tensor(sorted({0, len(images) // 2, len(images) - 1}))
    batch = images.images(probe)
    _require(batch.dtype == torch.uint8 and batch.shape == (len(probe), 3, size, size), who,
             f"{split} images are uint8 (n, 3, S, S) at the dataset's image size",
             f"got {batch.dtype} {tuple(batch.shape)}, expected S={size}")
    _require(torch.equal(images.all_images()[probe], batch), who, f"{split}.images(i) agrees with all_images()[i]")


def _load(cls: type, params: Any, cache: Path) -> DatasetSplits:
    splits = cls(params).load(DatasetContext(cache_dir=cache, seed=0))
    _require(isinstance(splits, DatasetSplits), _label(cls), "load() returns a hashbench.DatasetSplits", repr(type(splits)))
    return splits


def check_dataset(cls: type, params: Any = None) -> None:
    """Check a Dataset class: parameters; three non-empty splits of uint8 square images of one size with
    multi-hot float labels; unique class names; a valid top-K; identical splits on a second load (from its
    cache) and from a fresh cache (determinism)."""
    who = _label(cls)
    _require(isinstance(cls, type) and issubclass(cls, Dataset), who, "the class subclasses hashbench.Dataset")
    check_params(cls)
    with _workdir() as folder:
        params = _resolve_params(cls, params, folder)
        splits = _load(cls, params, folder / "cache-a")
        names = splits.class_names
        _require(len(names) >= 2 and len(set(names)) == len(names) and all(isinstance(n, str) for n in names), who,
                 "class_names are at least two unique strings", repr(names[:12]))
        _require(isinstance(splits.topk, int) and (splits.topk == -1 or splits.topk >= 1), who,
                 "topk is -1 (the whole database) or a positive integer", repr(splits.topk))
        size = splits.train.image_size
        for split in ("train", "query", "database"):
            _check_image_set(who, split, getattr(splits, split), splits.num_classes, splits.multi_label, size)
        for cache in ("cache-a", "cache-b"):
            again = _load(cls, params, folder / cache)
            for split in ("train", "query", "database"):
                a, b = getattr(splits, split), getattr(again, split)
                _require(len(a) == len(b) and torch.equal(a.labels, b.labels) and torch.equal(a.all_images(), b.all_images()),
                         who, "the dataset is deterministic (loads from its cache and from scratch agree)",
                         f"the {split} split differs ({cache})")


# ----------------------------------------------------------------------------------- pytest

# The checks of each kind, in the order parametrize_with_checks runs them (check_<kind> also re-checks the
# parameters, so each stays a complete check when called alone).
CHECKS: dict[str, tuple[Callable[..., None], ...]] = {
    "attack": (check_params, check_attack),
    "defense": (check_params, check_defense),
    "method": (check_params, check_method),
    "backbone": (check_params, check_backbone),
    "dataset": (check_params, check_dataset),
    "executor": (check_params, check_executor),
}


def _declared_checks(cls: type, attribute: str) -> dict[str, str]:
    """``{check name: reason}`` a plugin class declares in ``attribute``; a name that is no check of its kind
    is an error (a misspelt declaration would otherwise mark nothing)."""
    declared = getattr(cls, attribute, {})
    unknown = set(declared) - {check.__name__ for check in CHECKS[cls.kind]}
    if unknown:
        raise ValueError(f"{_label(cls)}: {attribute} names checks that do not exist: {sorted(unknown)}")
    return declared


def parametrize_with_checks(classes: Iterable[type]):
    """A ``pytest.mark.parametrize`` over ``(plugin, check)``: one test item per plugin class and check, as
    scikit-learn's ``parametrize_with_checks`` does::

        @parametrize_with_checks([MyAttack, MyDefense])
        def test_my_plugins(plugin, check):
            check(plugin)

    What a test run should know about a plugin is declared on its class, not in the test:

    - ``testing_xfail = {"check_attack": "why"}``: a known failure, a strict expected failure, so a fixed
      plugin fails until the declaration is removed;
    - ``testing_skip = {"check_executor": "why"}``: a check that cannot run this plugin (say where it is
      checked instead);
    - ``testing_slow = "why"``: the kind's check is too slow for a default test run even with
      ``testing_params``; its item gets ``pytest.mark.slow`` (``check_params`` still runs)."""
    import pytest

    items = []
    for cls in classes:
        xfail, skip = _declared_checks(cls, "testing_xfail"), _declared_checks(cls, "testing_skip")
        for check in CHECKS[cls.kind]:
            item_marks = []
            if check.__name__ in xfail:
                item_marks.append(pytest.mark.xfail(reason=xfail[check.__name__], raises=ContractError, strict=True))
            if check.__name__ in skip:
                item_marks.append(pytest.mark.skip(reason=skip[check.__name__]))
            if getattr(cls, "testing_slow", None) and check is not check_params:
                item_marks.append(pytest.mark.slow)
            items.append(pytest.param(cls, check, marks=item_marks, id=f"{cls.kind}-{cls.name}-{check.__name__}"))
    return pytest.mark.parametrize("plugin,check", items)
