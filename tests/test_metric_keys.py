"""Metric plugins are part of the evaluate stages' key: one installed after a run recomputes only the
evaluations, and every row gets its column. A metric's parameters are set by a [metric.NAME] table of the
benchmark file and enter the key."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from conftest import write_benchmark
from hashbench import Metric, hookimpl, param
from hashbench.benchmark import plan_status, run_benchmark
from hashbench.config import load_spec
from hashbench.errors import ConfigError
from hashbench.plan import build_plan
from hashbench.plugins import Registry, make_manager, reset_registry
from hashbench.report import collect_rows, load_results
from hashbench.store import Store


class QueryCount(Metric):
    """The number of queries and of database items (a test metric with values known in advance)."""

    name = "query_count_for_test"

    def compute(self, query_codes, db_codes, query_labels, db_labels, topk):
        return {"n_queries": float(len(query_codes)), "n_database": float(len(db_codes))}


@dataclass(frozen=True)
class _Scale:
    scale: float = param(1.0, "what the query count is multiplied by")


class ScaledQueryCount(Metric):
    """The number of queries times ``scale`` (a test metric with a parameter)."""

    name = "scaled_count_for_test"
    Params = _Scale

    def compute(self, query_codes, db_codes, query_labels, db_labels, topk):
        return {"scaled_queries": float(len(query_codes)) * self.params.scale}


class InstallsQueryCount:
    @hookimpl
    def register_metrics(self, register):
        register(QueryCount)


class InstallsScaledQueryCount:
    @hookimpl
    def register_metrics(self, register):
        register(ScaledQueryCount)


# 2 classes x 4 queries, 2 x 24 database items: the metric's values are 8 and 48 in every row


@pytest.fixture
def spec(tmp_path):
    return load_spec(write_benchmark(
        tmp_path, name="metric-keys", dataset=dict(name="synthetic", image_size=32, num_classes=2, train_per_class=12,
                                                   query_per_class=4, database_per_class=24),
        bits=16, epochs=1, width=8, body='[[attack]]\nname = "badnets"\npoison_rate = 0.1\n\n[[defense]]\nname = "jpeg"\nquality = 50'))


@pytest.fixture
def restore_registry():
    yield
    reset_registry()


@pytest.fixture
def scaled_installed(restore_registry):
    pm = make_manager()
    pm.register(InstallsScaledQueryCount(), name="scaled_count_for_test")
    reset_registry(Registry(pm))


def _rows(spec, result):
    return collect_rows(spec.settings.results, [s.key for s in result.plan.evaluations()])


def test_a_metric_plugin_installed_after_a_run_adds_its_column_recomputing_only_evaluations(spec, restore_registry):
    first = run_benchmark(spec, progress_bar=False, echo=lambda m: None)
    assert not first.failures and first.count("cached") == 0
    assert "n_queries" not in _rows(spec, first)

    pm = make_manager()
    pm.register(InstallsQueryCount(), name="query_count_for_test")
    reset_registry(Registry(pm))
    plan = build_plan(spec)
    to_run = {sid for sid, state in plan_status(plan, Store(spec.settings.results)).items() if state != "cached"}
    assert to_run and {plan.stages[sid].kind for sid in to_run} == {"evaluate"}
    assert to_run == {s.id for s in plan.evaluations()}

    second = run_benchmark(spec, progress_bar=False, echo=lambda m: None)
    assert not second.failures
    assert {o.stage_id for o in second.outcomes.values() if o.status == "done"} == to_run
    rows = _rows(spec, second)
    assert len(rows) == 3  # the clean row, badnets x none (always planned) and badnets x jpeg
    assert rows["n_queries"].tolist() == [8.0] * 3 and rows["n_database"].tolist() == [48.0] * 3
    # attacked rows also score the clean model with every metric
    assert rows.loc[rows["attack"] == "badnets", "clean_model_n_queries"].tolist() == [8.0] * 2
    # the first run's rows are superseded (same rows, older keys): a report reads 3 rows, not 6 "seeds"
    assert len(load_results(spec.settings.results)) == 3


def _metric_spec(tmp_path, metric_table: str, file: str = "bench.toml"):
    return load_spec(write_benchmark(
        tmp_path, file, name="metric-params", dataset=dict(name="synthetic", image_size=32, num_classes=2, train_per_class=12,
                                                     query_per_class=4, database_per_class=24),
        bits=16, epochs=1, width=8, body=f'[[attack]]\nname = "badnets"\npoison_rate = 0.1\n\n{metric_table}'))


def test_a_metric_parameter_set_in_the_file_sets_its_column_and_enters_only_the_evaluate_keys(tmp_path, scaled_installed):
    spec = _metric_spec(tmp_path, "[metric.scaled_count_for_test]\nscale = 2.5")
    assert spec.metrics["scaled_count_for_test"].scale == 2.5
    default = build_plan(_metric_spec(tmp_path, "", "default.toml"))
    plan = build_plan(spec)
    changed = {stage.kind for stage in plan.ordered() if stage.id not in default.stages}
    assert changed == {"evaluate"}
    assert all(s.config["metric_params"] == {"scaled_count_for_test": {"scale": 2.5}} for s in plan.evaluations())

    result = run_benchmark(spec, progress_bar=False, echo=lambda m: None)
    assert not result.failures
    rows = _rows(spec, result)
    # 2 classes x 4 queries, times the file's scale (the default, 1, would give 8)
    assert rows["scaled_queries"].tolist() == [20.0] * 2
    assert rows.loc[rows["attack"] == "badnets", "clean_model_scaled_queries"].tolist() == [20.0]


def test_a_bad_metric_table_is_a_config_error_naming_the_table_and_the_fix(tmp_path, scaled_installed):
    with pytest.raises(ConfigError, match=r"\[metric.scaled_count_for_test\].*unknown key 'scal'.*Did you mean 'scale'"):
        _metric_spec(tmp_path, "[metric.scaled_count_for_test]\nscal = 2.5")
    with pytest.raises(ConfigError, match=r"'scale' = 'big' must be a number"):
        _metric_spec(tmp_path, '[metric.scaled_count_for_test]\nscale = "big"')
    with pytest.raises(ConfigError, match=r"\[metric.scaled_count\].*unknown metric 'scaled_count'.*Did you mean "
                                          r"'scaled_count_for_test'.*Install the metric plugin or remove the table"):
        _metric_spec(tmp_path, "[metric.scaled_count]\nscale = 2.5")
