"""The Fashion-MNIST / MNIST loaders, on IDX files the tests write in the real format (gzipped and raw)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hashbench import DataError, DatasetContext
from hashbench.loading import instantiate

DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding: two zero bytes, the type code of unsigned bytes (8), the rank, big-endian sizes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, per_class: dict[str, int], compress: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """Four IDX files with ``per_class[split]`` images of each of 10 classes; returns what was written.
    Each image's first pixel is its position in train + test order, so the tests can trace images."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written, offset = {}, 0
    for split, prefix in (("train", "train"), ("test", "t10k")):
        labels = np.repeat(np.arange(10), per_class[split])
        rng.shuffle(labels)
        images = rng.integers(0, 256, (len(labels), 28, 28)).astype(np.uint8)
        images[:, 0, 0] = (np.arange(len(labels)) + offset) % 256
        offset += len(labels)
        for name, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            data = idx_bytes(array)
            if compress:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
        written[split] = (images, labels)
    return written


def load(name: str = "fashion_mnist", **params):
    dataset = instantiate("dataset", {"name": name, "params": params})
    return dataset.load(DatasetContext(cache_dir=Path("/nonexistent"), seed=0))


@pytest.mark.parametrize("compress", [True, False], ids=["gzipped", "raw"])
def test_protocol_splits_padding_and_class_names(tmp_path, compress):
    written = write_idx(tmp_path, {"train": 6, "test": 2}, compress)
    splits = load(root=str(tmp_path), query_per_class=2, train_per_class=3)
    assert (len(splits.query), len(splits.train), len(splits.database)) == (20, 30, 60)
    assert splits.class_names[0] == "T-shirt/top" and splits.class_names[9] == "Ankle boot"
    assert splits.topk == -1 and not splits.multi_label
    for image_set, per_class in ((splits.query, 2), (splits.train, 3), (splits.database, 6)):
        assert image_set.labels.sum(0).tolist() == [per_class] * 10
    # a 2-pixel black border around the untouched 28 x 28 image, repeated over 3 channels
    db = splits.database.all_images()
    assert db.shape == (60, 3, 32, 32) and db.dtype == torch.uint8
    assert db[:, :, :2].eq(0).all() and db[:, :, -2:].eq(0).all() and db[:, :, :, :2].eq(0).all()
    assert torch.equal(db[:, 0], db[:, 1]) and torch.equal(db[:, 0], db[:, 2])
    all_images = np.concatenate([written["train"][0], written["test"][0]])
    all_labels = np.concatenate([written["train"][1], written["test"][1]])
    positions = db[:, 0, 2, 2].long().numpy()  # the traced first pixel
    assert np.array_equal(db[:, 0, 2:30, 2:30].numpy(), all_images[positions])
    assert np.array_equal(splits.database.labels.argmax(1).numpy(), all_labels[positions])
    # queries never enter the database; the training images are drawn from it
    query_positions = set(splits.query.all_images()[:, 0, 2, 2].tolist())
    train_positions = set(splits.train.all_images()[:, 0, 2, 2].tolist())
    assert not query_positions & set(positions.tolist())
    assert train_positions <= set(positions.tolist())


def test_the_per_class_draw_follows_the_seed(tmp_path):
    write_idx(tmp_path, {"train": 6, "test": 2}, True)
    first = lambda seed: load(root=str(tmp_path), query_per_class=2, train_per_class=3, seed=seed).query.all_images()[:, 0, 2, 2]
    assert torch.equal(first(0), first(0))
    assert not torch.equal(first(0), first(1))


def test_another_image_size_resizes_the_padded_image(tmp_path):
    write_idx(tmp_path, {"train": 4, "test": 1}, True)
    splits = load(root=str(tmp_path), query_per_class=1, train_per_class=2, image_size=64)
    assert splits.train.images([0]).shape == (1, 3, 64, 64)


