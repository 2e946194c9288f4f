"""Stage bodies read their own typed record and their inputs' files: evaluate reads no ancestor's config and
builds no attack or defense, a purifier runs once (in defend), and a plan built without its targets refuses
to run an attack instead of guessing one."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import write_benchmark
from hashbench import artifacts
from hashbench.artifacts import PurifiedCodes, TriggeredQueries
from hashbench.benchmark import run_benchmark
from hashbench.config import load_spec
from hashbench.errors import StageError
from hashbench.evaluation import encode_tensor
from hashbench.loading import instantiate
from hashbench.plan import build_plan
from hashbench.report import collect_rows
from hashbench.runner import StageRunner
from hashbench.stages import STAGE_FUNCTIONS
from hashbench.stages.common import load_model
from hashbench.store import Store

BODY = '[[attack]]\nname = "badnets"\npoison_rate = 0.1\n\n[[defense]]\nname = "jpeg"\nquality = 30'


@pytest.fixture
def spec(tmp_path):
    return load_spec(write_benchmark(
        tmp_path, name="records", dataset=dict(name="synthetic", image_size=32, num_classes=2, train_per_class=12,
                                               query_per_class=4, database_per_class=24),
        bits=16, epochs=1, width=8, body=BODY))


def _run(spec, **options):
    result = run_benchmark(spec, progress_bar=False, echo=lambda m: None, **options)
    assert not result.failures, [o.error for o in result.failures]
    rows = collect_rows(spec.settings.results, [s.key for s in result.plan.evaluations()])
    return result, rows.sort_values(["attack", "defense"]).reset_index(drop=True)


def test_a_purifier_runs_once_in_defend_and_evaluate_reads_its_codes(spec, monkeypatch):
    jpeg = instantiate("defense", {"name": "jpeg", "params": {"quality": 30}})
    original = type(jpeg).purify
    running: list[str] = []  # the kind of the stage being run
    purified_in: list[str] = []
    for kind, body in list(STAGE_FUNCTIONS.items()):
        def wrapped(runner, stage, writer, body=body, kind=kind):
            running.append(kind)
            return body(runner, stage, writer)
        monkeypatch.setitem(STAGE_FUNCTIONS, kind, wrapped)

    def purify(self, images):
        purified_in.append(running[-1])
        return original(self, images)

    monkeypatch.setattr(type(jpeg), "purify", purify)
    result, rows = _run(spec)
    assert "evaluate" in running and purified_in and set(purified_in) == {"defend"}

    defend = next(s for s in result.plan.ordered() if s.kind == "defend" and s.role == "purify")
    runner = StageRunner(spec.settings.results, "cpu")
    stored = artifacts.load(runner.store, defend.id, PurifiedCodes)
    triggered = artifacts.load(runner.store, defend.attack.id, TriggeredQueries)
    victim = load_model(runner, defend.backdoored)
    expected = encode_tensor(victim, original(jpeg, triggered.images), torch.device("cpu"))
    assert torch.equal(stored.triggered_codes(), expected)
    assert len(stored.query_codes()) == 8 and rows.loc[rows["defense"] == "jpeg", "t_map"].notna().all()


def test_evaluate_reads_no_ancestor_config(spec):
    """Blank the config every input stage's manifest records: evaluations recomputed from the stored files and
    their own records give the same rows."""
    first, before = _run(spec)
    store = Store(spec.settings.results)
    for stage in first.plan.ordered():
        if stage.kind != "evaluate":
            path = store.stage_dir(stage.kind, stage.key) / "manifest.json"
            manifest = json.loads(path.read_text())
            manifest["config"] = {}
            path.write_text(json.dumps(manifest))
    again, after = _run(spec, force=["evaluate"])
    assert again.count("done") == len(first.plan.evaluations())
    metrics = [c for c in before.columns if c.startswith(("t_map", "clean_map", "map_", "delta_", "poison_"))]
    assert metrics and after[metrics].equals(before[metrics])
    assert after[["attack", "defense", "target", "poison_rate", "victim_params"]].equals(
        before[["attack", "defense", "target", "poison_rate", "victim_params"]])


def test_a_plan_without_its_target_lists_keys_but_runs_no_attack(spec):
    plan = build_plan(spec)  # as `hashbench plan` builds it: no dataset loaded, no target resolved
    attack = next(s for s in plan.ordered() if s.kind == "attack")
    assert attack.target is None and attack.key
    with pytest.raises(StageError, match="plan_run"):
        StageRunner(spec.settings.results, "cpu").run(attack)
