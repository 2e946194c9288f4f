"""Plugins, datasets, targets and victim models from the identities a plan holds.

A plan names everything by identity (``{"name", "version", "params"}``); these functions turn one into
the object a stage uses. Datasets are loaded once per process: every stage of a run shares them.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from .api import DatasetContext, Target
from .data import DatasetSplits
from .errors import ConfigError
from .models import HashModel
from .params import build_params
from .records import canonical_json
from .plugins import get_registry
from .seeding import derive_seed, make_generator
from .training import TrainConfig, build_model


def cache_dir() -> Path:
    return Path(os.environ.get("HASHBENCH_CACHE", Path.home() / ".cache" / "hashbench"))


def instantiate(kind: str, identity: dict[str, Any]):
    cls = get_registry().get(kind, identity["name"])
    return cls(build_params(cls.Params, identity["params"], f"{kind} '{identity['name']}'"))


@lru_cache(maxsize=8)
def _load_dataset_cached(identity_json: str) -> DatasetSplits:
    dataset = instantiate("dataset", json.loads(identity_json))
    return dataset.load(DatasetContext(cache_dir=cache_dir() / "datasets", seed=0))


def load_dataset(identity: dict[str, Any]) -> DatasetSplits:
    return _load_dataset_cached(canonical_json(identity))


def resolve_target(label: Any, splits: DatasetSplits) -> Target:
    """A class name, an index, or a list of them -> a multi-hot Target, with a clear error otherwise. The
    error names no location: the caller knows which file and table the label came from."""
    labels = label if isinstance(label, list) else [label]
    vector = torch.zeros(splits.num_classes)
    for item in labels:
        if isinstance(item, int) and 0 <= item < splits.num_classes:
            vector[item] = 1
        elif isinstance(item, str) and item in splits.class_names:
            vector[splits.class_names.index(item)] = 1
        else:
            shown = ", ".join(splits.class_names[:12]) + (" ..." if splits.num_classes > 12 else "")
            raise ConfigError(f"target label {item!r} is not a class of this dataset; use an index below "
                              f"{splits.num_classes} or one of: {shown}")
    if len(labels) > 1 and not splits.multi_label:
        raise ConfigError("a list of target labels needs a multi-label dataset")
    return Target(vector, "+".join(map(str, labels)))


def victim_recipe(victim: dict[str, Any]) -> TrainConfig:
    return build_params(TrainConfig, victim["train"], "[victim]")


def victim_generator(victim: dict[str, Any], seed: int) -> torch.Generator:
    """The training generator of a victim: a function of its seed and settings only, so the clean and every
    backdoored or retrained victim of one seed draw the same method state (e.g. CSQ's hash centres)."""
    return make_generator(seed, "train", canonical_json(victim))


def new_model(victim: dict[str, Any], image_size: int, seed: int) -> HashModel:
    """A freshly initialised victim model; the init depends only on the victim config and seed, so a
    clean and a backdoored victim of one seed start from the same weights."""
    backbone = instantiate("backbone", victim["backbone"])
    torch.manual_seed(derive_seed(seed, "init", canonical_json(victim)))
    return build_model(backbone, victim["bits"], image_size)
