"""The prepared cache (``prepared = true``): the same pixels as decoding, built once, rebuilt on change."""

from __future__ import annotations

import pickle

import numpy as np
import torch
from PIL import Image

from hashbench import DatasetContext, iterate_batches
from hashbench.loading import instantiate
from hashbench_plugins.datasets.files import PreparedImageSet


def write_listfile(root, count=7):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(count):
        name = f"img/{i}.{'png' if i % 2 else 'jpg'}"
        (root / "img").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (10 + i, 14, 3), dtype=np.uint8)).save(root / name)
        lines.append(f"{name} {i % 2} {1 - i % 2}\n")
    for stem, part in (("train", lines[:4]), ("test", lines[4:]), ("database", lines)):
        (root / f"{stem}.txt").write_text("".join(part))


def load(root, cache, **params):
    dataset = instantiate("dataset", {"name": "listfile", "params": {"root": str(root), "image_size": 8, **params}})
    return dataset.load(DatasetContext(cache, 0))


def test_prepared_images_equal_decoded_ones_and_build_once(tmp_path):
    write_listfile(tmp_path / "data")
    plain = load(tmp_path / "data", tmp_path / "cache")
    ready = load(tmp_path / "data", tmp_path / "cache", prepared=True)
    assert isinstance(ready.database, PreparedImageSet)
    for split in ("train", "query", "database"):
        assert torch.equal(getattr(ready, split).all_images(), getattr(plain, split).all_images())
        assert torch.equal(getattr(ready, split).labels, getattr(plain, split).labels)
    files = sorted((tmp_path / "cache" / "prepared").glob("*.u8"))
    assert len(files) == 3
    assert sorted(f.stat().st_size for f in files) == [3 * 3 * 64, 4 * 3 * 64, 7 * 3 * 64]  # n x 3 x 8 x 8 bytes
    stamps = {f: f.stat().st_mtime_ns for f in files}
    load(tmp_path / "data", tmp_path / "cache", prepared=True)
    assert {f: f.stat().st_mtime_ns for f in files} == stamps  # read again, not rebuilt
    # DataLoader workers and pickled copies map the file themselves
    copy = pickle.loads(pickle.dumps(ready.database))
    assert copy._array is None and torch.equal(copy.images([6, 0]), plain.database.images([6, 0]))
    batches = list(iterate_batches(ready.database, 3, num_workers=2))
    assert torch.equal(torch.cat([b[0] for b in batches]), plain.database.all_images())


def test_prepared_file_is_rebuilt_when_an_image_changes(tmp_path):
    write_listfile(tmp_path / "data")
    load(tmp_path / "data", tmp_path / "cache", prepared=True)
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(tmp_path / "data" / "img" / "6.jpg")
    ready = load(tmp_path / "data", tmp_path / "cache", prepared=True)
    assert len(list((tmp_path / "cache" / "prepared").glob("*.u8"))) == 5  # new query and database files
    assert int(ready.database.images([6]).max()) == 0
