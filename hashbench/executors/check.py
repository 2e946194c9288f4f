"""The conformance check of an executor plugin: the contract of ``Executor.execute`` (docs/plugins.md,
"Metric, Exporter, Executor") run on a small stage graph with a stand-in runner, in milliseconds.

    from hashbench.executors.check import check_executor

    def test_my_executor_honours_the_contract():
        check_executor(MyExecutor)

The stand-in runner records what ran, in which order and with which ``force``; one stage raises, as a
broken plugin would. So the check suits executors that call ``runner.run`` in this process (threads
included); an executor that rebuilds a ``StageRunner`` elsewhere (the ``ray`` one) is checked through its
scheduling on a real results folder instead (tests/test_ray.py). A broken rule raises
:class:`hashbench.testing.ContractError`.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..config import BenchmarkSettings, BenchmarkSpec, TargetSpec
from ..params import build_params
from ..plan import Plan
from ..records import Stage
from ..runner import StageOutcome
from ..store import Store


@dataclass(frozen=True, eq=False)
class _Step(Stage):
    """A stand-in stage: only its id, label and dependencies matter to an executor."""

    kind: ClassVar[str] = "evaluate"
    needs: tuple[Stage, ...] = ()

    def identity(self) -> dict[str, Any]:
        return {"label": self.label}

    def inputs(self) -> list[Stage]:
        return list(self.needs)


class _Runner:
    """Runs nothing: records each call, checks that the stage's selected inputs finished first, and raises
    for ``broken`` (as a plugin's bug would) or ``interrupted`` (as Ctrl-C does)."""

    def __init__(self, root: Path, selected: set[str], broken: str, interrupted: str | None = None):
        self.store, self.device = Store(root), "cpu"
        self.selected, self.broken, self.interrupted = selected, broken, interrupted
        self.calls: list[tuple[str, bool]] = []
        self.early: list[str] = []  # stages run before one of their selected inputs had finished
        self._finished: set[str] = set()
        self._lock = threading.Lock()

    def run(self, stage: Stage, force: bool = False) -> StageOutcome:
        with self._lock:
            self.calls.append((stage.id, force))
            if not set(stage.deps) & self.selected <= self._finished:
                self.early.append(stage.label)
        if stage.id == self.interrupted:
            raise KeyboardInterrupt
        if stage.id == self.broken:
            raise RuntimeError("a plugin's bug")
        with self._lock:
            self._finished.add(stage.id)
        return StageOutcome(stage.id, "done")


def _graph() -> tuple[Plan, dict[str, Stage]]:
    """first -> (left, right) -> join; first -> broken -> after_broken; lone; first -> unselected."""
    spec = BenchmarkSpec(Path("check.toml"), BenchmarkSettings(device="cpu"), [], [], TargetSpec(), [], [])
    plan = Plan(spec)
    steps: dict[str, Stage] = {}

    def add(label: str, *needs: str) -> None:
        steps[label] = plan.add(_Step(label, 0, tuple(steps[n] for n in needs)))

    add("first")
    add("left", "first")
    add("right", "first")
    add("join", "left", "right")
    add("broken", "first")
    add("after_broken", "broken")
    add("lone")
    add("unselected", "first")
    return plan, steps


def check_executor(cls: type, params: Any = None) -> None:
    """Run ``cls`` (built with ``params``, default: its default Params) on a small graph and check every
    rule of the executor contract; raise ContractError at the first one broken."""
    from ..testing import ContractError, check_params

    check_params(cls)
    who = f"executor '{cls.name}'"
    executor = cls(params if params is not None else build_params(cls.Params, {}, who))
    plan, steps = _graph()
    ids = {label: stage.id for label, stage in steps.items()}
    selected = {stage_id for label, stage_id in ids.items() if label != "unselected"}
    force = {ids["right"]}
    reported: list[tuple[str, StageOutcome]] = []

    def require(condition: bool, rule: str, detail: str = "") -> None:
        if not condition:
            raise ContractError(who, rule, detail)

    with tempfile.TemporaryDirectory() as root:
        runner = _Runner(Path(root), selected, broken=ids["broken"])
        outcomes = executor.execute(plan, runner, set(selected), set(force), lambda s, o: reported.append((s.id, o)))
        labels = {stage_id: label for label, stage_id in ids.items()}
        ran = [labels[stage_id] for stage_id, _ in runner.calls]
        require(isinstance(outcomes, dict) and set(outcomes) == selected,
                "execute returns an outcome for every selected stage and no other",
                f"got {sorted(labels.get(s, s) for s in outcomes) if isinstance(outcomes, dict) else outcomes!r}")
        require("unselected" not in ran, "only selected stages run", f"ran {ran}")
        require(sorted(ran) == sorted(set(ran)), "each stage runs once", f"ran {ran}")
        require("after_broken" not in ran and outcomes[ids["after_broken"]].status == "skipped",
                "what is downstream of a failure is 'skipped', not run", repr(outcomes[ids["after_broken"]]))
        require(not runner.early, "a stage runs after every selected stage it reads has finished",
                f"{runner.early} ran too early")
        require(outcomes[ids["broken"]].status == "failed" and bool(outcomes[ids["broken"]].error),
                "an exception of a stage becomes a 'failed' outcome with its error", repr(outcomes[ids["broken"]]))
        require(all(outcomes[ids[label]].status == "done" for label in ("first", "left", "right", "join", "lone")),
                "a failure stops only what is downstream of it", repr(outcomes))
        require(dict(runner.calls) == {stage_id: stage_id in force for stage_id in dict(runner.calls)},
                "force is true exactly for the forced stages", repr(runner.calls))
        require(sorted(stage_id for stage_id, _ in reported) == sorted(selected)
                and all(outcomes[stage_id] is outcome for stage_id, outcome in reported),
                "progress(stage, outcome) is called once per selected stage with the returned outcome",
                f"called for {[labels[s] for s, _ in reported]}")

        interrupted = _Runner(Path(root), selected, broken=ids["broken"], interrupted=ids["left"])
        try:
            executor.execute(plan, interrupted, set(selected), set(), lambda s, o: None)
        except KeyboardInterrupt:
            pass
        else:
            raise ContractError(who, "Ctrl-C (KeyboardInterrupt) in a stage stops the run", "execute returned")
