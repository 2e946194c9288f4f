"""The Ray executor: its DAG scheduling (fast, on a thread pool), its options and errors, and a real local
Ray runtime that must reproduce the local executor's results bit for bit."""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import pandas as pd
import pytest
import torch

from hashbench.benchmark import run_benchmark
from hashbench.cli import main as cli_main
from hashbench.config import load_spec
from hashbench.errors import ConfigError, HashbenchError
from hashbench.executors.ray import Backend, DagScheduler, oversubscription_advice, placement, run_dag
from hashbench.plan import Plan, build_plan
from hashbench.records import Stage
from hashbench.runner import StageOutcome
from test_faults import board, one_thread, tiny_text  # noqa: F401 (one_thread: an autouse fixture)


def write_spec(folder: Path, extra: str = "", seeds: str = "[0]") -> Path:
    path = folder / "bench.toml"
    text = tiny_text(folder / "results").replace("seeds = [0]", f"seeds = {seeds}")
    path.write_text(text.replace('device = "cpu"\n', f'device = "cpu"\n{extra}\n'))
    return path


# ------------------------------------------------------------------------- DAG scheduling (no Ray)


class PoolBackend:
    """A stand-in for Ray: stages run on threads; records when each started and ended."""

    def __init__(self, outcome_for, workers: int = 3):
        self.pool = ThreadPoolExecutor(workers)
        self.outcome_for = outcome_for
        self.spans: dict[str, tuple[float, float]] = {}
        self.forced: dict[str, bool] = {}
        self.lock = threading.Lock()

    def _run(self, stage: Stage, force: bool) -> StageOutcome:
        started = time.monotonic()
        time.sleep(0.05)
        outcome = self.outcome_for(stage)
        with self.lock:
            self.spans[stage.id] = (started, time.monotonic())
            self.forced[stage.id] = force
        return outcome

    def backend(self) -> Backend:
        return Backend(
            submit=lambda stage, force: self.pool.submit(self._run, stage, force),
            wait_any=lambda futures: wait(futures, return_when=FIRST_COMPLETED).done,
            result=lambda future, stage: future.result(),
            cancel=lambda futures: [f.cancel() for f in futures],
        )


@pytest.fixture
def plan(tmp_path) -> Plan:
    return build_plan(load_spec(write_spec(tmp_path, seeds="[0, 1]")))


def schedule(plan: Plan, outcome_for, force: set[str] = frozenset()):
    pool = PoolBackend(outcome_for)
    reported: list[str] = []
    outcomes = run_dag(DagScheduler(plan, set(plan.stages), set(force)), pool.backend(),
                       lambda stage, outcome: reported.append(stage.id))
    return pool, outcomes, reported


def test_dag_runs_each_stage_after_its_inputs_and_independent_stages_together(plan):
    pool, outcomes, reported = schedule(plan, lambda s: StageOutcome(s.id, "done"))
    assert sorted(reported) == sorted(plan.stages) and all(o.status == "done" for o in outcomes.values())
    for stage in plan.ordered():
        for dep in stage.deps:
            assert pool.spans[dep][1] <= pool.spans[stage.id][0], f"{stage.id} started before {dep} ended"
    overlapping = max(sum(1 for a, b in pool.spans.values() if a <= start < b) for start, _ in pool.spans.values())
    assert overlapping >= 2, "stages that do not depend on each other run at the same time"


def test_dag_failure_skips_exactly_the_dependents_like_the_local_executor(plan):
    attack = next(s for s in plan.ordered() if s.kind == "attack" and s.config["seed"] == 0)
    pool, outcomes, reported = schedule(
        plan, lambda s: StageOutcome(s.id, "failed", error="boom") if s.id == attack.id else StageOutcome(s.id, "done"))
    skipped = {sid for sid, o in outcomes.items() if o.status == "skipped"}
    assert skipped == plan.dependents(attack.id)
    assert not skipped & pool.spans.keys(), "a skipped stage never starts"
    assert sorted(reported) == sorted(plan.stages), "every stage is reported once, skipped ones included"


def test_dag_recomputes_what_reads_a_rebuilt_stage(plan):
    clean = next(s for s in plan.ordered() if s.kind == "clean_victim" and s.config["seed"] == 1)
    pool, outcomes, _ = schedule(
        plan, lambda s: StageOutcome(s.id, "done", rebuilt="file model.pt is missing" if s.id == clean.id else None))
    forced = {sid for sid, f in pool.forced.items() if f}
    assert forced == plan.dependents(clean.id)
    assert all(outcomes[sid].rebuilt == f"its input {clean.id} was rebuilt" for sid in plan.dependents(clean.id) if clean.id in plan.stages[sid].deps)


