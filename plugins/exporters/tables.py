"""Leaderboard exporters: CSV, Markdown and JSON."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from hashbench import Exporter, Table, hookimpl, param


class CsvExporter(Exporter):
    """Comma-separated values, one row per configuration."""

    name = "csv"
    suffix = ".csv"

    def export(self, table, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)


@dataclass(frozen=True)
class MarkdownParams:
    digits: int = param(4, "decimals of every non-integer number")

    def validate(self) -> None:
        if not 0 <= self.digits <= 15:
            raise ValueError("digits must be in [0, 15]")


class MarkdownExporter(Exporter):
    """A GitHub-flavoured Markdown table."""

    name = "md"
    suffix = ".md"
    Params = MarkdownParams

    def export(self, table, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(Table.from_frame(table, float_format=f".{self.params.digits}f").to_markdown() + "\n")


@dataclass(frozen=True)
class JsonParams:
    indent: int = param(2, "spaces per nesting level (0: a new line per value, not indented)")

    def validate(self) -> None:
        if self.indent < 0:
            raise ValueError("indent must be >= 0")


class JsonExporter(Exporter):
    """A JSON list of records (NaN written as null)."""

    name = "json"
    suffix = ".json"
    Params = JsonParams

    def export(self, table, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # to_dict gives Python numbers at full precision (to_json would round them to 10 digits)
        records = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
                   for row in table.to_dict(orient="records")]
        Path(path).write_text(json.dumps(records, indent=self.params.indent) + "\n")


@hookimpl
def register_exporters(register):
    register(CsvExporter)
    register(MarkdownExporter)
    register(JsonExporter)
