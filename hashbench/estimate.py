"""What a benchmark costs before it runs (``hashbench plan FILE --estimate``).

Every stage is priced as image passes through its victim's network (``train``: forward + backward,
``encode``: forward only) plus query × database pairs ranked by the retrieval evaluator. The runner's
share (training a victim, encoding a database, retraining after a filter) is counted here; what an attack
or defense adds on its own comes from its ``estimated_work``. Dataset sizes come from ``Dataset.sizes``,
so nothing is loaded. Seconds are passes divided by a throughput: measured here once per machine, victim
network and image size (cached in ``$HASHBENCH_CACHE/throughput.json``), or given with ``--throughput``.
See docs/performance.md for what the estimate leaves out.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .api import DataFilter, InputPurifier, ModelRepair, SplitSizes, Work, WorkSizes, poison_count
from .errors import ConfigError
from .plan import Plan
from .records import STAGE_KINDS, Stage, canonical_json

THROUGHPUT_KEYS = ("train", "encode", "retrieval")
THROUGHPUT_UNITS = {"train": "images/s", "encode": "images/s", "retrieval": "query×item pairs/s"}
# Timed steps after a warm-up: at least MIN_STEPS, more until MIN_SECONDS have passed (at most MAX_STEPS).
# The fastest step counts: other processes on the machine only ever slow a step down.
MIN_STEPS, MAX_STEPS, MIN_SECONDS = 3, 20, 2.0


def parse_throughput(text: str | None) -> dict[str, float]:
    """``"train=850,encode=5000"`` -> ``{"train": 850.0, "encode": 5000.0}``, with one clear error."""
    values: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        name, _, number = item.partition("=")
        try:
            value = float(number)
        except ValueError:
            value = float("nan")
        if name not in THROUGHPUT_KEYS or not value > 0 or math.isinf(value):
            raise ConfigError(f"--throughput item {item!r} is not valid: write NAME=POSITIVE_NUMBER with NAME one of "
                              f"{', '.join(THROUGHPUT_KEYS)} (e.g. --throughput train=850,encode=5000)")
        values[name] = value
    return values


# ------------------------------------------------------------------------------------ throughput


def _cache_file() -> Path:
    from .loading import cache_dir

    return cache_dir() / "throughput.json"


def _machine(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    return f"{platform.node()}|{device.type}|{name}|torch {torch.__version__}"


def _timed(step, device: torch.device) -> float:
    """Seconds of the fastest timed call of ``step``, after a warm-up call (allocations, cudnn autotuning)."""
    times: list[float] = []
    while len(times) <= MIN_STEPS or (sum(times[1:]) < MIN_SECONDS and len(times) <= MAX_STEPS):
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return min(times[1:])


def measure_network(victim: dict[str, Any], image_size: int, device: torch.device) -> dict[str, float]:
    """Images/s of a forward+backward (``train``) and a forward (``encode``) of the victim's network at
    ``image_size``, on random images and random weights (pretrained weights change no speed, and are not
    needed)."""
    from .devices import autocast, memory_format
    from .loading import instantiate
    from .training import build_model

    backbone = instantiate("backbone", victim["backbone"])
    if hasattr(backbone.params, "pretrained"):
        backbone = type(backbone)(replace(backbone.params, pretrained=False))
    model = build_model(backbone, victim["bits"], image_size).to(device, memory_format=memory_format(device))
    batch = victim["train"]["batch_size"] if device.type == "cuda" else min(victim["train"]["batch_size"], 16)
    x = torch.rand(batch, 3, image_size, image_size, device=device).contiguous(memory_format=memory_format(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)

    def train_step():
        with autocast(device):
            loss = model(x).float().pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def encode_step():
        with autocast(device):
            model(x)

    model.train()
    train = batch / _timed(train_step, device)
    model.eval()
    return {"train": train, "encode": batch / _timed(encode_step, device)}


def measure_retrieval(queries: int = 200, items: int = 50_000, bits: int = 64) -> float:
    """Query × item pairs/s of the retrieval evaluator (random codes, 10 single-label classes, mAP@1000)."""
    from .retrieval import average_precisions

    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 2, (queries, bits), generator=g).float() * 2 - 1
    db = torch.randint(0, 2, (items, bits), generator=g).float() * 2 - 1
    ql = torch.nn.functional.one_hot(torch.randint(0, 10, (queries,), generator=g), 10).float()
    dl = torch.nn.functional.one_hot(torch.randint(0, 10, (items,), generator=g), 10).float()
    seconds = _timed(lambda: average_precisions(q, db, ql, dl, 1000), torch.device("cpu"))
    return queries * items / seconds


@dataclass
class ThroughputTable:
    """Throughputs by victim network and image size; ``given`` (from ``--throughput``) wins over measuring."""

    device: torch.device
    given: dict[str, float] = field(default_factory=dict)
    measured: dict[str, dict[str, float]] = field(default_factory=dict)  # cache key -> values
    used: dict[str, str] = field(default_factory=dict)  # what was used -> where it came from

    def __post_init__(self):
        path = _cache_file()
        try:
            self.measured = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            self.measured = {}  # an unreadable cache is measured again

    def _lookup(self, key: str, label: str, measure) -> dict[str, float]:
        how = f"measured earlier on this machine (cached in {_cache_file()})"
        if key not in self.measured:
            self.measured[key] = measure()
            path = _cache_file()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.measured, indent=1, sort_keys=True))
            how = "measured now"
        values = {k: v for k, v in self.measured[key].items() if k not in self.given}
        self.used.setdefault(f"{label}: " + ", ".join(f"{k} {v:,.1f} {THROUGHPUT_UNITS[k]}" for k, v in values.items()), how)
        return self.measured[key]

    def network(self, victim: dict[str, Any], image_size: int) -> dict[str, float]:
        if "train" in self.given and "encode" in self.given:
            return self.given
        # the code length only sizes the hash head: one measurement serves every length
        identity = {"backbone": victim["backbone"]["name"], "params": victim["backbone"]["params"], "image_size": image_size}
        key = f"{_machine(self.device)}|{canonical_json(identity)}"
        label = f"{victim['backbone']['name']} at {image_size} px on {self.device.type}"
        return {**self._lookup(key, label, lambda: measure_network(victim, image_size, self.device)), **self.given}

    def retrieval(self) -> float:
        if "retrieval" in self.given:
            return self.given["retrieval"]
        key = f"{_machine(torch.device('cpu'))}|retrieval"
        return self._lookup(key, "retrieval on the CPU", lambda: {"retrieval": measure_retrieval()})["retrieval"]


# ------------------------------------------------------------------------------------ stage costs


@dataclass
class StageCost:
    stage: Stage
    work: Work = field(default_factory=Work)
    pairs: float = 0.0  # query × database pairs ranked
    seconds: float = 0.0
    known: bool = True  # False: the dataset could not say its sizes


def _victim_stage(plan: Plan, stage: Stage) -> Stage:
    """The stage whose config names the dataset and victim this stage works for."""
    if stage.kind in ("clean_victim", "victim", "defend"):
        return stage
    if stage.kind == "pretrain":  # priced with the network of a victim that starts from it
        return next(s for s in plan.stages.values() if stage.id in s.deps)
    if stage.kind == "evaluate":
        return plan.stages[next(d for d in stage.deps if d.startswith("clean_victim/"))]
    attack = stage if stage.kind == "attack" else plan.stages[stage.deps[0]]
    if attack.config["surrogate"]:
        return plan.stages[attack.config["surrogate"]]
    return next(s for s in plan.stages.values() if s.kind == "clean_victim"
                and s.config["dataset"] == attack.config["dataset"] and s.config["seed"] == attack.config["seed"])


def stage_work(plan: Plan, stage: Stage, sizes: SplitSizes, victim: dict[str, Any]) -> tuple[Work, float]:
    """(image passes, retrieval pairs) of one stage."""
    from .loading import instantiate

    epochs = victim["train"]["epochs"]
    base = WorkSizes(sizes.train, sizes.query, sizes.database, 0, 0, epochs)
    encode_model = Work(encode=sizes.database + sizes.query)  # the stored database and query codes
    if stage.kind == "pretrain":
        recipe = stage.config["pretrain"]
        images = sizes.database if recipe["pretrain_on"] == "database" else sizes.train
        return Work(train=recipe["pretrain_epochs"] * images), 0.0
    if stage.kind in ("clean_victim", "victim"):
        return Work(train=epochs * sizes.train) + encode_model, 0.0
    if stage.kind == "attack":
        return instantiate("attack", stage.config["attack"]).estimated_work(base), 0.0
    if stage.kind == "poison":
        attack = plan.stages[stage.deps[0]]
        poisons = poison_count(stage.config["poison_rate"], sizes.train)
        return instantiate("attack", attack.config["attack"]).estimated_work(replace(base, poisons=poisons)), 0.0
    if stage.kind == "defend":
        defense = instantiate("defense", stage.config["defense"])
        poison = next(plan.stages[d] for d in stage.deps if d.startswith("poison/"))
        clean = max(1, int(round(stage.config["clean_fraction"] * sizes.train)))
        own = defense.estimated_work(replace(base, poisons=poison_count(poison.config["poison_rate"], sizes.train), clean=clean))
        if isinstance(defense, ModelRepair):
            return own + encode_model, 0.0
        if isinstance(defense, DataFilter):  # the victim retrained on what is kept (about the whole set)
            return own + Work(train=epochs * sizes.train) + encode_model, 0.0
        if isinstance(defense, InputPurifier):  # the victim encodes the purified queries and triggered queries
            return own + Work(encode=2 * sizes.query), 0.0
        return own, 0.0
    # evaluate: the clean row ranks the clean queries once; an attack row encodes the triggered queries
    # with two models (with the clean one only behind a purifier: its defend stage stored the backdoored
    # model's codes of them) and ranks four query sets (the evaluated and the clean model's codes of the
    # queries and of the triggered queries), each once for all of its metrics
    if stage.config["row"]["attack"] is None:
        return Work(), float(sizes.query) * sizes.database
    defend = plan.stages[next(d for d in stage.deps if d.startswith("defend/"))]
    work = Work(encode=(1 if defend.role == "purify" else 2) * sizes.query)
    return work, 4.0 * sizes.query * sizes.database


def _dataset_sizes(identity: dict[str, Any], cache: dict[str, SplitSizes | None]) -> SplitSizes | None:
    from .loading import instantiate

    key = canonical_json(identity)
    if key not in cache:
        cache[key] = instantiate("dataset", identity).sizes()
    return cache[key]


@dataclass
class Estimate:
    costs: list[StageCost]
    unknown_datasets: list[str]
    throughput: ThroughputTable

    def by_kind(self) -> dict[str, list[StageCost]]:
        return {kind: [c for c in self.costs if c.stage.kind == kind] for kind in STAGE_KINDS}

    @property
    def total_seconds(self) -> float:
        return sum(c.seconds for c in self.costs)

    def critical_path_seconds(self) -> float:
        """The longest chain of dependent stages: no number of workers finishes sooner."""
        finish: dict[str, float] = {}
        for cost in self.costs:  # plan order is topological
            finish[cost.stage.id] = cost.seconds + max((finish.get(d, 0.0) for d in cost.stage.deps), default=0.0)
        return max(finish.values(), default=0.0)


def estimate_plan(plan: Plan, stage_ids: set[str], throughput: ThroughputTable) -> Estimate:
    """Price the stages ``stage_ids`` of ``plan`` (e.g. those not cached yet)."""
    sizes_cache: dict[str, SplitSizes | None] = {}
    costs, unknown = [], []
    for stage in plan.ordered():
        if stage.id not in stage_ids:
            continue
        owner = _victim_stage(plan, stage)
        sizes = _dataset_sizes(owner.config["dataset"], sizes_cache)
        if sizes is None:
            name = owner.config["dataset"]["name"]
            if name not in unknown:
                unknown.append(name)
            costs.append(StageCost(stage, known=False))
            continue
        work, pairs = stage_work(plan, stage, sizes, owner.config["victim"])
        rates = throughput.network(owner.config["victim"], sizes.image_size)
        seconds = work.train / rates["train"] + work.encode / rates["encode"]
        if pairs:
            seconds += pairs / throughput.retrieval()
        costs.append(StageCost(stage, work, pairs, seconds))
    return Estimate(costs, unknown, throughput)


# ------------------------------------------------------------------------------------ report


def human_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _count(value: float) -> str:
    """A count with a suffix: 0, 950, 12.3 k, 4.56 M, 7.89 G, 25.6 T."""
    for size, suffix in ((1e12, " T"), (1e9, " G"), (1e6, " M"), (1e3, " k")):
        if value >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.0f}"


def format_estimate(estimate: Estimate, workers: int) -> str:
    from .tables import Table

    rows = []
    for kind, costs in estimate.by_kind().items():
        if not costs:
            continue
        unknown = sum(1 for c in costs if not c.known)
        seconds = sum(c.seconds for c in costs)
        rows.append([kind, len(costs), _count(sum(c.work.train for c in costs)),
                     _count(sum(c.work.encode for c in costs)), _count(sum(c.pairs for c in costs)),
                     human_seconds(seconds), f"{seconds / max(estimate.total_seconds, 1e-9):.0%}",
                     unknown or ""])
    total = estimate.total_seconds
    rows.append(["total", len(estimate.costs), _count(sum(c.work.train for c in estimate.costs)),
                 _count(sum(c.work.encode for c in estimate.costs)),
                 _count(sum(c.pairs for c in estimate.costs)), human_seconds(total), "100%",
                 sum(1 for c in estimate.costs if not c.known) or ""])
    lines = [Table(["stage kind", "stages", "train images", "encode images", "retrieval pairs", "compute", "share",
                    "not priced"], rows).to_markdown()]
    path = estimate.critical_path_seconds()
    wall = max(total / workers, path)
    lines.append(f"\nOn {workers} worker(s) (one device each): at least {human_seconds(wall)} "
                 f"(total / workers = {human_seconds(total / workers)}; the longest chain of dependent stages "
                 f"= {human_seconds(path)}).")
    lines.append("Throughput:")
    lines += [f"  {k} = {v:,.0f} {THROUGHPUT_UNITS[k]} (given with --throughput)"
              for k, v in estimate.throughput.given.items()]
    lines += [f"  {what} ({how})" for what, how in estimate.throughput.used.items() if not what.endswith(": ")]
    if estimate.unknown_datasets:
        lines.append(f"Not priced: dataset(s) {', '.join(estimate.unknown_datasets)} cannot say their split sizes "
                     "without loading (Dataset.sizes returns None; for listfile/imagefolder put the lists or "
                     "folders in place, or use a preset).")
    lines.append("Estimates leave out image decoding (see docs/performance.md), start-up and data loading.")
    return "\n".join(lines)
