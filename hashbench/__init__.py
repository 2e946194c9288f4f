"""hashbench: backdoor attacks and defenses for deep-hashing image retrieval, benchmarked."""

import importlib as _importlib

from .errors import ConfigError, DataError, HashbenchError, PluginError, StageError, StoreError
from .hookspecs import hookimpl

__version__ = "0.1.0"
# Bumped whenever a metric's definition changes; written into every results row and leaderboard.
METRIC_CONVENTIONS_VERSION = "1"

# The rest of the public API is imported on first use (module __getattr__, PEP 562): it imports torch,
# which takes seconds, and `hashbench --help` or `hashbench fetch` need none of it.
_LAZY = {
    "api": ("Attack", "AttackContext", "Backbone", "Dataset", "DatasetContext", "DataFilter", "Defense",
            "DefenseContext", "Executor", "Exporter", "FilterResult", "HashMethod", "InputDetector",
            "InputPurifier", "MethodSetup", "Metric", "ModelRepair", "NoDefense", "Plugin", "Poisoning",
            "RepairResult", "SplitSizes", "Target", "ThreatModel", "Work", "WorkSizes"),
    "data": ("DatasetSplits", "ImageSet", "TensorImageSet", "iterate_batches", "to_float", "to_uint8"),
    "models": ("HashModel", "majority_code", "sign_codes"),
    "params": ("NoParams", "param"),
    "tables": ("Table",),
    "training": ("augment_batch",),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}

__all__ = [name for name in dir() if not name.startswith("_")] + list(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'hashbench' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value  # later look-ups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
