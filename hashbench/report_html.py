"""``hashbench report DIR``: a Markdown and a self-contained HTML report of a results directory.

The report is meant for a paper: the attack × defense matrix, retrieval examples, the hash space and
the precision curves (hashbench/report_views.py), the summary tables (mean ± std over seeds), per attack
an image grid of clean / poisoned / amplified residual for poisoned training images and for triggered
queries, a t-MAP vs stealth scatter, t-MAP vs poison rate when the grid has several rates, the metric
conventions (hashbench/conventions.toml, shipped with the package), the versions that produced the numbers and the stages it was built from
(hashbench/report_sources.py). ``report.html`` embeds every image as a base64 data URI; ``report.md``
links PNG files written next to it in ``report_files/``. docs/reading-a-report.md explains each view.
"""

from __future__ import annotations

import base64
import html
import io
import json
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import METRIC_CONVENTIONS_VERSION, __version__
from .errors import HashbenchError, StoreError, warn
from .files import make_folder, write_bytes, write_text
from .params import describe_params
from .records import canonical_json
from .plugins import get_registry
from .conventions import Conventions, load_conventions
from .report import SUMMARY_COLUMNS, leaderboard, load_results
from .artifacts import POISONING_FILE, TRIGGERED_QUERIES_FILE
from .loading import load_dataset
from .stealth import psnr
from .store import Store
from .tables import Table

GRID_SAMPLES = 8  # images per grid
RESIDUAL_GAIN = 10  # residuals are |poisoned − clean| × 10, clipped
STEALTH_AXES = {"poison_psnr": "PSNR of poisons (dB, higher = stealthier)",
                "poison_lpips": "LPIPS of poisons (lower = stealthier)"}


@dataclass
class Figure:
    """One picture of the report: a PNG, its title and a caption saying what is shown."""

    slug: str
    title: str
    caption: str
    png: bytes


@dataclass
class Report:
    """Everything the two renderers show, computed once."""

    title: str
    tables: dict[str, Table]  # title -> table
    grids: list[Figure]
    plots: list[Figure]
    conventions: Conventions
    versions: dict[str, str]
    notes: list[str] = field(default_factory=list)
    views: list[Any] = field(default_factory=list)  # report_views.View, drawn before the tables
    sources: dict[str, str] = field(default_factory=dict)  # stage id -> manifest digest (report_sources)


# ----------------------------------------------------------------------------------- tables


def _fmt(mean: Any, std: Any, seeds: int) -> str:
    if mean is None or pd.isna(mean):
        return "–"
    text = f"{mean:.3f}" if abs(mean) < 100 else f"{mean:.1f}"
    if seeds > 1 and std is not None and not pd.isna(std):
        text += f" ± {std:.3f}" if abs(std) < 100 else f" ± {std:.1f}"
    return text


def summary_tables(board: pd.DataFrame) -> dict[str, Table]:
    """One table per (dataset, method, backbone, bits): attack × defense rows, mean ± std over seeds."""
    tables = {}
    # in the leaderboard's order: per attack, rates and parameters by value, the undefended row first
    for (dataset, method, backbone, bits), part in board.groupby(["dataset", "method", "backbone", "bits"], sort=False):
        metrics = [c for c in SUMMARY_COLUMNS if f"{c}_mean" in part and part[f"{c}_mean"].notna().any()]
        headers = ["attack", "attack parameters", "rate", "defense", "seeds"] + [SUMMARY_COLUMNS[c] for c in metrics]
        rows = []
        for _, r in part.iterrows():
            seeds = int(r["seeds"])
            clean = r["attack"] == "(clean)"
            rows.append(
                [r["attack"], _short_params(r.get("attack_params", ""), "attack", r["attack"]), "–" if clean else f"{float(r['poison_rate']):g}",
                 _defense_label(r), str(seeds)]
                + [_fmt(r[f"{c}_mean"], r.get(f"{c}_std"), seeds) for c in metrics]
            )
        # the labels left, the numbers (a metric's cells read "0.812 ± 0.010") right
        tables[f"{dataset} · {method} · {backbone} · {bits} bits"] = Table(headers, rows, ["left"] * 4 + ["right"] * (len(headers) - 4))
    return tables


