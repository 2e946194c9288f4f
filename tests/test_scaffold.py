"""`hashbench new`: each kind's package passes the conformance kit; installed, it runs in a benchmark."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import write_benchmark
from hashbench import testing
from hashbench.cli import main
from hashbench.errors import ConfigError
from hashbench.scaffold import KINDS, class_name, scaffold

VENV_BIN = Path(sys.executable).parent
CHECKS = {"attack": testing.check_attack, "defense": testing.check_defense,
          "method": testing.check_method, "dataset": testing.check_dataset}


@pytest.mark.parametrize("kind", KINDS)
def test_scaffolded_plugin_passes_the_conformance_checks(kind, tmp_path, monkeypatch):
    name = f"scaffolded_{kind}"
    assert main(["new", kind, name, "--output", str(tmp_path / "pkg")]) == 0
    root = tmp_path / "pkg"
    assert f'{name} = "hashbench_{name}"' in (root / "pyproject.toml").read_text()
    assert f"check_{kind}" in (root / "tests" / f"test_{name}.py").read_text()
    assert f'name = "{name}"' in (root / f"hashbench_{name}" / "__init__.py").read_text()
    monkeypatch.syspath_prepend(str(root))
    module = importlib.import_module(f"hashbench_{name}")
    CHECKS[kind](getattr(module, class_name(name)))
    sys.modules.pop(f"hashbench_{name}", None)


def test_scaffold_refuses_bad_names_and_non_empty_folders(tmp_path):
    with pytest.raises(ConfigError, match="lower case"):
        scaffold("attack", "My-Attack", tmp_path / "a")
    scaffold("attack", "ok", tmp_path / "b")
    with pytest.raises(ConfigError, match="not empty"):
        scaffold("attack", "ok", tmp_path / "b")
    with pytest.raises(ConfigError, match="choose one of"):
        scaffold("metric", "ok", tmp_path / "c")


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), capture_output=True, text=True, cwd=cwd, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


@pytest.fixture
def installed_demo(tmp_path):
    """`hashbench new attack demo`, pip-installed (editable) into this venv; uninstalled afterwards."""
    root = tmp_path / "hashbench-demo"
    _run(str(VENV_BIN / "hashbench"), "new", "attack", "demo", "--output", str(root))
    _run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(root))
    try:
        yield root
    finally:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "hashbench-demo"], capture_output=True)


@pytest.mark.slow  # pip install + a benchmark + the generated test in subprocesses: about a minute, more on a busy machine
def test_installed_scaffold_is_listed_runs_in_a_benchmark_and_its_test_passes(installed_demo, tmp_path):
    listed = json.loads(_run(str(VENV_BIN / "hashbench"), "plugins", "--kind", "attack", "--json").stdout)
    demo = next(p for p in listed if p["name"] == "demo")
    assert demo["source"] == "demo" and [p["name"] for p in demo["parameters"]] == ["strength", "pattern_seed"]
    write_benchmark(tmp_path, "demo.toml", name="demo", dataset=dict(name="synthetic", num_classes=4, train_per_class=30,
                    query_per_class=5, database_per_class=40), bits=16, epochs=1, width=8,
                    body='[[attack]]\nname = "demo"\npoison_rate = 0.1\nstrength = 0.08')
    _run(str(VENV_BIN / "hashbench"), "run", str(tmp_path / "demo.toml"), "-q")
    _run(str(VENV_BIN / "hashbench"), "export", str(tmp_path / "results"), "--leaderboard", str(tmp_path / "board.csv"))
    board = pd.read_csv(tmp_path / "board.csv")
    assert len(board[board.attack == "demo"]) == 1
    _run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(installed_demo / "tests"), cwd=installed_demo)
