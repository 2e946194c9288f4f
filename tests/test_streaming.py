"""Stages read a split batch by batch: a file-backed query set is never held whole (docs/performance.md)."""

from __future__ import annotations

from conftest import write_benchmark
from hashbench.config import load_spec
from hashbench.data import ImageSet, TensorImageSet
from hashbench.benchmark import plan_run
from hashbench.loading import load_dataset
from hashbench.runner import StageRunner

BODY = """
[[attack]]
name = "badnets"
poison_rate = 0.05

[[defense]]
name = "jpeg"

[[defense]]
name = "strip"
overlays = 2
"""


def test_input_defenses_stream_the_query_set(tmp_path, monkeypatch):
    path = write_benchmark(tmp_path, dataset=dict(name="synthetic", num_classes=4, train_per_class=10, query_per_class=10,
                           database_per_class=15), bits=8, epochs=1, width=4, target=0, body=BODY)
    plan = plan_run(load_spec(path))
    runner = StageRunner(tmp_path / "results", "cpu")
    for stage in plan.ordered():
        if stage.kind not in ("defend", "evaluate"):
            runner.run(stage)
    queries = len(load_dataset(next(s for s in plan.ordered() if s.kind == "clean_victim").config["dataset"]).query)
    whole: list[int] = []  # sizes of the sets something asked for whole

    def spy(original):
        def all_images(self):
            whole.append(len(self))
            return original(self)
        return all_images

    monkeypatch.setattr(ImageSet, "all_images", spy(ImageSet.all_images))
    monkeypatch.setattr(TensorImageSet, "all_images", spy(TensorImageSet.all_images))
    defends = [s for s in plan.ordered() if s.kind == "defend"]
    assert {s.config["defense"]["name"] for s in defends} == {"none", "jpeg", "strip"}
    for stage in defends:
        assert runner.run(stage).status == "done"
    assert queries == 40 and queries not in whole  # strip may take its clean pool (2 images) whole
