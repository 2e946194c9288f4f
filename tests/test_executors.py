"""The executor contract's check (hashbench/executors/check.py) passes the built-in local executor and
catches the ways an executor can break the contract."""

from __future__ import annotations

import re

import pytest

from hashbench.executors.check import check_executor
from hashbench.executors.local import LocalExecutor, run_guarded
from hashbench.plan import Plan
from hashbench.runner import StageOutcome
from hashbench.testing import ContractError


def test_the_local_executor_honours_the_contract():
    check_executor(LocalExecutor)


class _RunsEverything(LocalExecutor):
    """Runs every stage of the plan, selected or not."""

    name = "runs_everything"

    def execute(self, plan, runner, selected, force, progress):
        return super().execute(plan, runner, set(plan.stages), force, progress)


class _JoinFirst(LocalExecutor):
    """Runs the stage that reads two others before them."""

    name = "join_first"

    def execute(self, plan, runner, selected, force, progress):
        stages = sorted(plan.stages.items(), key=lambda item: item[1].label != "join")
        return super().execute(Plan(plan.spec, dict(stages)), runner, selected, force, progress)


class _IgnoresFailures(LocalExecutor):
    """Runs downstream of a failure."""

    name = "ignores_failures"

    def execute(self, plan, runner, selected, force, progress):
        outcomes = {}
        for stage in plan.ordered():
            if stage.id in selected:
                outcomes[stage.id] = run_guarded(runner, stage, stage.id in force)
                progress(stage, outcomes[stage.id])
        return outcomes


class _ForcesEverything(LocalExecutor):
    """Recomputes every stage."""

    name = "forces_everything"

    def execute(self, plan, runner, selected, force, progress):
        return super().execute(plan, runner, selected, set(selected), progress)


class _SwallowsCtrlC(LocalExecutor):
    """Catches KeyboardInterrupt."""

    name = "swallows_ctrl_c"

    def execute(self, plan, runner, selected, force, progress):
        try:
            return super().execute(plan, runner, selected, force, progress)
        except KeyboardInterrupt:
            return {sid: StageOutcome(sid, "failed", error="interrupted") for sid in selected}


@pytest.mark.parametrize("executor, rule", [
    (_RunsEverything, "returns an outcome for every selected stage and no other"),
    (_JoinFirst, "a stage runs after every selected stage it reads has finished"),
    (_IgnoresFailures, "what is downstream of a failure is 'skipped'"),
    (_ForcesEverything, "force is true exactly for the forced stages"),
    (_SwallowsCtrlC, "Ctrl-C (KeyboardInterrupt) in a stage stops the run"),
])
def test_a_broken_executor_is_named_with_the_rule_it_breaks(executor, rule):
    with pytest.raises(ContractError, match=re.escape(f"executor '{executor.name}' breaks the rule '") + ".*" + re.escape(rule)):
        check_executor(executor)
