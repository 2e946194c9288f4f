"""Benchmark files: validation errors name the file, the table and the key; lists expand into grids."""

from pathlib import Path

import pytest

from hashbench.config import expand_grid, load_spec, parse_spec
from hashbench.errors import ConfigError

BASE = {
    "benchmark": {"seeds": [0], "device": "cpu"},
    "dataset": {"name": "synthetic"},
    "victim": {"method": "csq", "backbone": "convnet", "bits": 16},
    "target": {"label": "class_0"},
}


def spec_with(**tables):
    return parse_spec({**BASE, **tables}, "bench.toml")


def test_a_minimal_spec_parses_and_always_has_the_undefended_baseline():
    spec = spec_with(attack=[{"name": "badnets"}])
    assert [d.plugin.name for d in spec.defenses] == ["none"]
    assert spec.attacks[0].poison_rate == 0.01
    assert spec.victims[0].train.epochs == 20


def test_lists_expand_into_a_grid():
    spec = spec_with(
        attack=[{"name": "badnets", "poison_rate": [0.05, 0.1], "pattern": ["white", "checkerboard"]}],
        defense=[{"name": "jpeg", "quality": [90, 75]}],
    )
    assert len(spec.attacks) == 4
    assert sorted(d.plugin.params.quality for d in spec.defenses if d.plugin.name == "jpeg") == [75, 90]
    victims = parse_spec({**BASE, "victim": {**BASE["victim"], "bits": [16, 32], "method": ["csq", "dpsh"]}}).victims
    assert {(v.method.name, v.bits) for v in victims} == {("csq", 16), ("csq", 32), ("dpsh", 16), ("dpsh", 32)}


def test_sequence_parameters_take_a_list_as_their_value():
    assert expand_grid({"betas": [0.5, 0.9]}, {"betas"}) == [{"betas": [0.5, 0.9]}]
    assert expand_grid({"betas": [[0.5, 0.9], [0.9, 0.99]]}, {"betas"}) == [{"betas": [0.5, 0.9]}, {"betas": [0.9, 0.99]}]


def test_unknown_key_names_the_table_and_suggests_the_fix():
    with pytest.raises(ConfigError) as err:
        spec_with(defense=[{"name": "jpeg", "qualty": 50}])
    message = str(err.value)
    assert "bench.toml [[defense]] #1" in message and "'qualty'" in message and "Did you mean 'quality'" in message


def test_wrong_type_is_reported_with_the_expected_type():
    with pytest.raises(ConfigError, match="'quality' = 'high' must be an integer"):
        spec_with(defense=[{"name": "jpeg", "quality": "high"}])
    with pytest.raises(ConfigError, match="'epochs' = 'ten' must be an integer"):
        parse_spec({**BASE, "victim": {**BASE["victim"], "epochs": "ten"}})


def test_unknown_plugin_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown attack 'badnet'. Did you mean 'badnets'"):
        spec_with(attack=[{"name": "badnet"}])


def test_invalid_values_and_missing_tables():
    with pytest.raises(ConfigError, match="poison_rate"):
        spec_with(attack=[{"name": "badnets", "poison_rate": 1.5}])
    with pytest.raises(ConfigError, match="quality must be between 1 and 100"):
        spec_with(defense=[{"name": "jpeg", "quality": 0}])
    with pytest.raises(ConfigError, match="missing \\[dataset\\]"):
        parse_spec({k: v for k, v in BASE.items() if k != "dataset"})
    with pytest.raises(ConfigError, match="unknown key 'atack'"):
        parse_spec({**BASE, "atack": [{"name": "badnets"}]})
    with pytest.raises(ConfigError, match="'device' = 1 must be a string"):
        parse_spec({**BASE, "benchmark": {"device": 1}})


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[benchmark\nname = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_spec(broken)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "benchmarks").rglob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_benchmark_file_parses(path):
    spec = load_spec(path)
    assert spec.attacks and spec.defenses