# ------------------------------------------------------------------------- options and errors


def test_without_ray_installed_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    spec = load_spec(write_spec(tmp_path))
    with pytest.raises(HashbenchError, match=r"pip install 'hashbench\[ray\]'"):
        run_benchmark(spec, executor="ray", progress_bar=False, echo=lambda m: None)


def test_executor_options_are_validated(tmp_path, capsys):
    path = write_spec(tmp_path, 'executor = "ray"\nexecutor_options = { adress = "auto" }')
    with pytest.raises(ConfigError, match="Did you mean 'address'"):
        run_benchmark(load_spec(path), progress_bar=False, echo=lambda m: None)
    path = write_spec(tmp_path, 'executor = "ray"\nexecutor_options = { address = "auto", num_cpus = 2 }')
    with pytest.raises(ConfigError, match="with `address` the cluster sets them"):
        run_benchmark(load_spec(path), progress_bar=False, echo=lambda m: None)
    assert cli_main(["run", str(write_spec(tmp_path)), "--address", "auto"]) == 2
    assert "--executor ray" in capsys.readouterr().err


def test_placement_gives_training_a_whole_gpu_and_evaluation_a_share(plan):
    stages = {s.kind: s for s in plan.ordered()}
    kinds = {k: stages[k] for k in ("clean_victim", "victim", "defend", "poison", "evaluate")}
    on_gpus = placement("auto", 4, 0.25)
    assert on_gpus.device == "cuda"
    assert [on_gpus.resources(kinds[k])["num_gpus"] for k in kinds] == [1, 1, 1, 0.25, 0.25]
    assert placement("cuda:1", 1, 0.5).device == "cuda"  # Ray makes the assigned GPU the only one visible
    for requested, gpus in (("auto", 0), ("cpu", 4)):
        assert placement(requested, gpus, 0.25).resources(kinds["victim"]) == {"num_cpus": 1, "num_gpus": 0}
    with pytest.raises(ConfigError, match="has no GPU"):
        placement("cuda", 0, 0.25)


# ------------------------------------------------------------------------- a real Ray runtime


def stage_files(results: Path) -> dict[str, tuple[dict, dict]]:
    """Per stage: the SHA-256 of each file and every metric that is not a timing."""
    out = {}
    for manifest_path in (results / "stages").glob("*/*/manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        metrics = {k: v for k, v in manifest["metrics"].items() if "second" not in k}
        out[f"{manifest['kind']}/{manifest['key']}"] = ({n: f["sha256"] for n, f in manifest["files"].items()}, metrics)
    return out


@pytest.mark.slow  # a Ray runtime starts in ~15 s and the run takes ~40-60 s on 2 busy cores
def test_ray_reproduces_the_local_executor_bit_for_bit(tmp_path):
    pytest.importorskip("ray", reason="install the ray extra: pip install '.[ray]'")
    local_dir, ray_dir = tmp_path / "local", tmp_path / "ray"
    local_dir.mkdir(), ray_dir.mkdir()
    timings = {}
    for folder, executor in ((local_dir, "local"), (ray_dir, "ray")):
        options = 'executor_options = { num_cpus = 2 }' if executor == "ray" else ""
        spec = load_spec(write_spec(folder, f'executor = "{executor}"\n{options}'))
        started = time.perf_counter()
        result = run_benchmark(spec, progress_bar=False, echo=lambda m: None)
        timings[executor] = time.perf_counter() - started
        assert not result.failures and result.count("done") == len(result.plan.stages)
    print(f"local {timings['local']:.1f}s, ray {timings['ray']:.1f}s (torch threads {torch.get_num_threads()})")
    local, ray = stage_files(local_dir / "results"), stage_files(ray_dir / "results")
    assert local.keys() == ray.keys() and local == ray
    pd.testing.assert_frame_equal(board(local_dir / "results"), board(ray_dir / "results"))


def test_cpu_tasks_that_inherit_several_threads_are_advised_to_take_one():
    advice = oversubscription_advice(2, gpus=False, explicit=False)
    assert advice and "torch_threads = 1" in advice and "2 torch threads" in advice
    assert oversubscription_advice(1, gpus=False, explicit=False) is None  # one thread a task: nothing to say
    assert oversubscription_advice(8, gpus=False, explicit=True) is None  # the user chose the count
    assert oversubscription_advice(8, gpus=True, explicit=False) is None  # stages run on GPUs
