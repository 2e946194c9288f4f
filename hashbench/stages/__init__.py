"""The stage bodies, one module per kind (docs/architecture.md). Each is a function of (runner, record,
writer): it reads its own record and the files of the stages it depends on, and writes its files and
metrics through the writer. :class:`hashbench.runner.StageRunner` runs them."""

from __future__ import annotations

from typing import Callable

from .attack import run_attack, run_poison
from .defend import run_defend
from .evaluate import run_evaluate
from .pretrain import run_pretrain
from .victims import run_clean_victim, run_victim

STAGE_FUNCTIONS: dict[str, Callable] = {
    "pretrain": run_pretrain,
    "clean_victim": run_clean_victim,
    "attack": run_attack,
    "poison": run_poison,
    "victim": run_victim,
    "defend": run_defend,
    "evaluate": run_evaluate,
}
