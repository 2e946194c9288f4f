"""The metric conventions a report prints, read from the package's own conventions.toml (package data,
so an installed hashbench has them; docs/metrics.md is the page for people and says the same)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files

from .tables import Table

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DATA_FILE = "conventions.toml"


@dataclass(frozen=True)
class Rule:
    topic: str
    text: str


@dataclass(frozen=True)
class MetricConvention:
    name: str  # the results column
    definition: str
    range: str
    better: str  # which way is better, or "reference" for a comparison row


@dataclass(frozen=True)
class Conventions:
    version: str
    rules: list[Rule]
    metrics: list[MetricConvention]

    def rules_table(self) -> Table:
        return Table(["topic", "convention"], [[r.topic, r.text] for r in self.rules], ["left", "left"])

    def metrics_table(self) -> Table:
        return Table(["column", "definition", "range", "better"],
                     [[m.name, m.definition, m.range, m.better] for m in self.metrics], ["left"] * 4)


@lru_cache(maxsize=1)
def load_conventions() -> Conventions:
    data = tomllib.loads(files(__package__).joinpath(DATA_FILE).read_text(encoding="utf-8"))
    return Conventions(str(data["version"]), [Rule(**r) for r in data["rule"]],
                       [MetricConvention(**m) for m in data["metric"]])
