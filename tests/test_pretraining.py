"""The training loop's augmentation and schedule, and the pretrain stage victims start from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hashbench.config import load_spec
from hashbench.plan import build_plan
from hashbench.pretraining import pretraining_images
from hashbench.training import TrainConfig, augment_batch

REPO = Path(__file__).resolve().parent.parent


def test_crop_shifts_each_image_by_its_own_offset_inside_a_zero_border():
    images = torch.arange(2 * 3 * 16 * 16, dtype=torch.int64).remainder(250).add(1).to(torch.uint8).reshape(2, 3, 16, 16)
    generator = torch.Generator().manual_seed(0)
    out = augment_batch(images, "crop", generator)
    offsets = torch.randint(0, 5, (2, 2), generator=torch.Generator().manual_seed(0))  # pad 16 // 8 = 2
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(2):
        dy, dx = offsets[0, i].item(), offsets[1, i].item()
        assert torch.equal(out[i], padded[i, :, dy:dy + 16, dx:dx + 16])
    assert out.dtype == torch.uint8 and out.shape == images.shape


def test_crop_flip_mirrors_about_half_the_images_and_none_leaves_them_alone():
    images = torch.randint(1, 255, (400, 3, 8, 8), dtype=torch.uint8)
    assert augment_batch(images, "none", torch.Generator()) is images
    out = augment_batch(images, "crop_flip", torch.Generator().manual_seed(1))
    # with pad 1, an unshifted image is either itself or its mirror image
    unshifted = [i for i in range(400) if out[i].ne(0).all()]
    mirrored = sum(torch.equal(out[i], images[i].flip(2)) for i in unshifted)
    kept = sum(torch.equal(out[i], images[i]) for i in unshifted)
    assert mirrored + kept == len(unshifted) > 20
    assert 0.3 < mirrored / len(unshifted) < 0.7


def test_the_cosine_schedule_decays_the_learning_rate_to_zero(tiny_splits):
    from hashbench.loading import instantiate
    from hashbench.seeding import make_generator
    from hashbench.training import build_model, train_hash_model

    model = build_model(instantiate("backbone", {"name": "convnet", "params": {"width": 4}}), 8, 32)
    seen = []
    original = torch.optim.Adam.step

    def record(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    subset = tiny_splits.train.subset(torch.arange(64))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.Adam, "step", record)
        train_hash_model(model, instantiate("method", {"name": "csq", "params": {}}), subset,
                         TrainConfig(epochs=2, batch_size=16, lr=0.01, schedule="cosine"), torch.device("cpu"), make_generator(0))
    assert len(seen) == 8 and seen[0] == pytest.approx(0.01)
    assert all(a > b for a, b in zip(seen, seen[1:]))  # strictly decreasing, step by step
    assert seen[-1] == pytest.approx(0.01 * (1 + torch.cos(torch.tensor(7 / 8 * torch.pi)).item()) / 2)


def test_pretraining_sees_the_database_or_the_training_split_never_the_queries(tiny_splits):
    assert pretraining_images(tiny_splits, "database") is tiny_splits.database
    assert pretraining_images(tiny_splits, "train") is tiny_splits.train


def test_victims_retrained_and_surrogate_victims_depend_on_the_pretrain_stage(tmp_path):
    text = (REPO / "benchmarks" / "smoke.toml").read_text().replace("[victim]\n", "[victim]\npretrain_epochs = 2\n")
    text += '\n[[defense]]\nname = "spectral"\n\n[[attack]]\nname = "badhash"\npoison_rate = 0.1\n'
    path = tmp_path / "bench.toml"
    path.write_text(text)
    stages = build_plan(load_spec(path)).ordered()
    pretrain = [s for s in stages if s.kind == "pretrain"]
    assert len(pretrain) == 1
    for stage in stages:
        if stage.kind in ("clean_victim", "victim", "defend"):
            assert pretrain[0].id in stage.deps, stage.label
    # without pretrain_epochs no such stage exists and victims train from scratch
    assert not [s for s in build_plan(load_spec(REPO / "benchmarks" / "smoke.toml")).ordered() if s.kind == "pretrain"]


def test_methods_and_bits_share_the_pretrained_backbone_but_not_its_recipe(tmp_path):
    text = (REPO / "benchmarks" / "smoke.toml").read_text()
    text = text.replace('method = "csq"', 'method = ["csq", "dpsh"]').replace("bits = 16", "bits = [16, 32]")
    text = text.replace("[victim]\n", "[victim]\npretrain_epochs = 2\n")
    path = tmp_path / "bench.toml"
    path.write_text(text)
    stages = build_plan(load_spec(path)).ordered()
    assert sum(s.kind == "clean_victim" for s in stages) == 4
    assert sum(s.kind == "pretrain" for s in stages) == 1
    path.write_text(text.replace("pretrain_epochs = 2", "pretrain_epochs = 3"))
    other = [s for s in build_plan(load_spec(path)).ordered() if s.kind == "pretrain"]
    assert len(other) == 1 and other[0].key != next(s for s in stages if s.kind == "pretrain").key


def test_victims_start_from_the_stored_pretrained_backbone(run_benchmark, tmp_path):
    """With no fine-tuning epochs, a victim's backbone is exactly the pretrain stage's weights; the clean
    and the backdoored victim share them."""
    from hashbench.store import Store

    text = (REPO / "benchmarks" / "smoke.toml").read_text().replace('results = "results/smoke"', f'results = "{tmp_path / "r"}"')
    text = text.replace("epochs = 8", "epochs = 0\npretrain_epochs = 3")
    result, frame = run_benchmark(text)
    assert not result.failures
    store = Store(tmp_path / "r")
    stage = {s.kind: s for s in result.plan.ordered()}
    pretrained = store.load("pretrain", stage["pretrain"].key, "backbone.pt")
    for kind in ("clean_victim", "victim"):
        model = store.load(kind, stage[kind].key, "model.pt")
        for name, weight in pretrained.items():
            assert torch.equal(model[f"backbone.{name}"], weight), (kind, name)
    losses = store.manifest("pretrain", stage["pretrain"].key)["logs"]["epoch_losses"]
    assert len(losses) == 3 and losses[2] < losses[0]  # the classifier learns
