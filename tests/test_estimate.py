"""`hashbench plan --estimate`: split sizes without loading, image passes per stage, seconds per kind."""

from __future__ import annotations

import pytest
import torch

from conftest import write_benchmark
from hashbench import SplitSizes
from hashbench.cli import main
from hashbench.config import load_spec
from hashbench.errors import ConfigError
from hashbench.estimate import ThroughputTable, estimate_plan, parse_throughput, stage_work
from hashbench.plan import build_plan
from hashbench.loading import instantiate

SYNTHETIC = dict(name="synthetic", train_per_class=20, query_per_class=5, database_per_class=30)
GIVEN = {"train": 100.0, "encode": 1000.0, "retrieval": 1e6}


def write(tmp_path, dataset=SYNTHETIC, defense="jpeg"):
    return write_benchmark(tmp_path, dataset=dataset, bits=8, epochs=3, width=4, target=0,
                           body=f'[[attack]]\nname = "badnets"\npoison_rate = 0.1\n\n[[defense]]\nname = "{defense}"')


def sizes(name, **params):
    return instantiate("dataset", {"name": name, "params": params}).sizes()


def test_dataset_sizes_without_loading(tmp_path):
    assert sizes("synthetic", num_classes=4, train_per_class=5, query_per_class=3, database_per_class=10,
                 image_size=16) == SplitSizes(20, 12, 40, 16)
    # CIFAR-10's 60,000 images: 1,000 queries and 5,000 training images drawn per class
    assert sizes("cifar10", root="/nowhere") == SplitSizes(5000, 1000, 54000, 32)
    assert sizes("cifar10", protocol="cifar10-1", query_per_class=50, image_size=224) == SplitSizes(5000, 500, 59500, 224)
    assert sizes("cifar10", protocol="cifar10-2") == SplitSizes(50000, 10000, 50000, 32)
    assert sizes("listfile", root=str(tmp_path / "nowhere"), preset="nuswide21") == SplitSizes(10500, 2100, 193734, 224)
    assert sizes("listfile", root=str(tmp_path / "nowhere")) is None  # no lists, no preset: unknown
    assert sizes("imagefolder", root=str(tmp_path / "nowhere")) is None


def test_listfile_sizes_count_the_lists_on_disk(tmp_path):
    (tmp_path / "train.txt").write_text("a.jpg 1 0\nb.jpg 0 1\n\n")
    (tmp_path / "database.txt").write_text("a.jpg 1 0\nb.jpg 0 1\nc.jpg 1 1\n")
    (tmp_path / "test_img.txt").write_text("d.jpg\n")
    (tmp_path / "test_label.txt").write_text("1 0\n")
    # the lists win over the preset's declared sizes (images need not exist: nothing is opened)
    assert sizes("listfile", root=str(tmp_path), preset="coco", image_size=64) == SplitSizes(2, 1, 3, 64)


def test_imagefolder_sizes_count_files(tmp_path):
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(7):
            (tmp_path / c / f"{i}.png").write_bytes(b"")
    # pooled layout: 3 queries a class, the database is the other 4 a class, 2 a class trained on
    assert sizes("imagefolder", root=str(tmp_path), query_per_class=3, train_per_class=2) == SplitSizes(4, 6, 8, 224)


def test_parse_throughput():
    assert parse_throughput("train=850, encode=5e3") == {"train": 850.0, "encode": 5000.0}
    assert parse_throughput(None) == {}
    for bad in ("train=0", "speed=3", "encode=fast", "train=inf"):
        with pytest.raises(ConfigError, match="--throughput item"):
            parse_throughput(bad)


