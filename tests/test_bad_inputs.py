"""Bad input, one clear message: every case of a new user's sweep (malformed benchmark files, damaged or
shared results folders, odd command lines) ends in one `hashbench: error:` line and exit 2, or in a
warning naming what was skipped; nothing already computed is lost and nothing is written half-way.
None of these tests trains a model."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import re
import stat
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import TINY_DATASET, benchmark_text

from hashbench import ConfigError, StoreError
from hashbench.cli import main
from hashbench.config import load_spec
from hashbench.plan import build_plan
from hashbench.records import STAGE_KINDS, CleanVictimStage
from hashbench.report import IDENTITY
from hashbench.runner import StageRunner
from hashbench.store import Store

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = sorted((REPO / "benchmarks").glob("*.toml"))


def spec_text(results: Path, victim_extra: str = "", attack: str = 'name = "badnets"\npoison_rate = 0.1',
              defense: str = "", benchmark_extra: str = "") -> str:
    """The tests' small benchmark file (tiny synthetic data, a CSQ victim) with one attack, optionally one
    defense, and extra keys in [benchmark] or [victim]."""
    text = benchmark_text(results, attacks=f"[[attack]]\n{attack}", defenses=f"[[defense]]\n{defense}" if defense else "",
                          victim_extra=victim_extra)
    return text.replace('device = "cpu"', f'device = "cpu"\n{benchmark_extra}')


def write(tmp_path: Path, text: str, name: str = "bench.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def one_error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit 2 and exactly one `hashbench: error:` line (no traceback); return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("hashbench: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def fake_results(root: Path, t_maps: dict[str, float]) -> Store:
    """Evaluate stages holding one results row each (defense name -> t-MAP), as a run writes them."""
    store = Store(root)
    for defense, t_map in t_maps.items():
        row = {key: "" for key in IDENTITY} | {
            "dataset": "synthetic", "method": "csq", "backbone": "convnet", "bits": 16, "seed": 0,
            "attack": "badnets", "poison_rate": 0.1, "defense": defense, "defense_params": "{}",
            "clean_fraction": 0.05, "hashbench_version": "0.1.0", "metric_conventions": "1",
        }
        with store.open_stage("evaluate", f"key{defense}", {"seed": 0}) as writer:
            writer.manifest["row"] = row
            writer.manifest["metrics"] = {"t_map": t_map, "clean_map": 0.5}
    return store


# ------------------------------------------------------------------------------ the benchmark file


@pytest.mark.parametrize("extra, wrong, suggestion", [
    ("backbone_params.convnett = { width = 8 }", "backbone_params.convnett", "convnet"),
    ("method_params.cqs = { lambda_q = 0.01 }", "method_params.cqs", "csq"),
])
def test_row1_params_table_of_a_plugin_the_victim_does_not_use_stops(tmp_path, capsys, extra, wrong, suggestion):
    path = write(tmp_path, spec_text(tmp_path / "r", victim_extra=extra))
    line = one_error(capsys, ["plan", str(path)])
    assert f"'{wrong}' names no" in line and f"Did you mean '{suggestion}'?" in line and "[victim] #1" in line


@pytest.mark.parametrize("attack, defense, key, table", [
    ('name = "badnets"\npoison_rate = []', "", "poison_rate", "[[attack]] #1"),
    ('name = "badnets"', 'name = "jpeg"\nclean_fraction = []', "clean_fraction", "[[defense]] #1"),
    ('name = "badnets"\npatch_size = []', "", "patch_size", "[[attack]] #1"),
])
def test_row5_every_empty_grid_is_refused_naming_file_and_table(tmp_path, capsys, attack, defense, key, table):
    path = write(tmp_path, spec_text(tmp_path / "r", attack=attack, defense=defense))
    line = one_error(capsys, ["plan", str(path)])
    assert f"'{key}' is an empty list" in line and str(path) in line and table in line


def test_cosmetic_empty_bits_names_file_and_table(tmp_path, capsys):
    path = write(tmp_path, spec_text(tmp_path / "r").replace("bits = 16", "bits = []"))
    line = one_error(capsys, ["plan", str(path)])
    assert "'bits' is an empty list" in line and f"{path} [victim] #1" in line


def test_row6_a_params_entry_that_is_not_a_table_is_a_config_error(tmp_path, capsys):
    text = spec_text(tmp_path / "r")
    assert "backbone_params.convnet = { width = 16 }" in text
    path = write(tmp_path, text.replace("backbone_params.convnet = { width = 16 }", "backbone_params.convnet = 5"))
    line = one_error(capsys, ["run", str(path)])
    assert "'backbone_params.convnet' = 5 must be a table" in line


@pytest.mark.parametrize("benchmark_extra, victim_extra, expected", [
    ('executor = "rey"', "", "unknown executor 'rey'. Did you mean 'ray'?"),
    ("executor_options = { adress = \"auto\" }", "", "unknown key 'adress'"),
    ('executor = "ray"\nexecutor_options = { adress = "auto" }', "", "Did you mean 'address'?"),
    ("", "lr = inf", "'lr' = inf must be a finite number"),
    ("", "lr = nan", "'lr' = nan must be a finite number"),
])
def test_row11_bad_executor_options_and_non_finite_numbers_fail_while_loading(tmp_path, capsys, benchmark_extra,
                                                                            victim_extra, expected):
    path = write(tmp_path, spec_text(tmp_path / "r", victim_extra=victim_extra, benchmark_extra=benchmark_extra))
    assert expected in one_error(capsys, ["plan", str(path)])


def test_row11_a_device_torch_knows_but_hashbench_cannot_run_on_is_refused(tmp_path, capsys):
    path = write(tmp_path, spec_text(tmp_path / "r").replace('device = "cpu"', 'device = "meta"'))
    assert "device 'meta' is not valid" in one_error(capsys, ["plan", str(path)])
    path = write(tmp_path, spec_text(tmp_path / "r"))
    assert "device 'meta' is not valid" in one_error(capsys, ["plan", str(path), "--device", "meta"])


def test_row10_non_utf8_file_and_nul_in_results_are_one_line_each(tmp_path, capsys):
    path = tmp_path / "latin1.toml"
    path.write_bytes(spec_text(tmp_path / "r").replace("seeds", "# caf\xe9\nseeds").encode("latin-1"))
    assert "not UTF-8 text" in one_error(capsys, ["plan", str(path)])
    path = write(tmp_path, spec_text(Path("a\\u0000b")))
    assert "is not a usable folder name" in one_error(capsys, ["plan", str(path)])


def test_cosmetic_plan_of_a_folder_says_it_is_a_folder(capsys):
    assert "is a folder; give a benchmark file" in one_error(capsys, ["plan", str(REPO / "benchmarks")])


def test_cosmetic_target_error_has_one_location_prefix(tmp_path, capsys):
    path = write(tmp_path, spec_text(tmp_path / "r").replace('label = "class_0"', 'label = "class_99"'))
    line = one_error(capsys, ["run", str(path), "-q"])
    assert line.count("[target]") == 1 and "class_99" in line
    assert not (tmp_path / "r").exists(), "a refused run leaves no results folder"


# ------------------------------------------------------------------------------ the command line


def test_row7_ctrl_c_hint_repeats_the_overrides(tmp_path, capsys, monkeypatch):
    import hashbench.benchmark

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hashbench.benchmark, "run_benchmark", interrupted)
    path = write(tmp_path, spec_text(tmp_path / "r"))
    assert main(["run", str(path), "--results", str(tmp_path / "my results"), "--device", "cpu"]) == 130
    err = capsys.readouterr().err
    assert f"run `hashbench run {path} --results '{tmp_path / 'my results'}' --device cpu` again" in err


def test_row12_plan_takes_the_options_of_run_and_v_goes_anywhere(tmp_path, capsys):
    path = write(tmp_path, spec_text(tmp_path / "file-results"))
    elsewhere = tmp_path / "elsewhere"
    plan = build_plan(load_spec(path))
    clean = next(s for s in plan.ordered() if s.kind == "clean_victim")
    with Store(elsewhere).open_stage(clean.kind, clean.key, {}) as writer:
        writer.save("x.pt", {})
    assert main(["plan", str(path), "--results", str(elsewhere), "--device", "cpu", "--only", "clean_victim"]) == 0
    out = capsys.readouterr().out
    assert "| cached " in out and "1 stages: 1 cached, 0 to run" in out
    assert main(["plugins", "--kind", "exporter", "-v"]) == 0
    assert "exporter csv: Comma-separated values" in capsys.readouterr().out


def test_cosmetic_only_nonsense_leaves_no_results_folder(tmp_path, capsys):
    path = write(tmp_path, spec_text(tmp_path / "r"))
    assert "matches no stage" in one_error(capsys, ["run", str(path), "-q", "--only", "nonsense"])
    assert not (tmp_path / "r").exists()


def test_cosmetic_missing_dataset_leaves_no_results_folder(tmp_path, capsys):
    text = spec_text(tmp_path / "r").replace('name = "synthetic"\nimage_size = 32\ntrain_per_class = 100\n'
                                             'query_per_class = 10\ndatabase_per_class = 150',
                                             f'name = "imagefolder"\nroot = "{tmp_path / "no-such-folder"}"')
    one_error(capsys, ["run", str(write(tmp_path, text)), "-q"])
    assert not (tmp_path / "r").exists()


def test_row10_ray_without_a_cluster_is_one_line_and_leaves_no_folder(tmp_path, capsys):
    pytest.importorskip("ray")
    path = write(tmp_path, spec_text(tmp_path / "r"))
    line = one_error(capsys, ["run", str(path), "-q", "--executor", "ray", "--address", "auto"])
    assert "could not start or join the Ray cluster at 'auto'" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name, why", [("badnets", "already installed"), ("none", "Python keyword"),
                                       ("true", "Python keyword"), ("attack", "already uses")])
def test_row13_14_new_refuses_taken_names_and_keywords(tmp_path, capsys, name, why):
    assert why in one_error(capsys, ["new", "attack", name, "--output", str(tmp_path / "pkg")])
    assert not (tmp_path / "pkg").exists()


# ------------------------------------------------------------------------------ export and report


def test_row3_leaderboard_format_follows_the_suffix(tmp_path, capsys):
    store = fake_results(tmp_path / "results", {"none": 0.9, "jpeg": 0.3})
    assert main(["export", str(store.root), "--leaderboard", str(tmp_path / "lb.md")]) == 0
    assert (tmp_path / "lb.md").read_text().startswith("| dataset")
    assert main(["export", str(store.root), "--leaderboard", str(tmp_path / "lb.json")]) == 0
    assert [r["defense"] for r in json.loads((tmp_path / "lb.json").read_text())] == ["none", "jpeg"]
    capsys.readouterr()
    for name in ("lb", "lb.html"):
        assert "the file name chooses the format" in one_error(capsys, ["export", str(store.root), "--leaderboard", str(tmp_path / name)])
        assert not (tmp_path / name).exists()


def test_row15_json_keeps_numbers_and_formats_are_checked_before_writing(tmp_path, capsys):
    t_map = 0.12345678901234567
    store = fake_results(tmp_path / "results", {"none": t_map})
    assert main(["export", str(store.root), "--format", "json"]) == 0
    (record,) = json.loads((store.root / "leaderboard.json").read_text())
    assert record["bits"] == 16 and record["poison_rate"] == 0.1 and record["clean_fraction"] == 0.05
    assert record["t_map_mean"] == t_map  # all 17 digits
    capsys.readouterr()
    one_error(capsys, ["export", str(store.root), "--leaderboard", str(tmp_path / "x.csv"), "--format", "xlsx"])
    assert not (tmp_path / "x.csv").exists()


def test_row10_export_and_report_to_impossible_places_are_one_line(tmp_path, capsys):
    store = fake_results(tmp_path / "results", {"none": 0.9})
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert "is a folder; give a file name" in one_error(capsys, ["export", str(store.root), "--leaderboard", str(tmp_path)])
    assert "is a file, not a folder" in one_error(capsys, ["export", str(store.root), "--format", "md", "--output", str(a_file)])
    assert "is a file, not a folder" in one_error(capsys, ["report", str(store.root), "--output", str(a_file)])
    assert a_file.read_text() == ""


def test_row4_a_symlinked_leaderboard_is_replaced_not_written_through(tmp_path, capsys):
    store = fake_results(tmp_path / "results", {"none": 0.9})
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (store.root / "leaderboard.csv").symlink_to(precious)
    assert main(["export", str(store.root)]) == 0
    assert precious.read_text() == "keep me"
    assert not (store.root / "leaderboard.csv").is_symlink()
    assert pd.read_csv(store.root / "leaderboard.csv")["t_map_mean"].tolist() == [0.9]


def test_row4_lock_files_are_never_truncated_nor_followed(tmp_path):
    store = Store(tmp_path / "results")
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    (store.root / "locks").mkdir(parents=True)
    (store.root / "locks" / "victim-abc.lock").symlink_to(precious)
    with pytest.raises(StoreError, match="is a symbolic link"):
        with store.lock("victim", "abc"):
            pass
    assert precious.read_text() == "keep me"
    existing = store.root / "locks" / "victim-def.lock"
    existing.write_text("anything")
    with store.lock("victim", "def"):
        pass
    assert existing.read_text() == "anything"


def test_shared_folder_a_lock_file_of_another_user_still_locks(tmp_path, monkeypatch):
    """Another user's lock file (mode 0644, not ours) can be opened only for reading; that suffices for
    flock. Simulated, since the tests may run as root: opening it for writing is refused."""
    store = Store(tmp_path / "results")
    theirs = store.root / "locks" / "victim-abc.lock"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("")
    real_open = os.open

    def open_as_another_user(path, flags, *args):
        if Path(path) == theirs and flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", open_as_another_user)
    with store.lock("victim", "abc"):
        pass


def test_shared_folder_outputs_keep_readable_permissions(tmp_path):
    """A temporary file made by tempfile would be 0600 and, renamed into place, unreadable by the other
    users of a shared folder; outputs get the umask's mode, or keep the mode of the file they replace."""
    store = fake_results(tmp_path / "results", {"none": 0.9})
    old = os.umask(0o022)
    try:
        assert main(["export", str(store.root)]) == 0
        assert stat.S_IMODE((store.root / "leaderboard.csv").stat().st_mode) == 0o644
        (store.root / "leaderboard.csv").chmod(0o664)
        assert main(["export", str(store.root)]) == 0
        assert stat.S_IMODE((store.root / "leaderboard.csv").stat().st_mode) == 0o664
    finally:
        os.umask(old)


