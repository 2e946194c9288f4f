"""File-backed datasets, loaded from small files written in their real formats."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from hashbench import DataError, DatasetContext, iterate_batches
from hashbench.loading import instantiate


def load(name: str, tmp_path, **params):
    return instantiate("dataset", {"name": name, "params": params}).load(DatasetContext(tmp_path / "cache", 0))


# ----------------------------------------------------------------------------------------------- cifar10


def write_cifar(folder, per_batch: int = 40, bytes_keys: bool = False) -> None:
    """Five training batches and a test batch in the python-pickle layout torchvision reads (``bytes_keys``:
    as Python 3 re-pickles a batch it loaded with encoding="bytes", b"data" and b"labels")."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        labels = [(b + i) % 10 for i in range(per_batch)]
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        data[:, 0] = labels  # first red pixel encodes the class, to follow images through the splits
        batch = {"batch_label": f"batch {b}", "labels": labels, "data": data,
                 "filenames": [f"img_{b}_{i}.png" for i in range(per_batch)]}
        if bytes_keys:
            batch = {key.encode(): value for key, value in batch.items()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=4 if bytes_keys else 2)


def test_cifar10_protocols(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    counts = dict(query_per_class=2, train_per_class=5)
    s = load("cifar10", tmp_path, root=str(tmp_path), **counts)  # 240 images, 24 per class
    assert (len(s.query), len(s.train), len(s.database)) == (20, 50, 170) and s.topk == -1
    assert s.class_names[0] == "airplane" and s.train.labels.sum(0).tolist() == [5.0] * 10
    first_pixel = s.train.all_images()[:, 0, 0, 0]
    assert torch.equal(first_pixel.long(), s.train.labels.argmax(1))  # images keep their labels
    one = load("cifar10", tmp_path, root=str(tmp_path), protocol="cifar10-1", **counts)
    assert len(one.database) == 220 and torch.equal(one.query.all_images(), s.query.all_images())
    two = load("cifar10", tmp_path, root=str(tmp_path), protocol="cifar10-2")
    assert (len(two.query), len(two.train), len(two.database)) == (40, 200, 200)
    again = load("cifar10", tmp_path, root=str(tmp_path), **counts)
    assert torch.equal(again.query.all_images(), s.query.all_images())  # fixed seed


def test_cifar10_reads_batches_repickled_with_bytes_keys(tmp_path):
    write_cifar(tmp_path / "original" / "cifar-10-batches-py")
    write_cifar(tmp_path / "repickled" / "cifar-10-batches-py", bytes_keys=True)
    with open(tmp_path / "repickled" / "cifar-10-batches-py" / "test_batch", "rb") as f:
        assert b"labels" in pickle.load(f, encoding="bytes")  # the file really has bytes keys
    counts = dict(query_per_class=2, train_per_class=5)
    original = load("cifar10", tmp_path / "a", root=str(tmp_path / "original"), **counts)
    repickled = load("cifar10", tmp_path / "b", root=str(tmp_path / "repickled"), **counts)
    for split in ("train", "query", "database"):
        assert torch.equal(getattr(repickled, split).all_images(), getattr(original, split).all_images())
        assert torch.equal(getattr(repickled, split).labels, getattr(original, split).labels)


def test_cifar10_resizes_on_access(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    s = load("cifar10", tmp_path, root=str(tmp_path), image_size=64, query_per_class=2, train_per_class=5)
    assert not s.train.in_memory and s.train.images([0, 1]).shape == (2, 3, 64, 64)


def test_cifar10_missing_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as err:
        load("cifar10", tmp_path, root=str(tmp_path / "nowhere"))
    assert "data_batch_1" in str(err.value) and "cifar-10-python.tar.gz" in str(err.value)


def test_cifar10_refuses_pickles_that_run_code(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f)
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        load("cifar10", tmp_path, root=str(tmp_path))


# ---------------------------------------------------------------------------------------------- listfile


def write_images(root, names, size=(12, 9)) -> None:
    rng = np.random.default_rng(0)
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def test_listfile_single_and_two_file_forms(tmp_path):
    names = [f"img/{i}.{'png' if i % 2 else 'jpg'}" for i in range(6)]
    write_images(tmp_path, names)
    labels = ["1 0 1", "0 1 0", "1 1 0", "0 0 1", "1 0 0", "0 1 1"]
    (tmp_path / "train.txt").write_text("".join(f"{n} {l}\n" for n, l in zip(names[:4], labels)))
    (tmp_path / "database.txt").write_text("".join(f"{n} {l}\n" for n, l in zip(names, labels)))
    (tmp_path / "test_img.txt").write_text("\n".join(names[4:]) + "\n")
    (tmp_path / "test_label.txt").write_text("\n".join(labels[4:]) + "\n")
    s = load("listfile", tmp_path, root=str(tmp_path), image_size=8)
    assert (len(s.train), len(s.query), len(s.database)) == (4, 2, 6)
    assert s.multi_label and s.num_classes == 3 and s.topk == -1
    assert s.query.labels.tolist() == [[1, 0, 0], [0, 1, 1]]
    batches = list(iterate_batches(s.database, 4, num_workers=1))  # decoded on a DataLoader worker
    assert batches[0][0].shape == (4, 3, 8, 8) and batches[0][0].dtype == torch.uint8


def test_listfile_preset_checks_classes_and_sets_topk(tmp_path):
    write_images(tmp_path, ["a.png"])
    for stem in ("train", "database", "test"):
        (tmp_path / f"{stem}.txt").write_text("a.png " + " ".join(["0"] * 20 + ["1"]) + "\n")
    assert load("listfile", tmp_path, root=str(tmp_path), preset="nuswide21", image_size=8).topk == 5000
    with pytest.raises(DataError, match="preset 'coco' has 80 classes"):
        load("listfile", tmp_path, root=str(tmp_path), preset="coco")


def test_listfile_missing_lists_and_images(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load("listfile", tmp_path, root=str(tmp_path / "nowhere"), preset="coco")
    (tmp_path / "train.txt").write_text("gone.jpg 1 0\n")
    with pytest.raises(DataError, match="no list for the 'test' split"):
        load("listfile", tmp_path, root=str(tmp_path))
    for stem in ("database", "test"):
        (tmp_path / f"{stem}.txt").write_text("gone.jpg 1 0\n")
    with pytest.raises(DataError, match="gone.jpg"):
        load("listfile", tmp_path, root=str(tmp_path))


# ------------------------------------------------------------------------------------------- imagefolder


def test_imagefolder_pooled_and_split_layouts(tmp_path):
    pooled = tmp_path / "pooled"
    write_images(pooled, [f"{c}/{i}.png" for c in ("cat", "dog") for i in range(5)])
    s = load("imagefolder", tmp_path, root=str(pooled), image_size=8, query_per_class=1, train_per_class=2)
    assert s.class_names == ["cat", "dog"] and (len(s.query), len(s.train), len(s.database)) == (2, 4, 8)
    assert s.query.images([0, 1]).shape == (2, 3, 8, 8)
    split = tmp_path / "split"
    write_images(split, [f"{part}/{c}/0.jpg" for part in ("train", "query", "database") for c in ("a", "b")])
    t = load("imagefolder", tmp_path, root=str(split), image_size=8)
    assert len(t.train) == len(t.query) == len(t.database) == 2 and t.database.labels.tolist() == [[1, 0], [0, 1]]


def test_imagefolder_missing(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load("imagefolder", tmp_path, root=str(tmp_path / "nowhere"))
