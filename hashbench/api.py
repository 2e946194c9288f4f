"""The contracts plugins implement. Everything here is public API (re-exported from ``hashbench``).

A plugin is one class with a ``name``, a ``Params`` dataclass and the methods of its kind, registered
with one ``register_*`` hook. The core builds a plugin as ``cls(params)`` and calls it with a typed
context; it never reaches into a plugin's internals, and plugins use nothing but this module and the
helpers it names. See docs/plugins.md for a worked example.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

import torch
from torch import nn

from .contract import validate_triggered
from .data import DatasetSplits, ImageSet
from .errors import PluginError
from .models import HashModel
from .params import NoParams


class Plugin:
    """Base of every plugin kind."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Params: ClassVar[type] = NoParams

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


# --------------------------------------------------------------------------------------------- victims


@dataclass
class MethodSetup:
    """What a hashing method may need before training: the training labels and the code length."""

    train_labels: torch.Tensor  # (N, C) multi-hot, on `device`
    bits: int
    device: torch.device
    generator: torch.Generator  # CPU generator seeded from the run's seed


class HashMethod(Plugin):
    """A hashing objective. ``loss(z, labels, indices)`` gets the model's real outputs for a batch,
    the batch's multi-hot labels and the batch's positions in the training set."""

    kind = "method"

    def setup(self, setup: MethodSetup) -> None:
        """Build state such as hash centres or a memory bank. Called once before training."""

    def loss(self, z: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def parameters(self) -> list[torch.nn.Parameter]:
        """Trainable tensors the objective owns (e.g. GreedyHash's classifier on the codes), created in
        ``setup``. The training loop optimises them together with the model's; default: none."""
        return []


class Backbone(Plugin):
    """An image feature extractor; the core adds the hash head."""

    kind = "backbone"

    def build(self, image_size: int) -> tuple[nn.Module, int]:
        """Return ``(module, feature_dim)``: the module maps normalised images to ``feature_dim`` features."""
        raise NotImplementedError


@dataclass(frozen=True)
class SplitSizes:
    """How many images each split holds and their side, known without decoding one (``Dataset.sizes``)."""

    train: int
    query: int
    database: int
    image_size: int


@dataclass
class DatasetContext:
    cache_dir: Path  # where a dataset may cache what it generates or converts
    seed: int


class Dataset(Plugin):
    """Train / query / database splits with multi-hot labels. Never downloads in tests."""

    kind = "dataset"

    def load(self, ctx: DatasetContext) -> DatasetSplits:
        raise NotImplementedError

    def sizes(self) -> SplitSizes | None:
        """The split sizes, cheaply (from the parameters, the protocol or by counting list lines, never by
        decoding); ``hashbench plan --estimate`` uses them. Default: None, shown there as unknown."""
        return None


# ------------------------------------------------------------------------------------- cost estimates


@dataclass(frozen=True)
class WorkSizes:
    """What a cost estimate knows of a stage (see ``Attack.estimated_work``)."""

    train: int  # training-set size
    query: int
    database: int
    poisons: int  # the attack's poison count (0 in an attack stage: the rate is applied later)
    clean: int  # the defender's clean samples (0 for attacks)
    epochs: int  # the victim's training epochs


@dataclass(frozen=True)
class Work:
    """Image passes through a victim-sized network: ``train`` forward+backward, ``encode`` forward only."""

    train: float = 0.0
    encode: float = 0.0

    def __add__(self, other: "Work") -> "Work":
        return Work(self.train + other.train, self.encode + other.encode)


# --------------------------------------------------------------------------------------------- attacks


@dataclass(frozen=True)
class ThreatModel:
    """What an attack assumes and does; shown in ``hashbench plugins`` and the README's attack table."""

    clean_label: bool  # poisons keep their true labels
    needs_surrogate: bool = False  # uses a hashing model trained on clean data
    sample_specific: bool = False  # the trigger differs per image
    invisible: bool = False  # the trigger is designed to be imperceptible


@dataclass
class Target:
    """The attacker's target: a multi-hot label vector and the class indices it contains."""

    labels: torch.Tensor  # (C,) multi-hot
    name: str

    @property
    def classes(self) -> list[int]:
        return torch.nonzero(self.labels > 0).flatten().tolist()

    def contained_in(self, labels: torch.Tensor) -> torch.Tensor:
        """Rows of ``labels`` whose label set contains every target class."""
        return (labels[:, self.labels > 0] > 0).all(dim=1)

    def overlaps(self, labels: torch.Tensor) -> torch.Tensor:
        """Rows of ``labels`` that share at least one class with the target."""
        return (labels @ self.labels.to(labels.dtype)) > 0


@dataclass
class Poisoning:
    """What ``Attack.poison`` returns: positions in the training set, their new images and labels."""

    indices: torch.Tensor  # (P,) long, unique
    images: torch.Tensor  # (P, 3, H, W) uint8
    labels: torch.Tensor  # (P, C) multi-hot


def poison_count(rate: float, train_size: int) -> int:
    """``rate`` times ``train_size``, rounded, at least 1: how many images a poison rate poisons."""
    return max(1, int(round(rate * train_size)))


@dataclass
class AttackContext:
    """Everything an attack may use. The surrogate is built lazily: attacks that need none never pay."""

    splits: DatasetSplits
    target: Target
    poison_rate: float
    device: torch.device
    seed: int
    generator: torch.Generator
    artifact_dir: Path  # files saved here (sample grids, ...) are kept with the stage
    surrogate_loader: Callable[[], HashModel] | None = None
    log: Callable[..., None] = field(default=lambda **metrics: None)
    progress: Callable[..., Any] = field(default=lambda iterable, **kw: iterable)

    @property
    def surrogate(self) -> HashModel:
        if self.surrogate_loader is None:
            raise PluginError("this attack declared needs_surrogate=False but asked for a surrogate")
        return self.surrogate_loader()

    def poison_count(self) -> int:
        """Number of poisons: ``poison_rate`` times the training-set size, rounded, at least 1."""
        return poison_count(self.poison_rate, len(self.splits.train))

    def choose_poison_indices(self, candidates: torch.Tensor, what: str = "candidate",
                              scores: torch.Tensor | None = None) -> torch.Tensor:
        """``poison_count()`` positions from ``candidates`` (a bool mask or index tensor): drawn at random
        with the context's seeded generator, or, given ``scores`` (one per candidate), the highest-scoring
        ones (ties go to the earlier candidate). Returned sorted."""
        if candidates.dtype == torch.bool:
            candidates = torch.nonzero(candidates).flatten()
        count = self.poison_count()
        if count > len(candidates):
            raise PluginError(
                f"poison_rate {self.poison_rate} asks for {count} poisons but only {len(candidates)} "
                f"{what} training images exist; lower poison_rate to at most "
                f"{math.floor(len(candidates) / len(self.splits.train) * 1000) / 1000}"
            )
        if scores is None:
            pick = torch.randperm(len(candidates), generator=self.generator)[:count]
        else:
            if scores.shape != candidates.shape:
                raise PluginError(f"choose_poison_indices got {tuple(scores.shape)} scores for "
                                  f"{len(candidates)} candidates; pass one score per candidate")
            pick = torch.sort(scores.float().cpu(), descending=True, stable=True).indices[:count]
        return candidates[pick].sort().values


class Attack(Plugin):
    """A backdoor attack: ``prepare`` (optional training), ``poison`` the training set, ``trigger`` queries.

    State that ``prepare`` learns and ``trigger`` needs is persisted through ``state_dict`` /
    ``load_state_dict`` (tensors only), so a cached stage can rebuild the attack without re-training.
    """

    kind = "attack"
    threat_model: ClassVar[ThreatModel] = ThreatModel(clean_label=False)
    # Parameters that only ``poison`` reads (how poisons are chosen, say): they key the poison stage, not the
    # attack stage, so changing one re-poisons from the prepared attack without preparing it again.
    poison_params: ClassVar[tuple[str, ...]] = ()

    def prepare(self, ctx: AttackContext) -> None:
        """Train generators, optimise patches. Default: nothing to prepare."""

    def poison(self, ctx: AttackContext) -> Poisoning:
        raise NotImplementedError

    def trigger(self, images: torch.Tensor, ctx: AttackContext) -> torch.Tensor:
        """Apply the test-time trigger to uint8 query images; return uint8 images of the same shape."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def estimated_work(self, sizes: WorkSizes) -> Work:
        """What ``prepare`` and ``trigger`` cost, for ``hashbench plan --estimate``. Default: nothing (a
        fixed trigger); an attack that trains (a generator, a patch against a surrogate) says how much."""
        return Work()

    # The two standard recipes; an attack whose poisons are just its triggered images returns one of them.
    def relabelled_poisons(self, ctx: AttackContext, batch_size: int = 256) -> Poisoning:
        """Poison-label: ``poison_count()`` non-target training images, triggered, relabelled to the target."""
        train = ctx.splits.train
        indices = ctx.choose_poison_indices(~ctx.target.overlaps(train.labels), "non-target")
        images = trigger_batches(self, train, indices, ctx, batch_size)
        return Poisoning(indices, images, ctx.target.labels.expand(len(indices), -1).clone())

    def clean_label_poisons(self, ctx: AttackContext, batch_size: int = 256) -> Poisoning:
        """Clean-label: ``poison_count()`` target-class training images, triggered, labels kept."""
        train = ctx.splits.train
        indices = ctx.choose_poison_indices(ctx.target.contained_in(train.labels), "target-class")
        images = trigger_batches(self, train, indices, ctx, batch_size)
        return Poisoning(indices, images, train.labels[indices].clone())

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what ``prepare`` learned."""


def trigger_batches(attack: Attack, source: ImageSet, indices: torch.Tensor, ctx: AttackContext,
                    batch_size: int = 256) -> torch.Tensor:
    """The images at ``indices`` of ``source``, triggered ``batch_size`` at a time (a file-backed set is
    never read whole), each batch checked against the trigger contract."""
    out = []
    for chunk in indices.split(batch_size):
        batch = source.images(chunk)
        result = attack.trigger(batch, ctx)
        validate_triggered(attack, batch, result)
        out.append(result.cpu())
    return torch.cat(out) if out else torch.zeros(0, 3, source.image_size, source.image_size, dtype=torch.uint8)


# --------------------------------------------------------------------------------------------- defenses

DefenseLevel = Literal["input", "model", "data"]


@dataclass
class DefenseContext:
    """What a defender has: the (possibly backdoored) model, a clean subset, and the training loop.

    The defender is never told the target or which samples are poisoned.
    """

    model: HashModel  # a private copy; a repair may modify it in place
    clean_set: ImageSet  # the defender's clean samples (``clean_fraction`` of the training set)
    train_set: ImageSet  # the training set the victim saw (data-level defenses inspect it)
    num_classes: int
    device: torch.device
    seed: int
    generator: torch.Generator
    artifact_dir: Path
    # train(model, image_set, epochs=..., lr=...) runs the victim's own training loop and objective
    train: Callable[..., Any] = field(default=lambda *a, **k: None)
    log: Callable[..., None] = field(default=lambda **metrics: None)
    progress: Callable[..., Any] = field(default=lambda iterable, **kw: iterable)


class Defense(Plugin):
    """Base of the defenses; subclass one of the four kinds below."""

    kind = "defense"
    level: ClassVar[DefenseLevel] = "input"
    role: ClassVar[str] = ""

    def estimated_work(self, sizes: WorkSizes) -> Work:
        """What the defense's own code costs, for ``hashbench plan --estimate`` (the runner adds its share:
        encoding a repaired model's database, retraining after a filter). Default: nothing."""
        return Work()


class InputPurifier(Defense):
    """Transforms every query before it is encoded (e.g. JPEG). The database is left as it is."""

    level = "input"
    role = "purify"

    def purify(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images in, uint8 images out."""
        raise NotImplementedError


class InputDetector(Defense):
    """Scores queries; a high score means "triggered". The runner calibrates the threshold at 5% FPR
    on the defender's clean set and reports AUROC, TPR and what passes the detector."""

    level = "input"
    role = "detect"

    def fit(self, ctx: DefenseContext) -> None:
        """Optional calibration on clean data."""

    def score(self, images: torch.Tensor, ctx: DefenseContext) -> torch.Tensor:
        """uint8 images in, one float score per image out."""
        raise NotImplementedError


@dataclass
class RepairResult:
    model: HashModel
    flagged_labels: list[int] | None = None  # model-level detection: labels judged to be backdoor targets
    report: dict[str, float] = field(default_factory=dict)  # extra numbers for the results row
    # model-level detection, threshold-free: a suspicion score per examined label (higher = more likely
    # the target); the runner turns it into the target's rank, as AUROC does for input detectors
    label_scores: dict[int, float] | None = None


class ModelRepair(Defense):
    """Detects and/or repairs a trained model with the defender's clean subset."""

    level = "model"
    role = "repair"

    def repair(self, ctx: DefenseContext) -> RepairResult:
        raise NotImplementedError


@dataclass
class FilterResult:
    scores: torch.Tensor  # (N,) suspicion per training sample (higher = more likely poisoned)
    keep: torch.Tensor  # (N,) bool: samples the victim is retrained on
    report: dict[str, float] = field(default_factory=dict)


class DataFilter(Defense):
    """Scores the training set with the backdoored model; the victim is retrained on what is kept."""

    level = "data"
    role = "filter"

    def filter(self, ctx: DefenseContext) -> FilterResult:
        raise NotImplementedError


class NoDefense(Defense):
    """The undefended baseline every row is compared with."""

    name = "none"
    level = "model"
    role = "none"


# --------------------------------------------------------------------------------------------- outputs


class Metric(Plugin):
    """An extra retrieval metric computed on every evaluated model.

    ``compute(query_codes, db_codes, query_labels, db_labels, topk)`` returns named values that are
    added to each results row under ``<name>`` keys.
    """

    kind = "metric"

    def compute(self, query_codes, db_codes, query_labels, db_labels, topk: int) -> dict[str, float]:
        raise NotImplementedError


class Exporter(Plugin):
    """Writes the results table in one format (``hashbench export --format NAME``)."""

    kind = "exporter"
    suffix: ClassVar[str] = ""

    def export(self, table, path: Path) -> None:
        raise NotImplementedError


class Executor(Plugin):
    """Runs the stages of a plan (see hashbench.executors)."""

    kind = "executor"

    def execute(self, plan, runner, selected: set[str], force: set[str], progress) -> dict[str, Any]:
        """Run the ``selected`` stage ids of ``plan`` with ``runner.run(stage, force=...)``, in dependency
        order; call ``progress(stage, outcome)`` after each; return ``{stage id: StageOutcome}``."""
        raise NotImplementedError
