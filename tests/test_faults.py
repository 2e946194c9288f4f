"""A matrix that survives faults: killed and interrupted runs, concurrent runs, corrupt artifacts,
non-finite losses, a full disk and an unwritable results folder. Every fault is real (real processes,
real signals, real files); only the full disk is simulated, by a write that stops half-way."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch

from hashbench import HashMethod, hookimpl, param
from hashbench.benchmark import run_benchmark
from hashbench.cli import main as cli_main
from hashbench.config import load_spec
from hashbench.errors import StoreError
from hashbench.plan import Plan
from hashbench.plugins import Registry, get_registry, reset_registry
from hashbench.report import collect_rows, leaderboard
from hashbench.runner import StageRunner
from hashbench.store import StageWriter, Store

REPO = Path(__file__).resolve().parent.parent


def tiny_text(results: Path, method: str = '"csq"', attack: bool = True, epochs: int = 2) -> str:
    """The smallest benchmark that has every stage kind: 2 epochs on 200 training images."""
    return f"""
[benchmark]
name = "faults"
seeds = [0]
device = "cpu"
results = "{results}"

[dataset]
name = "synthetic"
image_size = 32
train_per_class = 20
query_per_class = 5
database_per_class = 30

[victim]
method = {method}
backbone = "convnet"
bits = 16
epochs = {epochs}
backbone_params.convnet = {{ width = 16 }}

[target]
label = "class_0"
""" + ('[[attack]]\nname = "badnets"\npoison_rate = 0.1\n' if attack else "")


def write_spec(folder: Path, results: Path, **kwargs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench.toml"
    path.write_text(tiny_text(results, **kwargs))
    return path


def run(path: Path, **kwargs):
    return run_benchmark(load_spec(path), progress_bar=False, echo=lambda m: None, **kwargs)


def board(results: Path) -> pd.DataFrame:
    """The leaderboard without timings and memory (which differ between any two runs)."""
    frame = leaderboard(collect_rows(results))
    timing = [c for c in frame.columns if "second" in c or "memory" in c]
    return frame.drop(columns=timing).sort_values(["attack", "defense"]).reset_index(drop=True)


@dataclass
class Reference:
    """An uninterrupted run of the tiny benchmark: the leaderboard every faulty run must reproduce."""

    results: Path
    plan: Plan
    board: pd.DataFrame

    def stage(self, kind: str):
        return next(s for s in self.plan.ordered() if s.kind == kind)

    def copy_without(self, dest: Path, kind: str) -> Path:
        """A copy of the results lacking the ``kind`` stage and everything downstream of it."""
        shutil.copytree(self.results, dest)
        stage = self.stage(kind)
        for sid in {stage.id} | self.plan.dependents(stage.id):
            shutil.rmtree(dest / "stages" / sid)
        return dest


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one torch thread is faster than several on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    folder = tmp_path_factory.mktemp("reference")
    path = write_spec(folder, folder / "results")
    result = run(path)
    assert not result.failures
    return Reference(folder / "results", result.plan, board(folder / "results"))


def statuses(result) -> dict[str, str]:
    return {sid: o.status for sid, o in result.outcomes.items()}


def _niced_with_default_sigint() -> None:
    os.nice(10)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(path: Path, *extra: str) -> subprocess.Popen:
    """``hashbench run`` in its own process, as a user would start it."""
    # niced: on a busy machine the polling test process must notice a stage's temporary folder while
    # the stage is still running, not after the run has finished. SIGINT is reset to its default: a
    # test session started in the background (`cmd &` in a script) ignores it, and Python would then
    # never raise KeyboardInterrupt in the child
    return subprocess.Popen([sys.executable, "-m", "hashbench.cli", "run", str(path), "-q", "--no-report", *extra], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"OMP_NUM_THREADS": "1"}, preexec_fn=_niced_with_default_sigint)


def wait_for_temporary(proc: subprocess.Popen, folder: Path, timeout: float = 120) -> None:
    """Block until a stage's temporary folder appears under ``folder``: the stage is being written."""
    deadline = time.monotonic() + timeout
    while not list(folder.glob(".tmp-*")):
        assert proc.poll() is None, f"the run ended before writing {folder}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no temporary folder appeared in {folder}"
        time.sleep(0.02)


def temporaries(results: Path) -> list[Path]:
    return list((results / "stages").glob("*/.tmp-*"))


# ----------------------------------------------------------------------------------------------- tests


