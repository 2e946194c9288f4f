"""Results as tables: the terminal summary, and the leaderboard (mean and std over seeds)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import pandas as pd

from .errors import warn
from .store import Store
from .tables import Table

IDENTITY = [
    "dataset", "dataset_params", "method", "backbone", "bits", "victim_params", "attack", "attack_params", "poison_rate",
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


def current_evaluations(stages: Iterable[tuple[str, dict]]) -> tuple[list[tuple[str, dict]], list[str]]:
    """The (key, manifest) pairs of finished evaluate stages that count, and the keys of those superseded.

    A row of one configuration and seed computed by an older hashbench or an earlier recipe (or before a
    metric plugin was installed) is a stage with another key but the same row identity; only the newest of
    them, by finish time, counts, so that an old number is neither averaged in nor counted as another seed."""
    newest: dict[str, tuple[float, str, dict]] = {}
    superseded = []
    for key, manifest in stages:
        row = manifest.get("row", {})
        identity = json.dumps([row.get(column) for column in [*IDENTITY, "seed"]], default=str)
        finished = float(manifest.get("started", 0)) + float(manifest.get("seconds", 0))
        kept = newest.get(identity)
        if kept is not None and kept[:2] > (finished, key):
            superseded.append(key)
            continue
        if kept is not None:
            superseded.append(kept[1])
        newest[identity] = (finished, key, manifest)
    return [(key, manifest) for _, key, manifest in newest.values()], sorted(superseded)


def collect_rows(results: str | Path, evaluate_keys: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per finished evaluate stage: those of ``evaluate_keys`` when given, else the current ones
    (``current_evaluations``; a warning says how many superseded rows are left out)."""
    store = Store(results)
    stages = store.finished_stages("evaluate")
    if evaluate_keys is None:
        stages, superseded = current_evaluations(stages)
        if superseded:
            folders = [str(Path(results) / "stages" / "evaluate" / key) for key in superseded[:3]]
            more = f" and {len(superseded) - 3} more" if len(superseded) > 3 else ""
            warn(f"{len(superseded)} superseded results row(s) left out (a row of the same configuration and seed "
                 f"finished later, e.g. computed by a newer hashbench or recipe): {', '.join(folders)}{more}; "
                 "delete those folders to remove them, or run the benchmark into a fresh results folder "
                 "(`hashbench run FILE --results NEW_FOLDER`)")
    else:
        wanted = set(evaluate_keys)
        stages = [(key, manifest) for key, manifest in stages if key in wanted]
    rows = []
    for key, manifest in stages:
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
    # Stable, readable order: the clean row first, then per attack the undefended row before defenses;
    # configurations of one plugin by their parameter values (numbers as numbers), never by key order.
    order = board.assign(
        _clean=board["attack"] != "(clean)", _defended=board["defense"] != "none",
        _attack_params=_params_rank(board["attack_params"]), _defense_params=_params_rank(board["defense_params"]),
        _rate=board["poison_rate"].map(_number), _fraction=board["clean_fraction"].map(_number),
    ).sort_values(["dataset", "method", "backbone", "bits", "_clean", "attack", "_attack_params", "_rate", "_defended",
                   "defense", "_defense_params", "_fraction"], kind="stable")
    return order.drop(columns=[c for c in order if c.startswith("_")]).reset_index(drop=True)


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return -1.0  # the clean row's empty rate and fraction sort first


def _params(text) -> dict:
    """Canonical-JSON parameters as a dict ({} for the clean row's empty string)."""
    try:
        values = json.loads(text) if isinstance(text, str) and text.strip() else {}
    except json.JSONDecodeError:
        return {}
    return values if isinstance(values, dict) else {}


def _params_rank(column: pd.Series) -> pd.Series:
    """The position of each parameter set in value order: numbers compare as numbers (quality 75 before
    100), strings as strings, parameter by parameter in name order."""
    def key(text):
        return tuple((k, (0, float(v)) if isinstance(v, (int, float)) else (1, json.dumps(v, sort_keys=True)))
                     for k, v in sorted(_params(text).items()))

    ranks = {text: i for i, text in enumerate(sorted(set(column), key=key))}
    return column.map(ranks)


def varied(board: pd.DataFrame, kind: str) -> dict[str, list[str]]:
    """Per ``kind`` plugin name ("attack" or "defense"), the parameters whose values differ between its
    rows of ``board``: the ones a label must show to tell the rows apart. ``poison_rate`` and
    ``clean_fraction`` count as parameters of the attack and the defense."""
    out: dict[str, list[str]] = {}
    extra = "poison_rate" if kind == "attack" else "clean_fraction"
    for name, part in board.groupby(kind, sort=False):
        if name in ("none", "(clean)"):
            continue  # no plugin parameters (their clean_fraction is not used)
        values = [_params(text) | {extra: _number(x)} for text, x in zip(part[f"{kind}_params"], part[extra])]
        keys = sorted({k for v in values for k in v})
        out[name] = [k for k in keys if len({json.dumps(v.get(k), sort_keys=True) for v in values}) > 1]
    return out