def test_full_disk_during_export_keeps_the_previous_leaderboard(tmp_path, capsys, monkeypatch):
    from hashbench_plugins.exporters.tables import CsvExporter

    store = fake_results(tmp_path / "results", {"none": 0.9})
    assert main(["export", str(store.root)]) == 0
    before = (store.root / "leaderboard.csv").read_text()
    fake_results(tmp_path / "results", {"jpeg": 0.2})

    def half_then_full(self, table, path):
        Path(path).write_text(table.to_csv(index=False)[:20])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(CsvExporter, "export", half_then_full)
    capsys.readouterr()
    assert "is full; free space" in one_error(capsys, ["export", str(store.root)])
    assert (store.root / "leaderboard.csv").read_text() == before
    assert sorted(p.name for p in store.root.iterdir()) == ["leaderboard.csv", "stages"]


def test_read_only_results_folder_is_a_clear_error(tmp_path, capsys):
    store = fake_results(tmp_path / "results", {"none": 0.9})
    denied = Path("/sys/hashbench-test-export")  # sysfs refuses new entries, even to root
    line = one_error(capsys, ["export", str(store.root), "--format", "csv", "--output", str(denied)])
    assert "permission denied" in line


# ------------------------------------------------------------------------------ damaged results


@pytest.mark.parametrize("garbage", ["[]", '{"files": 5}', "{}", '{"kind": "clean_victim"}', "\xff\xfe"])
def test_row8_a_manifest_of_the_wrong_shape_is_moved_aside_and_recomputed(tmp_path, monkeypatch, garbage):
    from hashbench import runner as runner_module

    def tiny_stage(runner, stage, writer):
        writer.save("model.pt", {"w": torch.arange(4)})

    monkeypatch.setitem(runner_module.STAGE_FUNCTIONS, "clean_victim", tiny_stage)
    runner = StageRunner(tmp_path / "results", "cpu")
    stage = CleanVictimStage("clean victim", 0, {}, {}, None)
    key = stage.key
    assert runner.run(stage).status == "done"
    folder = runner.store.stage_dir("clean_victim", key)
    (folder / "manifest.json").write_bytes(garbage.encode("latin-1"))
    assert runner.store.manifest("clean_victim", key) == {"corrupt": True}
    assert not runner.store.is_done("clean_victim", key)

    again = StageRunner(tmp_path / "results", "cpu")
    outcome = again.run(stage)
    assert outcome.status == "done" and "manifest is unreadable" in outcome.rebuilt
    assert again.store.verify("clean_victim", key) is None
    assert len(list(folder.parent.glob(f".broken-{key}-*"))) == 1