def _short_params(text: Any, kind: str = "", name: str = "") -> str:
    """Canonical JSON params as ``k=v, ...``, leaving out values equal to the plugin's defaults (so a
    table shows what was varied); empty when nothing differs."""
    if not isinstance(text, str) or not text.strip():
        return ""
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        return text
    if not isinstance(values, dict):
        return text
    defaults = _defaults(kind, name)
    return ", ".join(f"{k}={v}" for k, v in values.items() if k not in defaults or defaults[k] != v)


def _defaults(kind: str, name: str) -> dict[str, Any]:
    """The default parameter values of a registered plugin; {} when it is not installed here."""
    try:
        cls = get_registry().get(kind, name)
    except HashbenchError:
        return {}
    return {p["name"]: p["default"] for p in describe_params(cls.Params)}


def _defense_label(row: pd.Series) -> str:
    params = _short_params(row.get("defense_params", ""), "defense", row["defense"])
    return f"{row['defense']} ({params})" if params else str(row["defense"])


# ----------------------------------------------------------------------------------- image grids


@dataclass
class AttackSamples:
    """Clean and attacked versions of a few images of one attack configuration."""

    label: str
    what: str  # "poisoned training images" or "triggered queries"
    clean: torch.Tensor  # (n, 3, H, W) uint8
    attacked: torch.Tensor


def _poison_manifests(store: Store) -> dict[str, tuple[str, dict, dict]]:
    """Per attack configuration (attack + dataset identity): the lowest-seed attack stage and its
    highest-rate poison stage, as ``{label: (attack key, attack manifest, poison key)}``."""
    chosen: dict[str, tuple[Any, ...]] = {}
    for poison_key, poison in store.finished_stages("poison"):
        attack_key = next(d.split("/")[1] for d in poison["config"]["deps"] if d.startswith("attack/"))
        attack = store.manifest("attack", attack_key)
        if not attack or attack.get("corrupt"):
            store.warn_skipped("attack", attack_key, "its manifest is missing or unreadable")
            continue
        config = attack["config"]
        ident = canonical_json([config["attack"], config["dataset"]])
        rank = (config["seed"], -poison["config"]["poison_rate"])
        if ident not in chosen or rank < chosen[ident][0]:
            chosen[ident] = (rank, attack_key, attack, poison_key, poison["config"]["poison_rate"])
    return {_attack_label(v[2]["config"], v[4]): (v[1], v[2], v[3]) for v in chosen.values()}


def _attack_label(config: dict, rate: float) -> str:
    params = _short_params(canonical_json(config["attack"]["params"]), "attack", config["attack"]["name"])
    return f"{config['attack']['name']}" + (f" ({params})" if params else "") + \
        f" on {config['dataset']['name']}, poison rate {rate:g}, seed {config['seed']}"


def attack_samples(store: Store, count: int = GRID_SAMPLES) -> list[AttackSamples]:
    """For each attack configuration, the first ``count`` poisons and triggered queries beside their originals."""
    out = []
    for label, (attack_key, attack, poison_key) in sorted(_poison_manifests(store).items()):
        splits = load_dataset(attack["config"]["dataset"])
        try:  # Store.load checks each file's checksum: a corrupt file is left out, never drawn
            poisons = store.load("poison", poison_key, POISONING_FILE)
            triggered = store.load("attack", attack_key, TRIGGERED_QUERIES_FILE)
        except StoreError as exc:
            warn(f"the image grids of {label} are left out: {exc}")
            continue
        idx = poisons["indices"][:count]
        out.append(AttackSamples(label, "poisoned training images", splits.train.images(idx), poisons["images"][:count]))
        pick = _spread(len(triggered["indices"]), count)
        out.append(AttackSamples(label, "triggered queries", splits.query.images(triggered["indices"][pick]),
                                 triggered["images"][pick]))
    return out


def _spread(n: int, count: int) -> torch.Tensor:
    """``count`` positions spread evenly over ``n`` (queries are sorted by class; show several classes)."""
    return torch.linspace(0, max(n - 1, 0), min(n, count)).round().long().unique()


