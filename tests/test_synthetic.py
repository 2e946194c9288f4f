"""The embedded dataset: deterministic, cached, single- and multi-label, any size."""

import pytest
import torch

from hashbench import DatasetContext
from hashbench.errors import ConfigError
from hashbench.loading import instantiate

SMALL = {"train_per_class": 6, "query_per_class": 3, "database_per_class": 10}


def load(tmp_path, **params):
    dataset = instantiate("dataset", {"name": "synthetic", "params": {**SMALL, **params}})
    return dataset.load(DatasetContext(cache_dir=tmp_path, seed=0))


def test_splits_sizes_labels_and_train_inside_database(tmp_path):
    splits = load(tmp_path)
    assert (len(splits.train), len(splits.query), len(splits.database)) == (60, 30, 100)
    assert splits.train.all_images().dtype == torch.uint8
    assert splits.train.all_images().shape[1:] == (3, 32, 32)
    assert torch.equal(splits.database.labels.sum(1), torch.ones(100))
    assert splits.num_classes == 10 and splits.class_names[0] == "class_0"
    # training images are database images (DeepHash protocol)
    db = {bytes(img.numpy()) for img in splits.database.all_images()}
    assert all(bytes(img.numpy()) in db for img in splits.train.all_images())


def test_deterministic_from_its_seed_and_cached(tmp_path):
    a = load(tmp_path / "a")
    b = load(tmp_path / "b")
    assert torch.equal(a.query.all_images(), b.query.all_images())
    assert len(list((tmp_path / "a").glob("synthetic-*.pt"))) == 1
    c = load(tmp_path / "a", seed=1)
    assert not torch.equal(a.query.all_images(), c.query.all_images())


def test_a_corrupt_cache_is_regenerated(tmp_path):
    first = load(tmp_path)
    cache = next(tmp_path.glob("synthetic-*.pt"))
    cache.write_bytes(b"garbage")
    again = load(tmp_path)
    assert torch.equal(first.train.all_images(), again.train.all_images())


def test_multi_label_mode_and_other_sizes(tmp_path):
    splits = load(tmp_path, multi_label=True, max_objects=3, image_size=48)
    counts = splits.database.labels.sum(1)
    assert splits.multi_label and counts.min() >= 1 and counts.max() <= 3 and (counts > 1).any()
    assert splits.query.all_images().shape[-1] == 48


def test_colour_classes_are_smooth_fields_whose_hue_is_the_label(tmp_path):
    splits = load(tmp_path, classes="colours", num_classes=12)
    images, labels = splits.database.all_images().float() / 255, splits.database.labels.argmax(1)
    assert splits.num_classes == 12 and torch.equal(splits.database.labels.sum(1), torch.ones(120))
    # smooth: neighbouring pixels differ by the noise and the lighting gradient only (shapes: 0.063)
    assert (images[..., 1:] - images[..., :-1]).abs().mean() < 0.04
    # the hue of the mean colour, on the wheel, sits at label / 12 (30 degrees apart)
    r, g, b = images.mean((2, 3)).unbind(1)
    hue = torch.atan2(3**0.5 * (g - b), 2 * r - g - b) / (2 * torch.pi) % 1.0
    offset = (hue - labels / 12 + 0.5) % 1.0 - 0.5
    assert offset.abs().max() < 1 / 72, "within 5 degrees of its class hue (jitter 1.8, lighting and noise)"


def test_invalid_parameters_are_config_errors():
    with pytest.raises(ConfigError, match="image_size must be between 8 and 224"):
        instantiate("dataset", {"name": "synthetic", "params": {"image_size": 4}})
    with pytest.raises(ConfigError, match="num_classes must be between 2 and 10 with classes = 'shapes'"):
        instantiate("dataset", {"name": "synthetic", "params": {"num_classes": 12}})
    with pytest.raises(ConfigError, match="'colours' is single-label"):
        instantiate("dataset", {"name": "synthetic", "params": {"classes": "colours", "multi_label": True}})
    with pytest.raises(ConfigError, match="textures"):
        instantiate("dataset", {"name": "synthetic", "params": {"classes": "textures"}})
