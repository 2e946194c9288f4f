"""The Ray executor: every stage is a Ray task, submitted as soon as the stages it reads have finished.

Tasks run :meth:`hashbench.runner.StageRunner.run`, exactly as the local executor does, against a results
folder every worker can reach (a shared filesystem on a cluster). A stage that trains asks Ray for a whole
GPU when the cluster has GPUs, the others for a fraction of one; without GPUs each asks for one CPU.
A failure skips what is downstream of it, as in the local executor. Each task uses the driver's torch
thread count, so float results, and hence the leaderboard, are identical to a local run.
``ray`` is imported only when this executor runs (``pip install 'hashbench[ray]'``).
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable

from ..api import Executor
from ..errors import ConfigError, HashbenchError
from ..params import param
from ..plan import Plan
from ..records import TRAINING_KINDS, Stage
from ..runner import StageOutcome, StageRunner
from .local import note_rebuilt, rebuilt_inputs, run_guarded


@dataclass(frozen=True)
class RayParams:
    """The `executor_options` table of `[benchmark]` when `executor = "ray"`."""

    address: str | None = param(None, "a Ray cluster to join (\"auto\": the one this machine belongs to); empty: start Ray locally")
    num_cpus: int | None = param(None, "CPUs of a locally started Ray (default: all); not used with `address`")
    num_gpus: int | None = param(None, "GPUs of a locally started Ray (default: all visible); not used with `address`")
    gpu_fraction: float = param(0.25, "share of a GPU asked for by a stage that does not train (poison, evaluate)")
    torch_threads: int = param(0, "torch threads per task; 0: the driver's count, which keeps results identical to `local`")

    def validate(self) -> None:
        if self.address is not None and (self.num_cpus is not None or self.num_gpus is not None):
            raise ValueError("num_cpus and num_gpus size a Ray started here; with `address` the cluster sets them")
        if not 0 < self.gpu_fraction <= 1:
            raise ValueError("gpu_fraction must be in (0, 1]")
        if self.torch_threads < 0:
            raise ValueError("torch_threads must be >= 0")


def import_ray():
    """The ``ray`` module, or a HashbenchError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise HashbenchError(
            "the ray executor needs Ray, which is not installed; install it with "
            "`pip install 'hashbench[ray]'` or run with `--executor local`"
        ) from None
    return ray


# ------------------------------------------------------------------------------------- DAG bookkeeping


class DagScheduler:
    """Which selected stages may start: a stage starts once every selected stage it reads has finished;
    a failure skips everything downstream of it. Pure bookkeeping, so it is tested without Ray."""

    def __init__(self, plan: Plan, selected: set[str], force: set[str]):
        self.plan = plan
        self.force = force
        self.waiting = {s.id: {d for d in s.deps if d in selected} for s in plan.ordered() if s.id in selected}
        self.running: set[str] = set()
        self.outcomes: dict[str, StageOutcome] = {}

    @property
    def finished(self) -> bool:
        return not self.waiting and not self.running

    def start_ready(self) -> list[tuple[Stage, bool, list[str]]]:
        """The stages whose inputs are all done, in plan order, each with whether it must be recomputed
        and its inputs rebuilt in this run; they count as running from now on."""
        ready = [sid for sid, deps in self.waiting.items() if deps <= self.outcomes.keys()]
        started = []
        for sid in ready:
            del self.waiting[sid]
            self.running.add(sid)
            stage = self.plan.stages[sid]
            stale = rebuilt_inputs(stage, self.outcomes)
            started.append((stage, sid in self.force or bool(stale), stale))
        return started

    def finish(self, outcome: StageOutcome) -> list[StageOutcome]:
        """Record a finished stage; when it failed, return the 'skipped' outcomes of its dependents."""
        self.running.discard(outcome.stage_id)
        self.outcomes[outcome.stage_id] = outcome
        if outcome.status != "failed":
            return []
        downstream = self.plan.dependents(outcome.stage_id)
        skipped = [StageOutcome(sid, "skipped", error="an upstream stage failed") for sid in self.waiting if sid in downstream]
        for skip in skipped:
            del self.waiting[skip.stage_id]
            self.outcomes[skip.stage_id] = skip
        return skipped


@dataclass
class Backend:
    """How :func:`run_dag` starts and collects stages: Ray tasks, or (in tests) a thread pool."""

    submit: Callable[[Stage, bool], Hashable]  # start a stage (force flag); returns a handle
    wait_any: Callable[[list[Hashable]], Iterable[Hashable]]  # blocks until some handles are done; returns them
    result: Callable[[Hashable, Stage], StageOutcome]  # the outcome of a finished handle
    cancel: Callable[[list[Hashable]], None]  # stop handles still running (Ctrl-C)


def run_dag(scheduler: DagScheduler, backend: Backend, progress) -> dict[str, StageOutcome]:
    """Submit every stage as soon as its inputs are done and collect outcomes until all have finished.
    On Ctrl-C the stages still running are cancelled (each removes its temporary folder) and the
    interrupt propagates."""
    in_flight: dict[Hashable, tuple[Stage, list[str]]] = {}
    try:
        while not scheduler.finished:
            for stage, force, stale in scheduler.start_ready():
                in_flight[backend.submit(stage, force)] = (stage, stale)
            for handle in backend.wait_any(list(in_flight)):
                stage, stale = in_flight.pop(handle)
                outcome = note_rebuilt(backend.result(handle, stage), stale)
                progress(stage, outcome)
                for skipped in scheduler.finish(outcome):
                    progress(scheduler.plan.stages[skipped.stage_id], skipped)
    except KeyboardInterrupt:
        backend.cancel(list(in_flight))
        raise
    return scheduler.outcomes