def grid_figure(samples: AttackSamples, slug: str) -> Figure:
    """Rows clean / attacked / residual × RESIDUAL_GAIN; each column titled with its PSNR."""
    import matplotlib.pyplot as plt

    clean, attacked = samples.clean, samples.attacked
    residual = ((attacked.int() - clean.int()).abs() * RESIDUAL_GAIN).clamp(0, 255).to(torch.uint8)
    values = psnr(clean, attacked) if len(clean) else torch.zeros(0)
    n = max(len(clean), 1)
    # one image strip per row, drawn by one imshow (an axes per thumbnail is what made reports slow)
    fig, axes = plt.subplots(3, 1, figsize=(1.25 * n + 0.9, 4.1), squeeze=False)
    rows = [("clean", clean), (samples.what.split()[0], attacked), (f"residual ×{RESIDUAL_GAIN}", residual)]
    for r, (name, images) in enumerate(rows):
        ax = axes[r][0]
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if len(images):
            strip = image_strip(list(images), [None] * len(images))
            ax.imshow(strip, interpolation="nearest")
            cell = strip.shape[1] / len(images)
            if r == 1:
                for c, value in enumerate(values.tolist()):
                    ax.text((c + 0.5) * cell, -1, f"{value:.1f} dB", ha="center", va="bottom", fontsize=7)
        ax.set_ylabel(name, fontsize=9)
    fig.tight_layout(pad=0.3, h_pad=0.8)
    caption = (f"{samples.what.capitalize()} of {samples.label}. Top: the clean image; middle: as stored (uint8), "
               f"titled with its PSNR; bottom: |attacked − clean| × {RESIDUAL_GAIN}, clipped.")
    return Figure(slug, f"{samples.label}: {samples.what}", caption, _png(fig))


def image_strip(images: list[torch.Tensor], frames: list[str | None], border: int = 2, gap: int = 3) -> np.ndarray:
    """uint8 (C, H, W) images side by side on white, ``gap`` pixels apart, each inside a ``border``-pixel
    frame of its colour (None: no frame), as one (H, W, 3) float image."""
    from matplotlib.colors import to_rgb

    height, width = images[0].shape[1:]
    framed = width + 2 * border
    canvas = np.ones((height + 2 * border, (framed + gap) * len(images) - gap, 3), dtype=np.float32)
    for i, (image, frame) in enumerate(zip(images, frames)):
        x = i * (framed + gap)
        if frame is not None:
            canvas[:, x : x + framed] = to_rgb(frame)
        pixels = image.expand(3, -1, -1) if image.shape[0] == 1 else image
        canvas[border : border + height, x + border : x + border + width] = pixels.permute(1, 2, 0).numpy() / 255.0
    return canvas


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------- plots


def _attacked_undefended(board: pd.DataFrame) -> pd.DataFrame:
    if board.empty or "t_map_mean" not in board:
        return board.iloc[0:0]
    return board[(board["attack"] != "(clean)") & (board["defense"] == "none")]


def _series_label(row: pd.Series) -> str:
    params = _short_params(row.get("attack_params", ""), "attack", row["attack"])
    return row["attack"] + (f" ({params})" if params else "")


def _victim_label(row: pd.Series) -> str:
    return f"{row['dataset']} · {row['method']} · {row['backbone']} · {row['bits']} bits"