@pytest.mark.parametrize("garbage", ["[]", "not json", '{"kind": "evaluate", "key": "keyjpeg", "config": {}, "files": {}, "row": []}'])
def test_row9_export_warns_for_each_unreadable_row_and_keeps_the_rest(tmp_path, capsys, garbage):
    store = fake_results(tmp_path / "results", {"none": 0.9, "jpeg": 0.3})
    (store.stage_dir("evaluate", "keyjpeg") / "manifest.json").write_text(garbage)
    assert main(["export", str(store.root)]) == 0
    err = capsys.readouterr().err
    assert "hashbench: warning: stage evaluate/keyjpeg is skipped: its manifest is missing or unreadable" in err
    assert pd.read_csv(store.root / "leaderboard.csv")["defense"].tolist() == ["none"]


def flip_a_byte(path: Path, at: float = 0.8) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_row9_every_file_read_is_checked_against_its_checksum(tmp_path):
    store = Store(tmp_path / "results")
    with store.open_stage("poison", "p", {"deps": []}) as writer:
        writer.save("poisoning.pt", {"images": torch.zeros(64, 3, 8, 8, dtype=torch.uint8)})
    path = store.stage_dir("poison", "p") / "poisoning.pt"
    flip_a_byte(path)
    assert torch.load(path, weights_only=True)["images"].sum() > 0  # still loads, with wrong pixels
    with pytest.raises(StoreError, match="does not match its checksum"):
        store.load("poison", "p", "poisoning.pt")


