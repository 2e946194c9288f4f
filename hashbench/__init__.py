"""hashbench: backdoor attacks and defenses for deep-hashing image retrieval, benchmarked."""

from .api import (
    Attack,
    AttackContext,
    Backbone,
    Dataset,
    DatasetContext,
    DataFilter,
    Defense,
    DefenseContext,
    Executor,
    Exporter,
    FilterResult,
    HashMethod,
    InputDetector,
    InputPurifier,
    MethodSetup,
    Metric,
    ModelRepair,
    NoDefense,
    Plugin,
    Poisoning,
    RepairResult,
    SplitSizes,
    Target,
    ThreatModel,
    Work,
    WorkSizes,
)
from .data import DatasetSplits, ImageSet, TensorImageSet, iterate_batches, to_float, to_uint8
from .errors import ConfigError, DataError, HashbenchError, PluginError, StageError, StoreError
from .hookspecs import hookimpl
from .models import HashModel, sign_codes
from .params import NoParams, param

__version__ = "0.1.0"
# Bumped whenever a metric's definition changes; written into every results row and leaderboard.
METRIC_CONVENTIONS_VERSION = "1"

__all__ = [name for name in dir() if not name.startswith("_")]
