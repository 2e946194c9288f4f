"""Shared fixtures. Expensive things (datasets, a trained model) are built once per test session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
# Generated datasets are cached across test runs (and CI reuses the folder within one run).
os.environ.setdefault("HASHBENCH_CACHE", str(REPO / ".hashbench-cache"))
os.environ.setdefault("HASHBENCH_QUIET", "1")

# A small but learnable version of the embedded dataset (32x32, 10 classes).
TINY_DATASET = {
    "image_size": 32,
    "train_per_class": 100,
    "query_per_class": 10,
    "database_per_class": 150,
}


def load_tiny(**overrides):
    """DatasetSplits of the tiny synthetic dataset, with ``overrides`` of its parameters, from the shared cache."""
    from hashbench.loading import instantiate
    from hashbench import DatasetContext

    dataset = instantiate("dataset", {"name": "synthetic", "params": TINY_DATASET | overrides})
    return dataset.load(DatasetContext(cache_dir=Path(os.environ["HASHBENCH_CACHE"]) / "datasets", seed=0))


@pytest.fixture(scope="session")
def tiny_splits():
    """DatasetSplits of the tiny synthetic dataset (1000 train, 100 query, 1500 database)."""
    return load_tiny()


@pytest.fixture(scope="session")
def trained_model(tiny_splits):
    """A clean CSQ / convnet(width 16) / 16-bit model trained for 8 epochs on ``tiny_splits`` (CPU)."""
    from hashbench.loading import instantiate
    from hashbench.seeding import make_generator
    from hashbench.training import TrainConfig, build_model, train_hash_model

    torch.manual_seed(0)
    model = build_model(instantiate("backbone", {"name": "convnet", "params": {"width": 16}}), 16, 32)
    method = instantiate("method", {"name": "csq", "params": {}})
    train_hash_model(model, method, tiny_splits.train, TrainConfig(epochs=8), torch.device("cpu"), make_generator(0))
    return model.eval()


def toml_lines(params: dict) -> str:
    """``key = value`` lines of a TOML table (a JSON string or number is also a TOML one)."""
    return "\n".join(f"{key} = {json.dumps(value)}" for key, value in params.items())


def tiny_benchmark(results: Path, *, dataset: dict, bits: int, epochs: int, width: int, target: str | int = "class_0",
                   body: str = "", name: str = "test", victim_extra: str = "", dataset_extra: str = "") -> str:
    """A benchmark file body: seed 0 on the CPU, a CSQ / convnet(``width``) victim on ``dataset`` (the
    [dataset] table's values), then ``body`` (its [[attack]] and [[defense]] tables)."""
    return f"""
[benchmark]
name = "{name}"
seeds = [0]
device = "cpu"
results = "{results}"

[dataset]
{toml_lines(dataset)}
{dataset_extra}

[victim]
method = "csq"
backbone = "convnet"
bits = {bits}
epochs = {epochs}
backbone_params.convnet = {{ width = {width} }}
{victim_extra}

[target]
label = {json.dumps(target)}

{body}
"""


def write_benchmark(folder: Path, file: str = "bench.toml", **benchmark) -> Path:
    """``tiny_benchmark(folder / "results", **benchmark)`` written to ``folder / file``; returns its path."""
    path = folder / file
    path.write_text(tiny_benchmark(folder / "results", **benchmark))
    return path


def benchmark_text(results: Path, attacks: str = "", defenses: str = "", victim_extra: str = "", dataset_extra: str = "") -> str:
    """A small benchmark file body (CSQ victim, tiny synthetic data) with extra [[attack]]/[[defense]] tables."""
    return tiny_benchmark(results, dataset={"name": "synthetic"} | TINY_DATASET, bits=16, epochs=8, width=16,
                          body=f"{attacks}\n\n{defenses}", victim_extra=victim_extra, dataset_extra=dataset_extra)


@pytest.fixture
def run_benchmark(tmp_path):
    """Write a benchmark file into tmp_path, run it in-process; returns (RunResult, results DataFrame)."""
    from hashbench.benchmark import run_benchmark as run
    from hashbench.config import load_spec
    from hashbench.report import collect_rows

    def _run(text: str, name: str = "bench.toml", executor: str | None = None):
        path = tmp_path / name
        path.write_text(text)
        spec = load_spec(path)
        result = run(spec, executor=executor, progress_bar=False, echo=lambda m: None)
        frame = collect_rows(spec.settings.results, [s.key for s in result.plan.evaluations()])
        return result, frame

    return _run