def test_row9_report_leaves_out_the_grid_of_a_corrupt_file_with_a_warning(tmp_path, capsys):
    from hashbench.report_html import attack_samples

    store = Store(tmp_path / "results")
    dataset = {"name": "synthetic", "params": TINY_DATASET}
    with store.open_stage("attack", "a", {"attack": {"name": "badnets", "params": {}}, "dataset": dataset,
                                           "seed": 0, "target": 0}) as writer:
        writer.save("triggered_queries.pt", {"indices": torch.arange(8), "images": torch.zeros(8, 3, 32, 32, dtype=torch.uint8)})
    with store.open_stage("poison", "p", {"deps": ["attack/a"], "poison_rate": 0.1, "seed": 0}) as writer:
        writer.save("poisoning.pt", {"indices": torch.arange(64), "images": torch.zeros(64, 3, 32, 32, dtype=torch.uint8)})
    assert len(attack_samples(store)) == 2
    flip_a_byte(store.stage_dir("poison", "p") / "poisoning.pt")
    assert attack_samples(store) == []
    assert "the image grids of badnets on synthetic" in capsys.readouterr().err


def test_cosmetic_header_counts_what_a_corrupt_artifact_makes_the_run_recompute(tmp_path, monkeypatch):
    """A flipped byte in a cached stage is found before the run starts, so the header's "to run" is the
    corrupt stage and everything downstream of it, which the run then recomputes."""
    from hashbench import runner as runner_module
    from hashbench.benchmark import stages_to_run

    def tiny_stage(runner, stage, writer):
        writer.save("out.pt", {"w": torch.arange(256)})

    for kind in runner_module.STAGE_FUNCTIONS:
        monkeypatch.setitem(runner_module.STAGE_FUNCTIONS, kind, tiny_stage)
    plan = build_plan(load_spec(write(tmp_path, spec_text(tmp_path / "r"))))
    runner = StageRunner(tmp_path / "r", "cpu")
    for stage in plan.ordered():
        assert runner.run(stage).status == "done"
    victim = next(s for s in plan.ordered() if s.kind == "victim")
    flip_a_byte(runner.store.stage_dir(victim.kind, victim.key) / "out.pt")
    fresh = StageRunner(tmp_path / "r", "cpu")
    todo = stages_to_run(plan, fresh, set(plan.stages), set())
    assert todo == {victim.id} | plan.dependents(victim.id) and len(todo) < len(plan.stages)


