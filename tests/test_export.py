"""`hashbench export`: one leaderboard row per configuration with mean and std over seeds, in csv/md/json."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from hashbench.cli import main
from hashbench.report import IDENTITY
from hashbench.store import Store

T_MAP = {("jpeg", '{"quality": 50}'): [0.8, 0.6, 0.7], ("jpeg", '{"quality": 90}'): [0.9, 0.95, 1.0],
         ("none", "{}"): [0.99, 0.97, 0.98]}


@pytest.fixture
def results(tmp_path):
    """Evaluate manifests for three configurations (two differ only in defense parameters) × three seeds."""
    store = Store(tmp_path / "results")
    for config, ((defense, params), values) in enumerate(T_MAP.items()):
        for seed, t_map in enumerate(values):
            row = {key: "" for key in IDENTITY} | {
                "dataset": "synthetic", "method": "csq", "backbone": "convnet", "bits": 16, "seed": seed,
                "attack": "badnets", "poison_rate": 0.1, "defense": defense, "defense_params": params,
                "clean_fraction": 0.05, "hashbench_version": "0.1.0", "metric_conventions": "1",
            }
            key = f"config{config}seed{seed}"
            with store.open_stage("evaluate", key, {"seed": seed}) as writer:
                writer.manifest["row"] = row
                writer.manifest["metrics"] = {"t_map": t_map, "clean_map": 0.5 + seed / 10, "poison_lpips": None}
    return store.root


def test_leaderboard_csv_has_mean_std_and_one_row_per_configuration(results, tmp_path):
    csv = tmp_path / "board.csv"
    assert main(["export", str(results), "--leaderboard", str(csv)]) == 0
    board = pd.read_csv(csv)
    assert len(board) == 3
    for (defense, params), values in T_MAP.items():
        row = board[(board.defense == defense) & (board.defense_params == params)].iloc[0]
        assert row.t_map_mean == pytest.approx(pd.Series(values).mean())
        assert row.t_map_std == pytest.approx(pd.Series(values).std())  # sample std (ddof = 1)
        assert row.seeds == 3
        assert row.clean_map_mean == pytest.approx(0.6)
    assert {"hashbench_version", "metric_conventions"} <= set(board.columns)
    assert "seed_mean" not in board.columns and "stage_key" not in board.columns


def test_md_and_json_formats_hold_the_same_rows(results, tmp_path):
    out = tmp_path / "out"
    assert main(["export", str(results), "--format", "md", "--format", "json", "--output", str(out)]) == 0
    records = json.loads((out / "leaderboard.json").read_text())
    assert len(records) == 3 and all(r["seeds"] == 3 for r in records)
    assert {r["defense_params"] for r in records} == {params for _, params in T_MAP}
    lines = (out / "leaderboard.md").read_text().strip().splitlines()
    assert lines[0].startswith("|") and "t_map_mean" in lines[0] and "t_map_std" in lines[0]
    assert len(lines) == 2 + 3  # header, separator, one line per configuration


def test_exporter_parameters_are_set_on_the_command_line_and_validated(results, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", str(results), "--format", "md", "--format", "json", "--output", str(out),
                 "--set", "md.digits=2", "--set", "json.indent=0"]) == 0
    # jpeg quality 50: t-MAP 0.8, 0.6, 0.7 -> mean 0.70, written with 2 decimals instead of 4
    text = (out / "leaderboard.md").read_text()
    assert re.search(r"\| +0\.70 \|", text) and "0.7000" not in text
    assert (out / "leaderboard.json").read_text().startswith("[\n{\n")  # a new line per value, not indented
    for setting, message in (("md.digits=-1", "digits must be in [0, 15]"), ("md.digts=2", "Did you mean 'digits'"),
                             ("md.digits=two", "'digits'"), ("mdx.digits=2", "unknown exporter 'mdx'"),
                             ("digits=2", "write NAME.KEY=VALUE")):
        assert main(["export", str(results), "--format", "md", "--output", str(out), "--set", setting]) == 2
        assert message in capsys.readouterr().err, setting


def test_default_export_writes_the_csv_into_the_results(results):
    assert main(["export", str(results)]) == 0
    assert len(pd.read_csv(results / "leaderboard.csv")) == 3


def test_export_of_an_empty_folder_says_what_to_do(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    assert "run a benchmark first" in capsys.readouterr().err


def test_a_row_computed_again_counts_once_the_newest(results, tmp_path, capsys):
    """Two more evaluate stages of (jpeg quality 50, seed 0) under other keys, as an older hashbench or an earlier
    recipe leaves behind: only the one that finished last counts, whatever the key or writing order."""
    from hashbench.report import load_results
    from hashbench.report_sources import report_sources, sources_script, staleness

    store = Store(results)
    first = store.manifest("evaluate", "config0seed0")
    for key, t_map, finished in (("zz-newest", 0.2, first["started"] + 3600), ("aa-oldest", 0.9, 1.0)):
        with store.open_stage("evaluate", key, {"seed": 0, "recipe": key}) as writer:
            writer.manifest.update(row=first["row"], metrics={"t_map": t_map, "clean_map": 0.5}, started=finished, seconds=0.0)
    csv = tmp_path / "board.csv"
    assert main(["export", str(results), "--leaderboard", str(csv)]) == 0
    err = capsys.readouterr().err
    assert "2 superseded results row(s) left out" in err
    assert str(results / "stages" / "evaluate" / "aa-oldest") in err and "config0seed0" in err and "zz-newest" not in err
    board = pd.read_csv(csv)
    row = board[board.defense_params == '{"quality": 50}'].iloc[0]
    assert row.seeds == 3 and row.t_map_mean == pytest.approx((0.2 + 0.6 + 0.7) / 3)
    assert board.seeds.tolist() == [3, 3, 3]
    # a report built from these rows is fresh: the superseded rows are not "finished after" it
    frame = load_results(results)
    html = tmp_path / "report.html"
    html.write_text(sources_script(report_sources(store, frame)))
    assert staleness(results, html) == []
