"""Leaderboard exporters: CSV, Markdown and JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hashbench import Exporter, Table, hookimpl


class CsvExporter(Exporter):
    """Comma-separated values, one row per configuration."""

    name = "csv"
    suffix = ".csv"

    def export(self, table, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)


class MarkdownExporter(Exporter):
    """A GitHub-flavoured Markdown table."""

    name = "md"
    suffix = ".md"

    def export(self, table, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(Table.from_frame(table, float_format=".4f").to_markdown() + "\n")


class JsonExporter(Exporter):
    """A JSON list of records (NaN written as null)."""

    name = "json"
    suffix = ".json"

    def export(self, table, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # to_dict gives Python numbers at full precision (to_json would round them to 10 digits)
        records = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
                   for row in table.to_dict(orient="records")]
        Path(path).write_text(json.dumps(records, indent=2) + "\n")


@hookimpl
def register_exporters(register):
    register(CsvExporter)
    register(MarkdownExporter)
    register(JsonExporter)