# ------------------------------------------------------------------------------ row 16: docs and rates


def test_row16_a_rounded_poison_rate_is_reported(tmp_path, capsys):
    from hashbench.benchmark import preflight

    spec = load_spec(write(tmp_path, spec_text(tmp_path / "r", attack='name = "badnets"\npoison_rate = [0.0001, 0.1]')))
    preflight(spec)
    err = capsys.readouterr().err
    # 1000 training images: 0.0001 -> 1 poison (0.001); 0.1 -> exactly 100, no warning
    assert err.count("hashbench: warning:") == 1
    assert "poison_rate 0.0001 of the 1000 training images of dataset 'synthetic' rounds to 1 poison(s), a rate of 0.001" in err


def test_row16_the_readme_installs_what_the_makefile_installs():
    makefile_extras = re.search(r"pip install -q -e '\.\[([a-z,]+)\]'", (REPO / "Makefile").read_text()).group(1)
    readme_extras = set(re.findall(r"pip install -e '?\.\[([a-z,]+)\]", (REPO / "README.md").read_text()))
    assert readme_extras == {makefile_extras}


def test_row16_benchmark_name_is_not_promised_to_reports():
    from hashbench.config import BenchmarkSettings
    from hashbench.params import describe_params

    doc = next(p["doc"] for p in describe_params(BenchmarkSettings) if p["name"] == "name")
    assert "used in reports" not in doc


