"""Shared fixtures. Expensive things (datasets, a trained model) are built once per test session."""

from __future__ import annotations

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
    from hashbench.runner import instantiate
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
    from hashbench.runner import instantiate
    from hashbench.seeding import make_generator
    from hashbench.training import TrainConfig, build_model, train_hash_model

    torch.manual_seed(0)
    model = build_model(instantiate("backbone", {"name": "convnet", "params": {"width": 16}}), 16, 32)
    method = instantiate("method", {"name": "csq", "params": {}})
    train_hash_model(model, method, tiny_splits.train, TrainConfig(epochs=8), torch.device("cpu"), make_generator(0))
    return model.eval()


def benchmark_text(results: Path, attacks: str = "", defenses: str = "", victim_extra: str = "", dataset_extra: str = "") -> str:
    """A small benchmark file body (CSQ victim, tiny synthetic data) with extra [[attack]]/[[defense]] tables."""
    return f"""
[benchmark]
name = "test"
seeds = [0]
device = "cpu"
results = "{results}"

[dataset]
name = "synthetic"
image_size = 32
train_per_class = 100
query_per_class = 10
database_per_class = 150
{dataset_extra}

[victim]
method = "csq"
backbone = "convnet"
bits = 16
epochs = 8
backbone_params.convnet = {{ width = 16 }}
{victim_extra}

[target]
label = "class_0"

{attacks}

{defenses}
"""


@pytest.fixture
def run_benchmark(tmp_path):
    """Write a benchmark file into tmp_path, run it in-process; returns (RunResult, results DataFrame)."""
    from hashbench.benchmark import run_benchmark as run
    from hashbench.config import load_spec
    from hashbench.report import collect_rows

    def _run(text: str, name: str = "bench.toml"):
        path = tmp_path / name
        path.write_text(text)
        spec = load_spec(path)
        result = run(spec, progress_bar=False, echo=lambda m: None)
        frame = collect_rows(spec.settings.results, [s.key for s in result.plan.evaluations()])
        return result, frame

    return _run
