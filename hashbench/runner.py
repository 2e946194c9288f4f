"""Runs one stage against a store: the cache, lock and verify protocol around the stage bodies of
:mod:`hashbench.stages`. Every executor, in-process or on a Ray worker, runs stages through it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .devices import peak_memory_mb, resolve_device
from .errors import StoreError
from .records import Stage
from .seeding import derive_seed, seed_everything
from .stages import STAGE_FUNCTIONS
from .store import Store

log = logging.getLogger("hashbench")


@dataclass
class StageOutcome:
    stage_id: str
    status: str  # "done", "cached", "failed", "skipped"
    seconds: float = 0.0
    error: str | None = None
    # Why a cached copy was not used although one existed (a file failing its checksum, or an input that
    # was rebuilt in this run); executors then recompute the stages downstream of it too.
    rebuilt: str | None = None


class StageRunner:
    """Runs one stage at a time against a store; used by every executor."""

    def __init__(self, results: str | Path, device: str = "auto", log_fn: Callable[[str], None] | None = None):
        self.store = Store(results)
        self.device = resolve_device(device)
        self.say = log_fn or (lambda message: log.info(message))
        self.verified: set[str] = set()  # ids of stages whose files passed their checksums in this run

    def run(self, stage: Stage, force: bool = False) -> StageOutcome:
        """Compute ``stage`` unless a sound copy is cached.

        The store is checked again under the stage's lock, so two runs sharing a results folder never
        compute one stage twice. A cached copy is verified against its checksums the first time this
        runner uses it; one that fails is moved aside and recomputed, and ``rebuilt`` says which file.
        """
        store = self.store
        with store.lock(stage.kind, stage.key):
            exists = store.stage_dir(stage.kind, stage.key).exists()
            problem = None
            if exists and not force:
                problem = self.verify_once(stage.id)
                if problem is None:
                    return StageOutcome(stage.id, "cached")
                self.say(f"{stage.label}: {problem}; recomputing it")
            self._check_inputs(stage)
            if exists:
                store.discard(stage.kind, stage.key)
            started = time.perf_counter()
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            seed_everything(derive_seed(stage.seed, stage.kind, stage.key))
            with store.open_stage(stage.kind, stage.key, stage.config | {"deps": list(stage.deps), "label": stage.label}) as writer:
                STAGE_FUNCTIONS[stage.kind](self, stage, writer)
                writer.manifest["device"] = str(self.device)
                writer.manifest["peak_memory_mb"] = peak_memory_mb(self.device)
            self.verified.add(stage.id)
            rebuilt = f"its cached copy was rejected: {problem}" if problem else None
            return StageOutcome(stage.id, "done", time.perf_counter() - started, rebuilt=rebuilt)

    def verify_once(self, stage_id: str) -> str | None:
        """What is wrong with a stored stage (None: sound); checksums are read once per runner."""
        if stage_id in self.verified:
            return None
        problem = self.store.verify(*stage_id.split("/"))
        if problem is None:
            self.verified.add(stage_id)
        return problem

    def _check_inputs(self, stage: Stage) -> None:
        """Refuse to compute from an input that is missing or fails its checksums."""
        for dep in stage.deps:
            problem = self.verify_once(dep)
            if problem is not None:
                raise StoreError(f"input {dep} of {stage.id} cannot be used ({problem}); "
                                 "run the benchmark again to recompute it")