# ------------------------------------------------------------------------------ random mutations


class Mutator:
    """Random, seeded edits of a benchmark file: structural ones on its parsed tables (delete, retype,
    empty, nest or rename a value) and textual ones on its bytes (delete a line, flip a character)."""

    VALUES = [[], {}, "", "x", -1, 0, 1, 0.5, 2.5, 1e9, float("inf"), float("nan"), True, [[]], [1, "a"],
              {"width": 8}, {"a": {"b": 1}}, ["csq"], "a\x00b", "cuda:99", [0.0, 1.0]]

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def paths(self, value, prefix=()):
        if isinstance(value, dict):
            for key, sub in value.items():
                yield prefix + (key,)
                yield from self.paths(sub, prefix + (key,))
        elif isinstance(value, list):
            for i, sub in enumerate(value):
                if isinstance(sub, dict):
                    yield from self.paths(sub, prefix + (i,))

    def mutate_tables(self, raw: dict) -> dict:
        raw = json.loads(json.dumps(raw))  # a deep copy (TOML values are JSON values here)
        for _ in range(self.rng.randint(1, 3)):
            paths = list(self.paths(raw))
            path = self.rng.choice(paths)
            parent = raw
            for step in path[:-1]:
                parent = parent[step]
            key = path[-1]
            action = self.rng.choice(["delete", "replace", "replace", "wrap", "rename"])
            if action == "delete":
                del parent[key]
            elif action == "replace":
                parent[key] = self.rng.choice(self.VALUES)
            elif action == "wrap":
                parent[key] = [parent[key]] if self.rng.random() < 0.5 else []
            else:
                parent[key[:-1] + "x" if len(key) > 1 else key + "x"] = parent.pop(key)
        return raw

    def mutate_text(self, text: str) -> bytes:
        lines = text.splitlines()
        if self.rng.random() < 0.5 and lines:
            del lines[self.rng.randrange(len(lines))]
        data = bytearray("\n".join(lines).encode())
        if data:
            data[self.rng.randrange(len(data))] = self.rng.choice(b"=[]{}\"'#\n\xff0a ")
        return bytes(data)


