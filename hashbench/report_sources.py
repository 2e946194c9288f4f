"""Which stages a report was built from, and whether the results have moved on since.

A report records every stage it read, each with a digest of that stage's ``manifest.json`` (which
carries the stage's checksums and start time, so a recomputed stage gets a new digest). It is stale
when a recorded stage changed or disappeared, or when the results folder holds a current finished evaluation
the report does not show.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pandas as pd

from .report import current_evaluations
from .store import MANIFEST, Store

SCRIPT_ID = "hashbench-sources"  # the <script type="application/json"> element of report.html holding them


def manifest_digest(store: Store, stage_id: str) -> str | None:
    """A short digest of a stage's manifest file; None when the stage is gone."""
    kind, key = stage_id.split("/")
    try:
        return hashlib.sha256((store.stage_dir(kind, key) / MANIFEST).read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def report_sources(store: Store, frame: pd.DataFrame) -> dict[str, str]:
    """``{stage id: manifest digest}`` of the results rows of ``frame`` and of every stage they were
    evaluated from (the images, codes and curves of the report are read from those)."""
    ids = set()
    for key in frame["stage_key"]:
        ids.add(f"evaluate/{key}")
        ids.update((store.manifest("evaluate", key) or {}).get("config", {}).get("deps", []))
    return {stage_id: digest for stage_id in sorted(ids) if (digest := manifest_digest(store, stage_id))}


def sources_script(sources: dict[str, str]) -> str:
    # "</" cannot occur in stage ids or hex digests, so the JSON cannot close the element early
    return f"<script type='application/json' id='{SCRIPT_ID}'>{json.dumps(sources, sort_keys=True)}</script>"


def read_sources(report_html: Path) -> dict[str, str] | None:
    """The sources recorded in a report.html; None when it records none (written before reports did)."""
    found = re.search(rf"<script type='application/json' id='{SCRIPT_ID}'>(.*?)</script>", report_html.read_text(), re.S)
    return json.loads(found.group(1)) if found else None


def staleness(results: Path, report_html: Path) -> list[str]:
    """Why the report is out of date with the results folder (an empty list: it is fresh)."""
    if not report_html.is_file():
        return [f"there is no report at {report_html}"]
    recorded = read_sources(report_html)
    if recorded is None:
        return [f"{report_html} does not list the stages it was built from (written by an older hashbench)"]
    store = Store(results)
    reasons = []
    for stage_id, digest in sorted(recorded.items()):
        now = manifest_digest(store, stage_id)
        if now is None:
            reasons.append(f"stage {stage_id} is gone")
        elif now != digest:
            reasons.append(f"stage {stage_id} was recomputed after the report was written")
    shown = {stage_id.split("/")[1] for stage_id in recorded if stage_id.startswith("evaluate/")}
    current, _ = current_evaluations(store.finished_stages("evaluate"))  # a superseded row is never shown
    new = [key for key, _ in current if key not in shown]
    if new:
        reasons.append(f"{len(new)} results row(s) finished after the report was written (evaluate/{new[0]}"
                       + (", ..." if len(new) > 1 else "") + ")")
    return reasons
