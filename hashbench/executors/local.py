"""The default executor: stages run one after another in this process, in dependency order."""

from __future__ import annotations

import dataclasses
import traceback
from typing import Any

from ..api import Executor
from ..errors import HashbenchError
from ..plan import Plan
from ..records import Stage
from ..runner import StageOutcome, StageRunner


@dataclasses.dataclass(frozen=True)
class LocalParams:
    pass


def run_guarded(runner: StageRunner, stage: Stage, force: bool) -> StageOutcome:
    """``runner.run(stage)`` with any error turned into a failed outcome, so a bug in one plugin does not
    stop the matrix; Ctrl-C still stops the run."""
    try:
        return runner.run(stage, force=force)
    except HashbenchError as exc:
        return StageOutcome(stage.id, "failed", error=str(exc))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        return StageOutcome(stage.id, "failed", error=f"{exc.__class__.__name__}: {exc}\n{traceback.format_exc(limit=6)}")


def rebuilt_inputs(stage: Stage, outcomes: dict[str, StageOutcome]) -> list[str]:
    """Inputs of ``stage`` rebuilt in this run because their cached copy was rejected: a cached result of
    ``stage`` was made from the rejected copy, so it is recomputed too."""
    return [dep for dep in stage.deps if dep in outcomes and outcomes[dep].rebuilt]


def note_rebuilt(outcome: StageOutcome, stale: list[str]) -> StageOutcome:
    """Mark an outcome recomputed because of a rebuilt input, so the stages after it are recomputed too."""
    if stale and outcome.status == "done" and not outcome.rebuilt:
        outcome.rebuilt = f"its input {stale[0]} was rebuilt"
    return outcome


def run_in_order(plan: Plan, runner: StageRunner, selected: set[str], force: set[str], progress) -> dict[str, StageOutcome]:
    """Run ``selected`` stages in plan order; a failure skips everything downstream of it."""
    outcomes: dict[str, StageOutcome] = {}
    blocked: set[str] = set()
    for stage in plan.ordered():
        if stage.id not in selected:
            continue
        if stage.id in blocked:
            outcomes[stage.id] = StageOutcome(stage.id, "skipped", error="an upstream stage failed")
            progress(stage, outcomes[stage.id])
            continue
        stale = rebuilt_inputs(stage, outcomes)
        outcome = note_rebuilt(run_guarded(runner, stage, stage.id in force or bool(stale)), stale)
        outcomes[stage.id] = outcome
        if outcome.status == "failed":
            blocked |= plan.dependents(stage.id)
        progress(stage, outcome)
    return outcomes


class LocalExecutor(Executor):
    """Runs every stage in this process, one at a time (the default)."""

    name = "local"
    Params = LocalParams

    def execute(self, plan: Plan, runner: StageRunner, selected: set[str], force: set[str], progress) -> dict[str, Any]:
        return run_in_order(plan, runner, selected, force, progress)