def test_mnist_reads_the_same_format_with_digit_names(tmp_path):
    write_idx(tmp_path, {"train": 3, "test": 1}, False)
    splits = load("mnist", root=str(tmp_path), query_per_class=1, train_per_class=2)
    assert splits.class_names == [str(d) for d in range(10)]
    assert len(splits.database) == 30


def _corrupt(folder: Path, name: str, edit) -> None:
    path = folder / f"{name}.gz"
    path.write_bytes(gzip.compress(edit(gzip.decompress(path.read_bytes()))))


@pytest.mark.parametrize("name, edit, message", [
    ("train-images-idx3-ubyte", lambda b: bytes([0, 0, 8, 1]) + b[4:], "not an IDX image file (magic number 2049, expected 2051)"),
    ("train-labels-idx1-ubyte", lambda b: b"\x00\x00\x08\x03" + b[4:], "not an IDX label file"),
    ("t10k-images-idx3-ubyte", lambda b: b[:-100], "truncated or padded"),
    ("t10k-labels-idx1-ubyte", lambda b: b[:4] + (11).to_bytes(4, "big") + b[8:] + b"\x00", "holds 10 images but t10k-labels-idx1-ubyte holds 11 labels"),
], ids=["image-magic", "label-magic", "truncated", "count-mismatch"])
def test_each_bad_file_gets_one_clear_error(tmp_path, name, edit, message):
    write_idx(tmp_path, {"train": 3, "test": 1}, True)
    _corrupt(tmp_path, name, edit)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(root=str(tmp_path), query_per_class=1, train_per_class=1)


def test_a_truncated_gzip_stream_is_named(tmp_path):
    write_idx(tmp_path, {"train": 3, "test": 1}, True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: cannot be read as gzip"):
        load(root=str(tmp_path), query_per_class=1, train_per_class=1)


def test_a_miss_names_all_three_places_and_how_to_get_the_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HASHBENCH_DATA", str(tmp_path / "shared"))
    dataset = instantiate("dataset", {"name": "fashion_mnist", "params": {}})
    monkeypatch.setattr(type(dataset), "search_roots", lambda self: [Path("data/fashion-mnist"),
                        tmp_path / "shared" / "fashion-mnist", tmp_path / "debian" / "fashion-mnist"])
    with pytest.raises(DataError) as error:
        dataset.load(DatasetContext(cache_dir=tmp_path, seed=0))
    text = str(error.value)
    for place in ("data/fashion-mnist", str(tmp_path / "shared" / "fashion-mnist"), "apt-get install dataset-fashion-mnist",
                  "hashbench fetch fashion_mnist"):
        assert place in text


def test_without_root_the_standard_places_are_searched_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HASHBENCH_DATA", str(tmp_path / "shared"))
    roots = instantiate("dataset", {"name": "fashion_mnist", "params": {}}).search_roots()
    assert roots == [Path("data/fashion-mnist"), tmp_path / "shared" / "fashion-mnist", Path("/usr/share/datasets/fashion-mnist")]
    write_idx(tmp_path / "shared" / "fashion-mnist", {"train": 3, "test": 1}, True)
    assert len(load(query_per_class=1, train_per_class=1).database) == 30


@pytest.mark.skipif(not DEBIAN_FOLDER.is_dir(), reason=f"{DEBIAN_FOLDER} is absent: `apt-get install dataset-fashion-mnist` (CI installs it)")
def test_the_real_fashion_mnist_files_load_under_the_protocol(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no data/fashion-mnist here: the Debian folder is found
    monkeypatch.delenv("HASHBENCH_DATA", raising=False)
    splits = load()
    assert (len(splits.query), len(splits.train), len(splits.database)) == (1000, 5000, 69000)
    assert splits.database.labels.sum(0).tolist() == [6900.0] * 10
    images = splits.train.all_images()
    assert images.shape == (5000, 3, 32, 32) and images[:, :, :2].eq(0).all()
    assert 70 < images[:, :, 2:30, 2:30].float().mean() < 76  # Fashion-MNIST: 72.9 over all 70,000 images
