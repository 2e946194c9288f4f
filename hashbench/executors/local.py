"""The default executor: stages run one after another in this process, in dependency order."""

from __future__ import annotations

import dataclasses
import traceback
from typing import Any

from ..api import Executor
from ..errors import HashbenchError
from ..plan import Plan
from ..runner import StageOutcome, StageRunner


@dataclasses.dataclass(frozen=True)
class LocalParams:
    pass


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
        try:
            outcome = runner.run(stage, force=stage.id in force)
        except HashbenchError as exc:
            outcome = StageOutcome(stage.id, "failed", error=str(exc))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a bug in one plugin must not stop the matrix
            outcome = StageOutcome(stage.id, "failed", error=f"{exc.__class__.__name__}: {exc}\n{traceback.format_exc(limit=6)}")
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