def test_sigkill_mid_write_leaves_no_finished_stage_and_resume_recomputes_only_the_rest(reference, tmp_path):
    results = reference.copy_without(tmp_path / "results", "victim")
    path = write_spec(tmp_path, results)
    victim = reference.stage("victim")
    proc = start_cli(path)
    wait_for_temporary(proc, results / "stages" / "victim")
    proc.send_signal(signal.SIGKILL)
    proc.wait()  # reaped, so its pid is no longer alive

    assert temporaries(results), "the killed run left its temporary folder (nothing cleaned it up)"
    assert not Store(results).is_done("victim", victim.key), "a killed stage must not look finished"

    resumed = run(path)
    downstream = {victim.id} | reference.plan.dependents(victim.id)
    assert {sid for sid, s in statuses(resumed).items() if s == "done"} == downstream
    assert all(s == "cached" for sid, s in statuses(resumed).items() if sid not in downstream)
    assert not temporaries(results)
    pd.testing.assert_frame_equal(board(results), reference.board)


def test_two_concurrent_runs_compute_each_stage_once(reference, tmp_path):
    results = tmp_path / "results"
    path = write_spec(tmp_path, results)
    procs = [start_cli(path), start_cli(path)]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs

    computed = [line.split(None, 1)[1].rsplit(" (", 1)[0]
                for _, err in outputs for line in err.splitlines() if line.startswith("  done")]
    labels = sorted(s.label for s in reference.plan.ordered())
    assert sorted(computed) == labels, "every stage is computed exactly once over both runs"
    pd.testing.assert_frame_equal(board(results), reference.board)


