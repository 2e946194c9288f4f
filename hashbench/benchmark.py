"""Running a benchmark: plan it, check what is cached, execute the rest, collect the rows."""

from __future__ import annotations

import fnmatch
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import BenchmarkSpec
from .api import Target, poison_count
from .config import executor_params
from .errors import ConfigError, warn
from .plan import Plan, build_plan, target_key
from .plugins import get_registry
from .loading import load_dataset, resolve_target
from .runner import StageOutcome, StageRunner
from .store import Store


# A poison rate whose rounded poison count is off by more than this share of the rate is reported.
ROUNDING_TOLERANCE = 0.05


@dataclass
class RunResult:
    plan: Plan
    outcomes: dict[str, StageOutcome] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def failures(self) -> list[StageOutcome]:
        return [o for o in self.outcomes.values() if o.status in ("failed", "skipped")]

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes.values() if o.status == status)


def preflight(spec: BenchmarkSpec) -> dict[str, Target]:
    """Load every dataset and resolve the target against it before anything trains: a missing dataset or a
    bad target label fails here, not after an hour of training. A poison rate that rounds to a noticeably
    different number of poisons is reported (the results row gives the real rate as poison_rate_actual).
    Returns the resolved targets, by :func:`hashbench.plan.target_key` (none without attacks)."""
    targets: dict[str, Target] = {}
    for dataset in spec.datasets:
        splits = load_dataset(dataset.identity())
        if spec.attacks:
            try:
                targets[target_key(dataset)] = resolve_target(spec.target.label, splits)
            except ConfigError as exc:
                raise ConfigError(f"{exc.message} (dataset '{dataset.name}')", f"{spec.path} [target]") from None
        size = len(splits.train)
        for rate in sorted({attack.poison_rate for attack in spec.attacks}):
            actual = poison_count(rate, size) / size
            if abs(actual - rate) > ROUNDING_TOLERANCE * rate:
                warn(f"poison_rate {rate:g} of the {size} training images of dataset '{dataset.name}' rounds to "
                     f"{poison_count(rate, size)} poison(s), a rate of {actual:.4g}; results rows give it as poison_rate_actual")
    return targets


def plan_run(spec: BenchmarkSpec) -> Plan:
    """The plan a run executes: :func:`preflight` first, so its records hold the resolved targets."""
    return build_plan(spec, targets=preflight(spec))


def select_stages(plan: Plan, only: list[str] | None) -> set[str]:
    """Stage ids matching any ``--only`` pattern (kind, kind/key prefix, or a glob on the label), plus
    everything they depend on."""
    if not only:
        return set(plan.stages)
    chosen = matching(plan, only)
    if not chosen:
        raise ConfigError(f"--only {' '.join(only)} matches no stage; see `hashbench plan FILE` for kinds and labels")
    closure = set(chosen)
    frontier = set(chosen)
    while frontier:
        frontier = {d for sid in frontier for d in plan.stages[sid].deps} - closure
        closure |= frontier
    return closure


def matching(plan: Plan, patterns: list[str]) -> set[str]:
    """Stage ids whose kind equals, id starts with, or label glob-matches one of ``patterns``."""
    return {
        s.id for s in plan.ordered()
        if any(p == s.kind or s.id.startswith(p) or fnmatch.fnmatch(s.label, p) for p in patterns)
    }


def plan_status(plan: Plan, store: Store) -> dict[str, str]:
    return {s.id: ("cached" if store.is_done(s.kind, s.key) else "to run") for s in plan.ordered()}


def stages_to_run(plan: Plan, runner: StageRunner, selected: set[str], forced: set[str]) -> set[str]:
    """The selected stages a run computes: those not computed, the forced ones, and those whose cached copy
    fails its checksums together with every selected stage downstream of them (which a run recomputes)."""
    todo = set(forced)
    for sid in selected:
        if runner.verify_once(sid) is not None:
            todo.add(sid)
            if runner.store.stage_dir(*sid.split("/")).exists():
                todo |= plan.dependents(sid) & selected
    return todo


def run_benchmark(
    spec: BenchmarkSpec,
    *,
    executor: str | None = None,
    only: list[str] | None = None,
    force: list[str] | None = None,
    executor_options: dict | None = None,
    progress_bar: bool = True,
    echo=None,
) -> RunResult:
    """Plan ``spec``, then run the selected stages that are not cached with the chosen executor.
    ``executor_options`` (e.g. ``{"address": "auto"}`` from the CLI) override the file's."""
    echo = echo or (lambda message: print(message, file=sys.stderr))
    runner = StageRunner(spec.settings.results, spec.settings.device, log_fn=lambda m: None)
    # everything that can be refused is checked before the results folder is created
    plan = plan_run(spec)
    selected = select_stages(plan, only)
    forced = matching(plan, force) & selected if force else set()
    executor_name = executor or spec.settings.executor
    executor_cls = get_registry().get("executor", executor_name)
    executor_plugin = executor_cls(_executor_params(spec, executor_name, executor_options or {}))
    created = not runner.store.root.exists()
    runner.store.ensure_writable()
    runner.store.clean_temporaries()
    todo = stages_to_run(plan, runner, selected, forced)
    echo(f"hashbench: {len(selected)} stages, {len(selected) - len(todo)} cached, {len(todo)} to run "
         f"on {runner.device} -> {Path(spec.settings.results)}")
    from tqdm.auto import tqdm

    bar = tqdm(total=len(selected), desc="stages", disable=None if progress_bar else True, file=sys.stderr)

    def progress(stage, outcome: StageOutcome) -> None:
        bar.update(1)
        if outcome.status == "done":
            bar.write(f"  done    {stage.label} ({outcome.seconds:.1f}s)", file=sys.stderr)
            if outcome.rebuilt:
                bar.write(f"          recomputed because {outcome.rebuilt}", file=sys.stderr)
        elif outcome.status == "failed":
            bar.write(f"  FAILED  {stage.label}: {outcome.error.splitlines()[0]}", file=sys.stderr)

    started = time.perf_counter()
    try:
        outcomes = executor_plugin.execute(plan, runner, selected, forced, progress)
    except Exception:
        if created:  # e.g. Ray could not start: leave no empty results folder behind
            runner.store.remove_empty_folders()
        raise
    finally:
        bar.close()
    return RunResult(plan, outcomes, time.perf_counter() - started)


def _executor_params(spec: BenchmarkSpec, name: str, overrides: dict):
    """The file's ``executor_options`` (when the file names this executor) updated with ``overrides``."""
    options = dict(spec.settings.executor_options) if name == spec.settings.executor else {}
    return executor_params(get_registry(), name, options | overrides, f"{spec.path} [benchmark]")
