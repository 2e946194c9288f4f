"""The command line end to end: run, resume, plan, export, and clean errors for bad input."""

import csv

import pytest

from conftest import write_benchmark
from hashbench.cli import main



def write(tmp_path, name="bench.toml", target="class_0", defenses='[[defense]]\nname = "jpeg"\nquality = 60'):
    return write_benchmark(tmp_path, name, name="cli", dataset=dict(name="synthetic", train_per_class=20, query_per_class=5,
                           database_per_class=30), bits=8, epochs=2, width=8, target=target,
                           body=f'[[attack]]\nname = "badnets"\npoison_rate = 0.05\n\n{defenses}')


def test_run_resume_add_a_defense_and_export(tmp_path, capsys):
    bench = write(tmp_path)
    assert main(["run", str(bench), "-q", "--no-report"]) == 0  # the report has its own tests (test_report.py)
    out = capsys.readouterr().out
    assert "defense \\ attack" in out and "badnets" in out and "jpeg" in out and "clean model's clean mAP" in out
    assert "9 stages computed, 0 cached" in out

    # A second run trains nothing.
    assert main(["run", str(bench), "-q", "--no-report"]) == 0
    assert "0 stages computed, 9 cached" in capsys.readouterr().out

    # Adding one defense plans only that defense's stages.
    bigger = write(tmp_path, "bigger.toml", defenses='[[defense]]\nname = "jpeg"\nquality = [60, 30]')
    assert main(["plan", str(bigger)]) == 0
    plan_out = capsys.readouterr().out
    assert "11 stages: 9 cached, 2 to run" in plan_out
    assert main(["run", str(bigger), "-q", "--no-report"]) == 0
    assert "2 stages computed, 9 cached" in capsys.readouterr().out

    board = tmp_path / "board.csv"
    assert main(["export", str(tmp_path / "results"), "--leaderboard", str(board), "--format", "md", "--format", "json"]) == 0
    rows = list(csv.DictReader(board.open()))
    assert {(r["attack"], r["defense"]) for r in rows} == {("(clean)", "none"), ("badnets", "none"), ("badnets", "jpeg")}
    assert len(rows) == 4  # clean, none, jpeg@60, jpeg@30
    assert {"t_map_mean", "t_map_std", "clean_map_mean", "seeds", "metric_conventions", "hashbench_version"} <= set(rows[0])
    assert (tmp_path / "results" / "leaderboard.md").is_file() and (tmp_path / "results" / "leaderboard.json").is_file()


def test_force_recomputes_matching_stages(tmp_path, capsys):
    bench = write(tmp_path, defenses="")
    assert main(["run", str(bench), "-q", "--no-report"]) == 0
    capsys.readouterr()
    assert main(["run", str(bench), "-q", "--no-report", "--force", "evaluate"]) == 0
    assert "2 stages computed, 5 cached" in capsys.readouterr().out


@pytest.mark.parametrize(
    "setup, expected",
    [
        (lambda p: p / "missing.toml", "does not exist"),
        (lambda p: write(p, target="class_99"), "target label 'class_99' is not a class"),
        (lambda p: write(p, defenses='[[defense]]\nname = "jpeg"\nqualiti = 3'), "Did you mean 'quality'"),
    ],
)
def test_bad_input_ends_with_one_clear_message(tmp_path, capsys, setup, expected):
    assert main(["run", str(setup(tmp_path)), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hashbench: error:") and expected in err
    assert "Traceback" not in err
    assert not (tmp_path / "results" / "stages" / "clean_victim").exists()  # nothing trained


def test_unwritable_results_directory(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    bench = write(tmp_path)
    assert main(["run", str(bench), "-q", "--results", str(blocker / "results")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_plugins_command_lists_parameters(capsys):
    assert main(["plugins", "--kind", "defense", "--json"]) == 0
    import json

    described = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert described["jpeg"]["parameters"][0]["name"] == "quality"
    assert described["jpeg"]["parameters"][0]["doc"]