def toml_value(value) -> str:
    """A TOML inline value (every table inline), enough for what Mutator makes."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


MUTATIONS_PER_FILE = 40


@pytest.mark.parametrize("benchmark", BENCHMARKS, ids=lambda p: p.name)
def test_random_mutations_of_shipped_files_end_in_a_plan_or_one_clear_error(benchmark, tmp_path, capsys):
    import tomllib

    text = benchmark.read_text()
    raw = tomllib.loads(text)
    raw.setdefault("benchmark", {})["results"] = str(tmp_path / "results")
    outcomes = {"plan": 0, "error": 0}
    for seed in range(MUTATIONS_PER_FILE):
        mutator = Mutator(seed)
        path = tmp_path / f"mutant{seed}.toml"
        if seed % 4 == 3:
            path.write_bytes(mutator.mutate_text(text))
        else:
            mutant = mutator.mutate_tables(raw)
            path.write_text("\n".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in mutant.items()))
        try:
            spec = load_spec(path)
        except ConfigError as exc:
            assert str(exc).strip() and "\n" not in str(exc), (seed, str(exc))
            outcomes["error"] += 1
            continue
        except StoreError:  # pragma: no cover - never expected while loading
            raise
        # the plan of one seed, dataset and victim: every attack and defense, in a fraction of the time
        plan = build_plan(dataclasses.replace(spec, datasets=spec.datasets[:1], victims=spec.victims[:1],
                                              settings=dataclasses.replace(spec.settings, seeds=spec.settings.seeds[:1])))
        assert plan.stages and all(s.kind in STAGE_KINDS for s in plan.ordered()), seed
        outcomes["plan"] += 1
    assert outcomes["error"] > 0  # the mutations do reach the checks
    capsys.readouterr()


@pytest.mark.parametrize("seed", range(6))
def test_mutated_file_through_the_cli_is_a_plan_or_exit_2_with_one_line(tmp_path, capsys, seed):
    import tomllib

    raw = tomllib.loads((REPO / "benchmarks" / "quick.toml").read_text())
    raw["benchmark"]["results"] = str(tmp_path / "results")
    mutant = Mutator(1000 + seed).mutate_tables(raw)
    path = tmp_path / "mutant.toml"
    path.write_text("\n".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in mutant.items()))
    code = main(["plan", str(path)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if code == 2:
        assert len([line for line in captured.err.splitlines() if line.startswith("hashbench: error:")]) == 1
    else:
        assert code == 0 and "stages:" in captured.out


def test_shared_folder_a_broken_stage_that_cannot_be_moved_aside_is_a_clear_error(tmp_path, monkeypatch):
    """In a results folder shared between users, another user's stage folder may not be ours to rename."""
    store = Store(tmp_path / "results")
    store.stage_dir("victim", "abc").mkdir(parents=True)

    def not_yours(self, target):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "rename", not_yours)
    with pytest.raises(StoreError, match="permission denied"):
        store.discard("victim", "abc")