def test_stage_work_by_hand(tmp_path):
    """Synthetic 10 classes: 200 train, 50 queries, 300 database images; 3 epochs; poison rate 0.1."""
    plan = build_plan(load_spec(write(tmp_path, defense="finetune")))
    split = SplitSizes(200, 50, 300, 32)
    by_kind = {}
    for stage in plan.ordered():
        owner = stage if "victim" in stage.config else next(s for s in plan.ordered() if s.kind == "clean_victim")
        by_kind.setdefault((stage.kind, stage.config.get("row", {}).get("attack")), []).append(
            stage_work(plan, stage, split, owner.config["victim"]))
    clean = by_kind[("clean_victim", None)][0]
    assert (clean[0].train, clean[0].encode, clean[1]) == (600, 350, 0)  # 3 x 200; database + queries
    assert by_kind[("evaluate", None)][0][1] == 50 * 300  # the clean row ranks the queries once
    evaluate = by_kind[("evaluate", "badnets")][0]
    assert (evaluate[0].encode, evaluate[1]) == (100, 4 * 50 * 300)  # four sets of codes, each ranked once
    # finetune (10 epochs) on the defender's clean 5 %: 10 x 10 images, then the database and queries
    finetune = next(w for (kind, _), ws in by_kind.items() if kind == "defend" for w, _ in ws if w.train)
    assert (finetune.train, finetune.encode) == (100, 350)


def test_pretraining_is_priced_on_its_images(tmp_path):
    bench = write(tmp_path)
    bench.write_text(bench.read_text().replace("epochs = 3\n", "epochs = 3\npretrain_epochs = 2\n"))
    plan = build_plan(load_spec(bench))
    estimate = estimate_plan(plan, set(plan.stages), ThroughputTable(torch.device("cpu"), dict(GIVEN)))
    pretrain = estimate.by_kind()["pretrain"]
    # one backbone pretrained for the seed, 2 epochs over the 300 database images (pretrain_on's default)
    assert len(pretrain) == 1 and pretrain[0].work.train == 600 and pretrain[0].seconds == pytest.approx(6.0)


def test_estimate_seconds_from_given_throughput(tmp_path):
    plan = build_plan(load_spec(write(tmp_path)))
    estimate = estimate_plan(plan, set(plan.stages), ThroughputTable(torch.device("cpu"), dict(GIVEN)))
    by_kind = {k: sum(c.seconds for c in v) for k, v in estimate.by_kind().items()}
    # each victim: 600 train / 100 + 350 encode / 1000 = 6.35 s
    assert by_kind["clean_victim"] == pytest.approx(6.35) and by_kind["victim"] == pytest.approx(6.35)
    # rows: clean (15,000 pairs), jpeg and none (each 60,000 pairs: four sets of 50 codes ranked once; 50 or
    # 100 encodes: jpeg's defend stage encodes the purified queries and triggered queries, 100 encodes)
    assert by_kind["evaluate"] == pytest.approx(135_000 / 1e6 + 150 / 1000)
    assert by_kind["defend"] == pytest.approx(100 / 1000)
    # badnets needs no surrogate, so the backdoored victim does not wait for the clean one: the longest
    # chain is attack, poison (both free), victim, defend (jpeg: 100 encodes), its row (50 encodes)
    assert estimate.critical_path_seconds() == pytest.approx(6.35 + 0.1 + 60_000 / 1e6 + 0.05)


def test_cli_estimate_prints_a_cost_without_data(tmp_path, capsys):
    dataset = dict(name="listfile", preset="nuswide21", root=str(tmp_path / "absent"))
    args = ["plan", str(write(tmp_path, dataset)), "--estimate", "--workers", "4",
            "--throughput", "train=100,encode=1000,retrieval=1e6"]
    assert main(args) == 0
    out = capsys.readouterr().out
    # a victim: 3 x 10,500 / 100 + (193,734 + 2,100) / 1000 = 510.8 s
    assert "| clean_victim |      1 | 31.5 k" in out and "On 4 worker(s)" in out
    assert "train = 100 images/s (given with --throughput)" in out
    unknown = write(tmp_path, dict(name="listfile", root=str(tmp_path / "absent")))
    assert main(["plan", str(unknown), "--estimate", "--throughput", "train=1,encode=1,retrieval=1"]) == 0
    assert "Not priced: dataset(s) listfile" in capsys.readouterr().out
    assert main(["plan", str(unknown), "--estimate", "--workers", "0"]) == 2