# ------------------------------------------------------------------------------------- Ray


def run_stage_task(results: str, device: str, stage: Stage, force: bool, threads: int, env: dict[str, str]) -> StageOutcome:
    """One stage on a Ray worker: the local executor's ``StageRunner.run``, with the driver's
    ``HASHBENCH_*`` environment and torch thread count (float reductions depend on the thread count)."""
    import torch

    os.environ.update(env)
    torch.set_num_threads(threads)
    return run_guarded(StageRunner(results, device), stage, force)


@dataclass(frozen=True)
class Placement:
    """Where tasks run: the device name a worker resolves, and what each kind of stage asks Ray for."""

    device: str
    gpus: bool
    gpu_fraction: float

    def resources(self, stage: Stage) -> dict[str, float]:
        if not self.gpus:
            return {"num_cpus": 1, "num_gpus": 0}
        return {"num_cpus": 1, "num_gpus": 1 if stage.kind in TRAINING_KINDS else self.gpu_fraction}


def placement(requested: str, cluster_gpus: float, gpu_fraction: float) -> Placement:
    """GPUs are used when the benchmark's device allows them and the cluster has some. A worker sees
    only the GPUs Ray gave it, so any ``cuda:N`` becomes ``cuda`` there."""
    if requested == "cpu" or (requested == "auto" and cluster_gpus == 0):
        return Placement("cpu", False, gpu_fraction)
    if cluster_gpus == 0:
        raise ConfigError(f"device '{requested}' asked for, but the Ray cluster has no GPU; use device = \"auto\" or \"cpu\"")
    return Placement("cuda", True, gpu_fraction)


def oversubscription_advice(threads: int, gpus: bool, explicit: bool) -> str | None:
    """What to say when CPU tasks inherit a thread count of several: each task is given one CPU and Ray
    runs as many side by side as there are CPUs, so the cores are oversubscribed, and OpenMP threads that
    spin while they wait for a core make that far slower than one thread a task (two 2-thread training
    stages on 2 cores: 2.5x slower than two 1-thread ones). None when the count was chosen, or stages run
    on GPUs."""
    if explicit or gpus or threads <= 1:
        return None
    return (f"each Ray task runs {threads} torch threads (the driver's count, which keeps results identical to "
            "`--executor local`) on the one CPU it is given, so side-by-side tasks oversubscribe the cores; "
            "executor_options = { torch_threads = 1 } is faster, with results that differ from a local run "
            "in the last bits (docs/running.md)")


class RayExecutor(Executor):
    """Runs each stage as a Ray task (locally, or on a cluster with `address = "auto"`)."""

    name = "ray"
    Params = RayParams
    # check_executor's stand-in runner cannot follow a stage to a Ray worker, which builds its own StageRunner
    testing_skip = {"check_executor": "stages run on Ray workers, each with its own StageRunner: "
                                      "its scheduling is checked on a real results folder by tests/test_ray.py"}

    def execute(self, plan: Plan, runner: StageRunner, selected: set[str], force: set[str], progress) -> dict[str, Any]:
        ray = import_ray()
        started_here = self._connect(ray)
        try:
            backend = self._backend(ray, plan, runner)
            return run_dag(DagScheduler(plan, selected, force), backend, progress)
        finally:
            if started_here:
                ray.shutdown()

    def _connect(self, ray) -> bool:
        """Join the configured cluster or start Ray here; False when Ray was already initialised."""
        if ray.is_initialized():
            return False
        options = self.params
        try:
            if options.address:
                ray.init(address=options.address, log_to_driver=True)
            else:
                ray.init(num_cpus=options.num_cpus, num_gpus=options.num_gpus, include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:  # what ray.init raises for a bad cluster
            where = f"the Ray cluster at {options.address!r}" if options.address else "a local Ray instance"
            raise HashbenchError(f"could not start or join {where}: {str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}; "
                                 "check `ray status`, or run without --address to start Ray here, or with --executor local") from None
        return True

    def _backend(self, ray, plan: Plan, runner: StageRunner) -> Backend:
        import torch

        where = placement(plan.spec.settings.device, ray.cluster_resources().get("GPU", 0), self.params.gpu_fraction)
        results = str(Path(runner.store.root).resolve())
        threads = self.params.torch_threads or torch.get_num_threads()
        advice = oversubscription_advice(threads, where.gpus, explicit=bool(self.params.torch_threads))
        if advice:
            runner.say(advice)
        env = {k: v for k, v in os.environ.items() if k.startswith("HASHBENCH_")}
        task = ray.remote(run_stage_task)

        def submit(stage: Stage, force: bool):
            return task.options(**where.resources(stage), name=stage.id).remote(results, where.device, stage, force, threads, env)

        def wait_any(refs: list) -> list:
            done, _ = ray.wait(refs, num_returns=1)
            return done

        def result(ref, stage: Stage) -> StageOutcome:
            try:
                return ray.get(ref)
            except Exception as exc:  # the worker died (killed, out of memory, node lost) after Ray's retries
                return StageOutcome(stage.id, "failed", error=f"the Ray task died: {exc.__class__.__name__}: {exc}\n"
                                                               f"{traceback.format_exc(limit=3)}")

        def cancel(refs: list) -> None:
            for ref in refs:
                ray.cancel(ref)  # a KeyboardInterrupt in the task: its temporary folder is removed
            if refs:
                ray.wait(refs, num_returns=len(refs), timeout=30)

        return Backend(submit, wait_any, result, cancel)