def stealth_scatter(board: pd.DataFrame) -> Figure | None:
    """t-MAP (undefended) against each stealth metric that has values: one point per configuration."""
    import matplotlib.pyplot as plt

    rows = _attacked_undefended(board)
    axes_used = [m for m in STEALTH_AXES if f"{m}_mean" in rows and rows[f"{m}_mean"].notna().any()]
    if rows.empty or not axes_used:
        return None
    fig, axes = plt.subplots(1, len(axes_used), figsize=(5.2 * len(axes_used), 3.8), squeeze=False)
    colours = _colour_map(rows)
    markers = dict(zip(sorted({_victim_label(r) for _, r in rows.iterrows()}), "osD^vP*X"))
    for ax, metric in zip(axes[0], axes_used):
        for _, r in rows.iterrows():
            ax.errorbar(r[f"{metric}_mean"], r["t_map_mean"], yerr=_std(r, "t_map"), xerr=_std(r, metric),
                        fmt=markers[_victim_label(r)], color=colours[_series_label(r)], ms=6, capsize=2)
            ax.annotate(f"{float(r['poison_rate']):g}", (r[f"{metric}_mean"], r["t_map_mean"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
        ax.set_xlabel(STEALTH_AXES[metric])
        ax.set_ylabel("t-MAP (undefended)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    _legend(fig, colours, markers)
    caption = ("Attack strength against stealth, undefended victims: each point is one configuration (mean over seeds, "
               "bars: std), annotated with its poison rate. Stealth is measured between each poisoned training "
               "image and its clean original, as stored.")
    return Figure("tmap-vs-stealth", "t-MAP vs stealth", caption, _png(fig))


def rate_plot(board: pd.DataFrame) -> Figure | None:
    """t-MAP (undefended) against poison rate, one line per attack configuration and victim; None unless
    some configuration was run at several rates."""
    import matplotlib.pyplot as plt

    rows = _attacked_undefended(board)
    if rows.empty or rows.groupby(["attack", "attack_params"])["poison_rate"].nunique().max() < 2:
        return None
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    colours = _colour_map(rows)
    markers = dict(zip(sorted({_victim_label(r) for _, r in rows.iterrows()}), "osD^vP*X"))
    for (series, victim), part in rows.groupby([rows.apply(_series_label, axis=1), rows.apply(_victim_label, axis=1)]):
        part = part.assign(rate=part["poison_rate"].astype(float)).sort_values("rate")
        ax.errorbar(part["rate"], part["t_map_mean"], yerr=part.get("t_map_std"), fmt=f"-{markers[victim]}",
                    color=colours[series], ms=5, capsize=2)
    ax.set_xscale("log")
    ax.set_xlabel("poison rate (fraction of the training set)")
    ax.set_ylabel("t-MAP (undefended)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3, which="both")
    _legend(fig, colours, markers)
    caption = "t-MAP of undefended victims as the poison rate grows (mean over seeds, bars: std)."
    return Figure("tmap-vs-rate", "t-MAP vs poison rate", caption, _png(fig))


def _std(row: pd.Series, metric: str) -> float | None:
    value = row.get(f"{metric}_std")
    return None if value is None or pd.isna(value) else float(value)


def _colour_map(rows: pd.DataFrame) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    names = sorted({_series_label(r) for _, r in rows.iterrows()})
    palette = plt.get_cmap("tab10")
    return {name: palette(i % 10) for i, name in enumerate(names)}


def _legend(fig, colours: dict[str, Any], markers: dict[str, str]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", ls="", label=n) for n, c in colours.items()]
    if len(markers) > 1:
        handles += [Line2D([], [], color="grey", marker=m, ls="", label=n) for n, m in markers.items()]
    fig.legend(handles=handles, loc="lower center", ncol=min(3, len(handles)), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.02 - 0.045 * ((len(handles) - 1) // 3)))
    fig.tight_layout(rect=(0, 0.06 + 0.05 * ((len(handles) - 1) // 3), 1, 1))


# ----------------------------------------------------------------------------------- versions


def versions(store: Store, frame: pd.DataFrame) -> dict[str, str]:
    """What produced the numbers (from the stage manifests) and what drew the report."""
    import matplotlib

    seen: dict[str, set[str]] = {"hashbench (runs)": set(), "torch": set(), "python": set(), "git commit": set(),
                                 "device": set()}
    for kind in ("clean_victim", "attack", "poison", "victim", "defend", "evaluate"):
        for _, m in store.finished_stages(kind, warn=False):  # corrupt stages are reported where rows are read
            for key, name in (("hashbench_version", "hashbench (runs)"), ("torch_version", "torch"),
                              ("python", "python"), ("git_commit", "git commit"), ("device", "device")):
                if m.get(key):
                    seen[name].add(str(m[key]))
    out = {name: ", ".join(sorted(values)) or "–" for name, values in seen.items()}
    conventions = sorted(set(frame["metric_conventions"].astype(str))) if "metric_conventions" in frame else []
    out["metric conventions (results)"] = ", ".join(conventions) or "–"
    out["metric conventions (this hashbench)"] = METRIC_CONVENTIONS_VERSION
    out["report drawn by"] = (f"hashbench {__version__}, matplotlib {matplotlib.__version__}, pandas {pd.__version__}, "
                              f"python {platform.python_version()}")
    out["report date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return out


# ----------------------------------------------------------------------------------- building


def build_report(results: Path) -> Report:
    """Collect views, tables, grids, plots, conventions, versions and sources of a results directory."""
    from . import report_views as rv
    from .report_sources import report_sources

    store = Store(results)
    frame = load_results(results)
    sources = report_sources(store, frame)  # before drawing: a stage finishing meanwhile makes it stale
    board = leaderboard(frame)
    cases = rv.undefended_cases(store, frame, highest_rate_only=True)
    views = [rv.matrix_view(board), *rv.case_views(store, cases),
             rv.curves_view(store, rv.undefended_cases(store, frame, highest_rate_only=False), frame)]
    grids = [grid_figure(s, f"grid-{i}") for i, s in enumerate(attack_samples(store))]
    plots = [f for f in (stealth_scatter(board), rate_plot(board)) if f is not None]
    notes = []
    if "poison_lpips_mean" not in board or board["poison_lpips_mean"].isna().all():
        notes.append("LPIPS is missing from these results (AlexNet weights unavailable offline); "
                     "the stealth scatter uses PSNR only.")
    return Report(f"hashbench report: {results.resolve().name}", summary_tables(board), grids, plots,
                  load_conventions(), versions(store, frame), notes, views, sources)


def write_report(results: Path, output: Path | None = None) -> list[Path]:
    """Write ``report.md`` (+ ``report_files/*.png``) and a self-contained ``report.html``; return their paths."""
    folder = make_folder(Path(output) if output is not None else Path(results))  # checked before the work
    report = build_report(Path(results))
    files = make_folder(folder / "report_files")
    for figure in report.grids + report.plots + [f for view in report.views for f in view.figures]:
        write_bytes(files / f"{figure.slug}.png", figure.png)
    md_path, html_path = folder / "report.md", folder / "report.html"
    write_text(md_path, render_markdown(report, "report_files"))
    write_text(html_path, render_html(report))
    return [md_path, html_path]


# ----------------------------------------------------------------------------------- Markdown


def render_markdown(report: Report, files: str) -> str:
    out = [f"# {report.title}", ""]
    out += [f"> {note}" for note in report.notes] + ([""] if report.notes else [])
    for view in report.views:
        out += [f"## {view.title}", "", view.intro, ""] + [f"> {note}\n" for note in view.notes]
        for f in view.figures:
            out += [f"### {f.title}", "", f"![{f.title}]({files}/{f.slug}.png)", "", f"*{f.caption}*", ""]
    out += ["## Results", ""]
    for title, table in report.tables.items():
        out += [f"### {title}", "", table.to_markdown(), ""]
    for heading, figures in (("Plots", report.plots), ("Image grids", report.grids)):
        if figures:
            out += [f"## {heading}", ""]
        for f in figures:
            out += [f"### {f.title}", "", f"![{f.title}]({files}/{f.slug}.png)", "", f"*{f.caption}*", ""]
    out += ["## Versions", "", _versions_table(report).to_markdown(), ""]
    out += ["## Metric conventions", "", _conventions_intro(report.conventions), "",
            report.conventions.rules_table().to_markdown(), "", report.conventions.metrics_table().to_markdown(), ""]
    out += ["## Built from", "", f"{len(report.sources)} stages (`hashbench report DIR --check` says whether any changed):", ""]
    out += [_sources_table(report).to_markdown(), ""]
    return "\n".join(out)


def _versions_table(report: Report) -> Table:
    return Table(["", "version"], [list(v) for v in report.versions.items()], ["left", "left"])


def _sources_table(report: Report) -> Table:
    return Table(["kind", "key", "manifest digest"], [s.split("/") + [d] for s, d in report.sources.items()],
                 ["left"] * 3)


def _conventions_intro(conventions: Conventions) -> str:
    return (f"Every number above follows these conventions, version {conventions.version} (the results rows "
            "carry the version they were computed under; see Versions).")


# ----------------------------------------------------------------------------------- HTML

CSS = """
body { font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d1d1f; max-width: 1400px;
       margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.7em; border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; margin: 1.4em 0 .4em; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12px; margin: .4em 0 1.2em; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 9px; border-bottom: 1px solid #e3e3e3; text-align: left; white-space: nowrap; }
th { border-bottom: 2px solid #555; background: #f6f6f6; } .num { text-align: right; }
.conventions td { white-space: normal; vertical-align: top; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; } .grid img { max-height: 300px; }
figcaption { font-size: 13px; color: #444; max-width: 60em; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .4em .8em; font-size: 14px; }
.conventions { font-size: 14px; } code { background: #f2f2f2; padding: 0 3px; border-radius: 3px; }
nav { font-size: 14px; } nav a { margin-right: 1em; }
.views { display: flex; flex-wrap: wrap; gap: 0 2em; } .views figure { max-width: 100%; }
#matrix .views figure { width: 640px; } figure.wide { width: 100%; }
details { font-size: 13px; margin-bottom: 2em; }
"""


def render_html(report: Report) -> str:
    e = html.escape
    from .report_sources import sources_script

    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(report.title)}</title>",
             # an empty icon: otherwise a browser asks for /favicon.ico and logs its absence as an error
             f"<link rel='icon' href='data:,'><style>{CSS}</style></head><body><h1>{e(report.title)}</h1>",
             "<nav>" + "".join(f"<a href='#{v.id}'>{e(v.title)}</a>" for v in report.views) +
             "<a href='#results'>Results</a><a href='#plots'>Plots</a><a href='#grids'>Image grids</a>"
             "<a href='#versions'>Versions</a><a href='#conventions'>Metric conventions</a>"
             "<a href='#sources'>Built from</a></nav>"]
    parts += [f"<p class='note'>{e(note)}</p>" for note in report.notes]
    for view in report.views:
        parts.append(f"<section id='{view.id}'><h2>{e(view.title)}</h2><p>{e(view.intro)}</p>")
        parts += [f"<p class='note'>{e(note)}</p>" for note in view.notes]
        wide = "" if view.id == "matrix" else " wide"
        parts.append("<div class='views'>" + "".join(_html_figure(f, f"view{wide}") for f in view.figures) + "</div></section>")
    parts.append("<h2 id='results'>Results</h2>")
    for title, table in report.tables.items():
        parts.append(f"<h3>{e(title)}</h3>{_wrap(table)}")
    parts.append("<h2 id='plots'>Plots</h2>")
    parts += [_html_figure(f, "plot") for f in report.plots] or ["<p>No attacked rows to plot.</p>"]
    parts.append("<h2 id='grids'>Image grids</h2>")
    parts += [_html_figure(f, "grid") for f in report.grids] or ["<p>No poisoned sets in these results.</p>"]
    parts.append(f"<h2 id='versions'>Versions</h2>{_wrap(_versions_table(report))}")
    parts.append(f"<h2 id='conventions'>Metric conventions</h2><div class='conventions'>"
                 f"<p>{e(_conventions_intro(report.conventions))}</p>{_wrap(report.conventions.rules_table())}"
                 f"{_wrap(report.conventions.metrics_table())}</div>")
    parts.append(f"<h2 id='sources'>Built from</h2><details><summary>{len(report.sources)} stages; "
                 "<code>hashbench report DIR --check</code> says whether any changed since</summary>"
                 f"{_wrap(_sources_table(report))}"
                 f"</details>{sources_script(report.sources)}</body></html>")
    return "\n".join(parts)


def _wrap(table: Table) -> str:
    """A table that scrolls sideways instead of widening the page."""
    return f"<div class='table-wrap'>{table.to_html()}</div>"


def _html_figure(figure: Figure, css_class: str) -> str:
    data = base64.b64encode(figure.png).decode()
    return (f"<figure class='{css_class}'><h3>{html.escape(figure.title)}</h3>"
            f"<img alt='{html.escape(figure.title)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>")