def test_corrupt_artifact_is_reported_and_recomputed_with_its_dependents(reference, tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(reference.results, results)
    victim = reference.stage("victim")
    model = results / "stages" / victim.id / "model.pt"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # truncated
    path = write_spec(tmp_path, results)

    # A stage never computes from a damaged input, even one it did not check itself.
    evaluate = next(s for s in reference.plan.evaluations() if victim.id in s.deps)
    with pytest.raises(StoreError, match=f"input {victim.id} .*model.pt does not match its checksum"):
        StageRunner(results, "cpu").run(evaluate, force=True)

    rerun = run_benchmark(load_spec(path), progress_bar=False)
    outcomes = rerun.outcomes
    assert "model.pt does not match its checksum" in outcomes[victim.id].rebuilt
    assert "model.pt does not match its checksum" in capsys.readouterr().err
    downstream = {victim.id} | reference.plan.dependents(victim.id)
    assert {sid for sid, o in outcomes.items() if o.status == "done"} == downstream
    assert all(outcomes[sid].rebuilt for sid in downstream)
    assert list((results / "stages" / "victim").glob(".broken-*")), "the damaged copy is kept aside for inspection"
    assert Store(results).verify("victim", victim.key) is None
    pd.testing.assert_frame_equal(board(results), reference.board)


@dataclass(frozen=True)
class NanParams:
    after: int = param(5, "steps before the loss becomes NaN")


class NanLoss(HashMethod):
    """A hashing objective that turns NaN after a few steps (a diverging training run)."""

    name = "nanloss"
    Params = NanParams

    def setup(self, setup) -> None:
        self.steps = 0

    def loss(self, z: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        loss = (z - 1).pow(2).mean()
        return loss * float("nan") if self.steps > self.params.after else loss


class NanPlugin:
    @hookimpl
    def register_methods(self, register):
        register(NanLoss)


@pytest.fixture
def nan_method():
    pm = get_registry().pm
    plugin = NanPlugin()
    pm.register(plugin)
    reset_registry(Registry(pm))
    yield
    pm.unregister(plugin)
    reset_registry()


def test_non_finite_loss_fails_that_stage_naming_stage_and_step_and_the_rest_go_on(nan_method, tmp_path):
    path = write_spec(tmp_path, tmp_path / "results", method='["nanloss", "csq"]', attack=False)
    result = run(path)
    by_label = {result.plan.stages[sid].label: o for sid, o in result.outcomes.items()}
    failed = by_label["clean victim synthetic nanloss/convnet/16b seed=0"]
    assert failed.status == "failed"
    # 200 images in batches of 64: 4 steps per epoch, so step 5 (counted from 0) is in epoch 2
    assert "clean victim synthetic nanloss/convnet/16b seed=0" in failed.error
    assert "non-finite at epoch 2, step 5" in failed.error
    assert by_label["evaluate clean synthetic nanloss/convnet/16b seed=0"].status == "skipped"
    assert by_label["clean victim synthetic csq/convnet/16b seed=0"].status == "done"
    assert by_label["evaluate clean synthetic csq/convnet/16b seed=0"].status == "done"
    assert len(list((tmp_path / "results" / "stages" / "clean_victim").iterdir())) == 1  # csq only, no leftovers


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    # 500 epochs: the first stage runs for a minute, so the signal lands inside it however late this
    # (possibly busy) test process notices its temporary folder
    results = tmp_path / "results"
    path = write_spec(tmp_path, results, epochs=500)
    proc = start_cli(path)
    wait_for_temporary(proc, results / "stages" / "clean_victim")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in err and "again to resume" in err
    assert not temporaries(results), "Ctrl-C leaves no half-written stage"
    assert not [p for p in (results / "stages" / "clean_victim").iterdir() if not p.name.startswith(".")]


def test_only_selects_stages_and_what_they_need_and_force_redoes_them(reference, tmp_path):
    results = tmp_path / "only"
    path = write_spec(tmp_path, results)
    assert cli_main(["run", str(path), "-q", "--only", "poison"]) == 0
    computed = {p.parent.name + "/" + p.name for p in (results / "stages").glob("*/*")}
    assert computed == {reference.stage("attack").id, reference.stage("poison").id}

    copy = tmp_path / "forced"
    shutil.copytree(reference.results, copy)
    forced = run(write_spec(tmp_path / "f", copy), force=["victim"])
    assert {sid for sid, s in statuses(forced).items() if s == "done"} == {reference.stage("victim").id}
    assert len(forced.outcomes) == len(reference.plan.stages)


def test_results_stored_before_query_codes_were_cached_evaluate_the_same(reference, tmp_path):
    """Model stages now also store the clean query codes; older stages without them still evaluate,
    by encoding the queries again, to the same numbers."""
    import json

    results = tmp_path / "old"
    shutil.copytree(reference.results, results)
    for kind in ("clean_victim", "victim"):
        folder = results / "stages" / reference.stage(kind).id
        assert (folder / "query_codes.pt").is_file()
        (folder / "query_codes.pt").unlink()
        manifest = json.loads((folder / "manifest.json").read_text())
        del manifest["files"]["query_codes.pt"]
        (folder / "manifest.json").write_text(json.dumps(manifest))
    rerun = run(write_spec(tmp_path / "spec", results), force=["evaluate"])
    assert not rerun.failures
    assert {s for s in statuses(rerun).values()} == {"done", "cached"}
    pd.testing.assert_frame_equal(board(results), reference.board)


def test_disk_full_mid_write_fails_clearly_and_corrupts_nothing(reference, tmp_path, monkeypatch):
    results = reference.copy_without(tmp_path / "results", "poison")
    path = write_spec(tmp_path, results)
    save = StageWriter.save

    def fill_disk(writer: StageWriter, name: str, obj) -> None:
        save(writer, name, obj)
        if writer.dir.parent.name == "poison":  # half of the file reaches the disk, then it is full
            with open(writer.path(name), "r+b") as handle:
                handle.truncate(handle.seek(0, os.SEEK_END) // 2)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(StageWriter, "save", fill_disk)
    result = run(path)
    poison = reference.stage("poison")
    assert "disk holding" in result.outcomes[poison.id].error and "is full" in result.outcomes[poison.id].error
    assert all(result.outcomes[sid].status == "skipped" for sid in reference.plan.dependents(poison.id))
    assert not temporaries(results) and not (results / "stages" / poison.id).exists()
    cached = [sid.split("/") for sid, o in result.outcomes.items() if o.status == "cached"]
    assert cached and all(Store(results).verify(kind, key) is None for kind, key in cached)

    monkeypatch.undo()
    assert not run(path).failures
    pd.testing.assert_frame_equal(board(results), reference.board)


def test_unwritable_results_folder_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = write_spec(tmp_path, blocker / "results")
    assert cli_main(["run", str(path), "-q"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err

    denied = Path("/sys/hashbench-test-results")  # sysfs refuses new folders, even to root
    try:
        denied.mkdir()
    except PermissionError:
        pass
    else:  # pragma: no cover - an unusual system
        denied.rmdir()
        pytest.skip("/sys accepts new folders here")
    assert cli_main(["run", str(path), "-q", "--results", str(denied)]) == 2
    assert "permission denied" in capsys.readouterr().err


def test_results_rows_give_the_poison_rate_the_poisons_really_are(reference):
    """poison_rate is rounded to whole images; each attacked row also gives the real rate (issue 17)."""
    frame = collect_rows(reference.results)
    attacked = frame[frame["attack"] != "(clean)"]
    assert len(attacked) and attacked["poison_count"].notna().all()
    # 10 classes x 20 training images
    assert (attacked["poison_rate_actual"] == attacked["poison_count"] / 200).all()
    assert attacked["poison_rate_actual"].tolist() == [20 / 200] * len(attacked)
