"""Results as tables: the terminal summary, and the leaderboard (mean and std over seeds)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import pandas as pd

from .store import Store

IDENTITY = [
    "dataset", "dataset_params", "method", "backbone", "bits", "attack", "attack_params", "poison_rate",
    "surrogate", "target", "defense", "defense_params", "clean_fraction",
]
VERSIONS = ["hashbench_version", "metric_conventions"]
# The columns of the terminal table, in order, with their headers.
SUMMARY_COLUMNS = {
    "t_map": "t-MAP",
    "t_map_clean_model": "t-MAP clean model",
    "t_map_untriggered": "t-MAP no trigger",
    "clean_map": "clean mAP",
    "delta_map": "ΔmAP",
    "delta_t_map": "Δt-MAP vs none",
    "poison_psnr": "PSNR",
    "poison_ssim": "SSIM",
    "poison_lpips": "LPIPS",
    "detection_auroc": "det. AUROC",
    "defense_seconds": "defense s",
}


def collect_rows(results: str | Path, evaluate_keys: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per finished evaluate stage (restricted to ``evaluate_keys`` when given)."""
    store = Store(results)
    wanted = set(evaluate_keys) if evaluate_keys is not None else None
    rows = []
    for key, manifest in store.finished_stages("evaluate"):
        if wanted is not None and key not in wanted:
            continue
        problem = store.verify("evaluate", key)
        if problem is not None:
            store.warn_skipped("evaluate", key, problem)
            continue
        row = dict(manifest.get("row", {}))
        for name, value in manifest.get("metrics", {}).items():
            row[name] = value if not isinstance(value, list) else ",".join(map(str, value))
        row["stage_key"] = key
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return add_defense_deltas(frame)


def load_results(results: str | Path) -> pd.DataFrame:
    """Every finished row of a results directory, or a clear error when there is nothing to read."""
    from .errors import ConfigError

    results = Path(results)
    if not (results / "stages").is_dir():
        raise ConfigError(f"{results} holds no hashbench results (no stages/ folder); run a benchmark first")
    frame = collect_rows(results)
    if frame.empty:
        raise ConfigError(f"{results} has no finished evaluations yet; run the benchmark to the end first")
    return frame


def add_defense_deltas(frame: pd.DataFrame) -> pd.DataFrame:
    """Δt-MAP and Δ clean mAP of each defended row versus the undefended row of the same victim and attack."""
    if "t_map" not in frame:
        return frame
    keys = ["dataset", "dataset_params", "method", "backbone", "bits", "seed", "attack", "attack_params", "poison_rate", "surrogate", "target"]
    base = frame[frame["defense"] == "none"][keys + ["t_map", "clean_map"]].rename(
        columns={"t_map": "_t_map_none", "clean_map": "_clean_map_none"}
    )
    merged = frame.merge(base, on=keys, how="left")
    merged["delta_t_map"] = merged["t_map"] - merged["_t_map_none"]
    merged["delta_map_vs_none"] = merged["clean_map"] - merged["_clean_map_none"]
    return merged.drop(columns=["_t_map_none", "_clean_map_none"])


def leaderboard(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: mean and std over seeds of every numeric metric, and the seed count."""
    if frame.empty:
        return frame
    group_keys = [c for c in IDENTITY if c in frame]
    filled = frame.copy()
    for key in group_keys:
        if not pd.api.types.is_numeric_dtype(filled[key]):  # numbers stay numbers (bits, rates) in exports
            column = filled[key].astype(object)
            filled[key] = column.where(column.notna(), "").astype(str)
    numeric = [
        c for c in frame.columns
        if c not in group_keys + VERSIONS + ["seed", "stage_key"] and pd.api.types.is_numeric_dtype(frame[c])
    ]
    grouped = filled.groupby(group_keys, sort=False, dropna=False)
    stats = grouped[numeric].agg(["mean", "std"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats["seeds"] = grouped.size()
    for version in VERSIONS:
        if version in filled:
            stats[version] = grouped[version].first()
    board = stats.reset_index()
    # Stable, readable order: the clean row first, then per attack the undefended row before defenses.
    order = board.assign(
        _clean=board["attack"] != "(clean)", _defended=board["defense"] != "none"
    ).sort_values(["dataset", "method", "backbone", "bits", "_clean", "attack", "poison_rate", "_defended", "defense"], kind="stable")
    return order.drop(columns=["_clean", "_defended"]).reset_index(drop=True)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def summary_tables(frame: pd.DataFrame) -> str:
    """A table per (dataset, victim): attack × defense rows with the headline metrics (means over seeds)."""
    from tabulate import tabulate

    if frame.empty:
        return "(no finished evaluations)"
    board = leaderboard(frame)
    out = []
    for (dataset, method, backbone, bits), part in board.groupby(["dataset", "method", "backbone", "bits"], sort=False):
        headers = ["attack", "rate", "defense"] + [h for c, h in SUMMARY_COLUMNS.items() if f"{c}_mean" in part]
        body = []
        for _, r in part.iterrows():
            body.append(
                [r["attack"], _fmt(float(r["poison_rate"])) if r["attack"] != "(clean)" else "-", r["defense"]]
                + [_fmt(r[f"{c}_mean"]) for c in SUMMARY_COLUMNS if f"{c}_mean" in part]
            )
        seeds = int(part["seeds"].max())
        out.append(f"{dataset} · {method} · {backbone} · {bits} bits  (mean over {seeds} seed{'s' * (seeds > 1)})")
        out.append(tabulate(body, headers=headers, tablefmt="github"))
    return "\n\n".join(out)