def config_label(row: pd.Series, kind: str, shown: dict[str, list[str]]) -> str:
    """``name`` or ``name k=v, ...`` with the varied parameters ``shown`` (from :func:`varied`)."""
    name = row[kind]
    values = _params(row[f"{kind}_params"]) | {"poison_rate": row.get("poison_rate"), "clean_fraction": row.get("clean_fraction")}
    parts = [f"{'rate' if k == 'poison_rate' else k}={_short(values.get(k))}" for k in shown.get(name, [])]
    return f"{name} " + ", ".join(parts) if parts else str(name)


def _short(value) -> str:
    number = _number(value) if not isinstance(value, bool) else None
    return f"{number:g}" if number is not None and number != -1.0 else str(value)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def summary_tables(frame: pd.DataFrame) -> str:
    """A table per (dataset, victim): attack × defense rows with the headline metrics (means over seeds);
    the attack and defense columns name the parameters that vary between rows."""
    if frame.empty:
        return "(no finished evaluations)"
    board = leaderboard(frame)
    out = []
    for (dataset, method, backbone, bits), part in board.groupby(["dataset", "method", "backbone", "bits"], sort=False):
        headers = ["attack", "rate", "defense"] + [h for c, h in SUMMARY_COLUMNS.items() if f"{c}_mean" in part]
        attacks, defenses = varied(part, "attack"), varied(part, "defense")
        for shown in attacks.values():
            if "poison_rate" in shown:
                shown.remove("poison_rate")  # the table has a rate column
        body = []
        for _, r in part.iterrows():
            body.append(
                [config_label(r, "attack", attacks), _fmt(float(r["poison_rate"])) if r["attack"] != "(clean)" else "-",
                 config_label(r, "defense", defenses)]
                + [_fmt(r[f"{c}_mean"]) for c in SUMMARY_COLUMNS if f"{c}_mean" in part]
            )
        seeds = int(part["seeds"].max())
        out.append(f"{dataset} · {method} · {backbone} · {bits} bits  (mean over {seeds} seed{'s' * (seeds > 1)})")
        out.append(Table(headers, body).to_markdown())
    return "\n\n".join(out)


def victims(board: pd.DataFrame):
    """``(title, rows)`` per dataset and victim of a leaderboard, in its order."""
    for (dataset, method, backbone, bits), part in board.groupby(["dataset", "method", "backbone", "bits"], sort=False):
        yield f"{dataset} · {method} · {backbone} · {bits} bits", part


def attack_defense_grid(part: pd.DataFrame, metric: str = "t_map") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The attacked rows of one victim's leaderboard as a (defense × attack) grid of ``metric``: mean and
    std over seeds, labelled with the varied parameters, in leaderboard order."""
    rows = part[part["attack"] != "(clean)"]
    attacks, defenses = varied(rows, "attack"), varied(rows, "defense")
    labelled = rows.assign(_a=[config_label(r, "attack", attacks) for _, r in rows.iterrows()],
                           _d=[config_label(r, "defense", defenses) for _, r in rows.iterrows()])
    columns, index = list(dict.fromkeys(labelled["_a"])), list(dict.fromkeys(labelled["_d"]))
    grids = []
    for column in (f"{metric}_mean", f"{metric}_std"):
        values = labelled[column] if column in labelled else pd.Series(float("nan"), index=labelled.index)
        grid = labelled.assign(_v=values.astype(float)).pivot_table(
            index="_d", columns="_a", values="_v", aggfunc="first", dropna=False).reindex(index=index, columns=columns)
        grid.index.name, grid.columns.name = "defense", "attack"
        grids.append(grid)
    return grids[0], grids[1]


def summary_grid(frame: pd.DataFrame) -> str:
    """The terminal summary: per dataset and victim, t-MAP as a defense × attack grid (one row per
    defense, so 13 defenses and 7 attacks fit one screen), with the two reference rows a reader needs
    beside it: the clean model on the same triggered queries, and the backdoored model without trigger."""
    if frame.empty:
        return "(no finished evaluations)"
    board = leaderboard(frame)
    out = []
    for title, part in victims(board):
        if not (part["attack"] != "(clean)").any() or "t_map_mean" not in part:
            out.append(f"{title}: clean mAP {_fmt(part['clean_map_mean'].iloc[0])} (no attacks)")
            continue
        grid, _ = attack_defense_grid(part)
        body = [[d] + [_fmt(v) for v in grid.loc[d]] for d in grid.index]
        for metric, name in (("t_map_clean_model", "(clean model)"), ("t_map_untriggered", "(no trigger)")):
            if f"{metric}_mean" in part:  # the undefended row (the grid's first) of each reference metric
                body.append([name] + [_fmt(v) for v in attack_defense_grid(part, metric)[0].iloc[0]])
        seeds = int(part["seeds"].max())
        clean = part[part["attack"] == "(clean)"]
        clean_text = f"; clean model's clean mAP {_fmt(clean['clean_map_mean'].iloc[0])}" if len(clean) else ""
        out.append(f"{title}: t-MAP (mean over {seeds} seed{'s' * (seeds > 1)}){clean_text}")
        out.append(Table(["defense \\ attack"] + list(grid.columns), body,
                         ["left"] + ["right"] * len(grid.columns)).to_text())
    out.append("Reference rows: (clean model) is the clean model's t-MAP on the same triggered queries, (no trigger) "
               "the backdoored model's on the untriggered images.")
    return "\n\n".join(out)
