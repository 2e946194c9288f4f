"""The views of a report that a paper would show: the attack × defense matrix, retrieval examples, the
hash space and the retrieval curves (docs/reading-a-report.md describes each).

Nothing here evaluates or trains: every number comes from the stage files the runner stored (the
evaluate stage's rows, curves and attack codes; the model stages' database and query codes), read with
the evaluator's own ranking (:func:`hashbench.retrieval.nearest`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from .report import attack_defense_grid, config_label, varied, victims
from .report_html import Figure, _png, _spread, image_strip
from .retrieval import hamming_distances, nearest, unpack_codes
from .artifacts import CURVES_FILE, DB_CODES_FILE, EVAL_CODES_FILE, QUERY_CODES_FILE, TRIGGERED_QUERIES_FILE
from .loading import load_dataset, resolve_target
from .models import majority_code
from .errors import StoreError
from .store import Store

EXAMPLES = 3  # triggered queries shown per attack
TOP = 10  # retrieved items shown per query
TARGET_FRAME = "#d62728"  # the frame of a target-class result
REFRESH = "hashbench run FILE --force evaluate"  # how stages stored before a file existed get it


@dataclass
class View:
    """One section of the report: its figures, and notes on what could not be drawn (and how to get it)."""

    id: str
    title: str
    intro: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------- the matrix

MATRIX = (  # metric, title, colour map, range; blue is good for the defender throughout
    ("t_map", "t-MAP", "Reds", (0.0, 1.0)),
    ("delta_t_map", "Δt-MAP vs no defense", "RdBu_r", None),
    ("delta_map_vs_none", "clean-mAP cost (Δ clean mAP vs no defense)", "RdBu", None),
)


def matrix_view(board: pd.DataFrame) -> View:
    view = View("matrix", "Attack × defense matrix",
                "Per dataset and victim, one heatmap per metric: rows are defenses (none first), columns attacks; "
                "each cell is the mean over seeds, with ± std below it when there are several seeds. t-MAP: the "
                "darker the red, the stronger the backdoor. The two differences against the undefended row: blue "
                "is good for the defender (t-MAP lowered, clean mAP gained), red is bad.")
    for title, part in victims(board):
        if not (part["attack"] != "(clean)").any():
            view.notes.append(f"{title}: no attacks, so no matrix.")
            continue
        seeds = int(part["seeds"].max())
        for metric, name, cmap, limits in MATRIX:
            if f"{metric}_mean" in part:
                mean, std = attack_defense_grid(part, metric)
                view.figures.append(heatmap(mean, std, f"{name} · {title}", cmap, limits, seeds,
                                            f"matrix-{len(view.figures)}"))
    return view


def heatmap(mean: pd.DataFrame, std: pd.DataFrame, title: str, cmap: str, limits, seeds: int, slug: str) -> Figure:
    import matplotlib.pyplot as plt

    values = mean.to_numpy(dtype=float)
    if limits is None:  # a difference: symmetric around 0, so white means "no change"
        bound = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
        limits = (-max(bound, 0.05), max(bound, 0.05))
    rows, cols = values.shape
    fig, ax = plt.subplots(figsize=(1.8 + 0.72 * cols, 1.0 + 0.36 * rows * (1.5 if seeds > 1 else 1)))
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=limits[0], vmax=limits[1], aspect="auto")
    colours = plt.get_cmap(cmap)
    for r in range(rows):
        for c in range(cols):
            v = values[r, c]
            if not np.isfinite(v):
                ax.text(c, r, "–", ha="center", va="center", fontsize=8, color="grey")
                continue
            text = f"{v:.2f}" + (f"\n±{std.iat[r, c]:.2f}" if seeds > 1 and np.isfinite(std.iat[r, c]) else "")
            red, green, blue, _ = colours((v - limits[0]) / (limits[1] - limits[0]))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(c, r, text, ha="center", va="center", fontsize=7.5, color="white" if dark else "black")
    ax.set_xticks(range(cols), [str(c) for c in mean.columns], rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(rows), [str(i) for i in mean.index], fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02).ax.tick_params(labelsize=7)
    caption = (f"{title}: mean over {seeds} seed{'s' * (seeds > 1)}" + (" (± std)" if seeds > 1 else "") +
               "; a dash marks a cell with no finished result.")
    return Figure(slug, title, caption, _png(fig))


# ----------------------------------------------------------------------------------- the cases drawn


@dataclass
class Case:
    """One undefended results row (lowest seed) whose stored files the retrieval and hash-space views draw."""

    attack: str  # the attack with its varied parameters and poison rate
    victim: str  # dataset and victim
    seed: int
    deps: dict[str, str]  # kind -> key of the stages the row was evaluated from
    evaluate: str
    files: set[str]  # the evaluate stage's files

    @property
    def label(self) -> str:
        return f"{self.attack} · {self.victim} · seed {self.seed}"

    def has(self, name: str) -> bool:
        return name in self.files


def undefended_cases(store: Store, frame: pd.DataFrame, highest_rate_only: bool) -> list[Case]:
    """The undefended rows of the lowest seed, one per victim and attack configuration (and per poison
    rate unless ``highest_rate_only``), in leaderboard order."""
    rows = frame[(frame["attack"] != "(clean)") & (frame["defense"] == "none")]
    if rows.empty:
        return []
    rows = rows.assign(_rate=rows["poison_rate"].astype(float)).sort_values(
        ["dataset", "method", "backbone", "bits", "attack", "attack_params", "seed", "_rate"],
        ascending=[True] * 6 + [True, not highest_rate_only], kind="stable")
    ident = ["dataset", "dataset_params", "method", "backbone", "bits", "attack", "attack_params", "surrogate", "target"]
    chosen = rows.groupby(ident + ([] if highest_rate_only else ["_rate"]), sort=False, dropna=False).head(1)
    shown = varied(chosen, "attack")
    for names in shown.values():
        if "poison_rate" in names:
            names.remove("poison_rate")  # always shown
    out = []
    for _, r in chosen.iterrows():
        manifest = store.manifest("evaluate", r["stage_key"])
        deps = dict(d.split("/") for d in manifest["config"]["deps"])
        attack = f"{config_label(r, 'attack', shown)} @ rate {float(r['poison_rate']):g}"
        victim = f"{r['dataset']} · {r['method']} · {r['backbone']} · {r['bits']} bits"
        out.append(Case(attack, victim, int(r["seed"]), deps, r["stage_key"], set(manifest.get("files", {}))))
    return out


def _codes(saved: dict[str, Any], name: str, bits: int) -> torch.Tensor:
    return unpack_codes(saved[name], bits)


def _model_codes(store: Store, kind: str, key: str, filename: str) -> torch.Tensor | None:
    if filename not in (store.manifest(kind, key) or {}).get("files", {}):
        return None
    saved = store.load(kind, key, filename)
    return unpack_codes(saved["packed"], int(saved["bits"]))


@dataclass
class CaseData:
    """The images, labels and codes of one case, all read from stored files."""

    splits: Any
    target: Any
    triggered: dict[str, torch.Tensor]  # the attack stage's triggered queries (indices, images)
    codes: dict[str, torch.Tensor]  # "<set> <model>" -> ±1 codes; model is "backdoored" or "clean"


def load_case(store: Store, case: Case) -> CaseData | str:
    """The stored data of ``case``, or a sentence saying which file is missing or corrupt and how to get it."""
    try:
        return _load_case(store, case)
    except StoreError as exc:  # a corrupt file leaves this case out, not the whole report
        return f"{case.label}: {exc}"


def _load_case(store: Store, case: Case) -> CaseData | str:
    if not case.has(EVAL_CODES_FILE):
        return f"{case.label}: its evaluation was stored before it kept the attack's codes; run `{REFRESH}`"
    attack_config = store.manifest("attack", case.deps["attack"])["config"]
    splits = load_dataset(attack_config["dataset"])
    saved = store.load("evaluate", case.evaluate, EVAL_CODES_FILE)
    bits = int(saved["bits"])
    codes = {
        "triggered backdoored": _codes(saved, "triggered", bits),
        "triggered clean": _codes(saved, "triggered_clean_model", bits),
        "poisons backdoored": _codes(saved, "poisons", bits),
        "poisons clean": _codes(saved, "poisons_clean_model", bits),
    }
    for kind, model in (("victim", "backdoored"), ("clean_victim", "clean")):
        for filename, name in ((DB_CODES_FILE, "database"), (QUERY_CODES_FILE, "queries")):
            found = _model_codes(store, kind, case.deps[kind], filename)
            if found is None:
                return (f"{case.label}: the {model} model was stored before models kept {filename}; "
                        f"recompute it with `hashbench run FILE --force {kind}`")
            codes[f"{name} {model}"] = found
    return CaseData(splits, resolve_target(attack_config["target"], splits),
                    store.load("attack", case.deps["attack"], TRIGGERED_QUERIES_FILE), codes)


# ----------------------------------------------------------------------------------- retrieval examples


def case_views(store: Store, cases: list[Case]) -> list[View]:
    """The retrieval examples and the hash space of each case (its stored files are read once)."""
    retrieval = View("retrieval", "Retrieval examples",
                     f"For {EXAMPLES} triggered queries of each attack (undefended, lowest seed): the clean query and "
                     f"its top {TOP} on the backdoored model, then the triggered query and its top {TOP} on the "
                     f"backdoored model and on the clean model. Results of the target class are framed in red.")
    hash_space = View("hash-space", "Hash space",
                      "Per attack (undefended, lowest seed), on the backdoored and on the clean model. Top: the Hamming "
                      "distances from the triggered queries' codes to the target's anchor code (the bitwise majority "
                      "of the target class's database codes), against those of the same queries without trigger. "
                      "Bottom: a 2-D principal-component projection of the codes (database: target class and others; "
                      "poisons; triggered queries).")
    for case in cases:
        data = load_case(store, case)
        for view, draw in ((retrieval, retrieval_figure), (hash_space, hash_space_figure)):
            if isinstance(data, str):
                view.notes.append(data)
            else:
                view.figures.append(draw(case, data, f"{view.id}-{len(view.figures)}"))
    return [retrieval, hash_space]


def retrieval_figure(case: Case, data: CaseData, slug: str) -> Figure:
    import matplotlib.pyplot as plt

    trig_idx = data.triggered["indices"]
    pick = _spread(len(trig_idx), EXAMPLES)
    query_idx = trig_idx[pick]
    db = data.splits.database
    is_target = data.target.overlaps(db.labels)
    rows = []
    for i, q in zip(pick.tolist(), query_idx.tolist()):
        clean_image = data.splits.query.images(torch.tensor([q]))[0]
        rows += [("clean query", clean_image, data.codes["queries backdoored"][q], data.codes["database backdoored"], "backdoored"),
                 ("triggered", data.triggered["images"][i], data.codes["triggered backdoored"][i],
                  data.codes["database backdoored"], "backdoored"),
                 ("triggered", data.triggered["images"][i], data.codes["triggered clean"][i], data.codes["database clean"], "clean")]
    # one image strip per row, drawn by one imshow: an axes per thumbnail made the report take a minute
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.85 * (TOP + 1) + 0.6, 0.95 * len(rows)), squeeze=False)
    names = data.splits.class_names
    for r, (what, image, code, database, model) in enumerate(rows):
        top = nearest(code[None], database, TOP)[0]
        frames = ["black"] + [TARGET_FRAME if bool(is_target[i]) else None for i in top.tolist()]
        ax = axes[r][0]
        ax.imshow(image_strip([image, *db.images(top)], frames), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        hits = int(is_target[top].sum())
        query_class = names[int(data.splits.query.labels[query_idx[r // 3]].argmax())]
        ax.set_ylabel(f"{what}\n({query_class})", fontsize=7)
        ax.set_title(f"top {TOP}, {model} model: {hits}/{TOP} target", fontsize=7, loc="center", pad=2)
    fig.tight_layout(pad=0.3, h_pad=0.5)
    caption = (f"{case.label}. First column: the query (its true class); then its top {TOP} database images in "
               f"ranking order (Hamming distance, ties by database index). Red frame: an image of the target "
               f"class ({data.target.name}).")
    return Figure(slug, case.label, caption, _png(fig))


# ----------------------------------------------------------------------------------- hash space


def anchor_code(db_codes: torch.Tensor, is_target: torch.Tensor) -> torch.Tensor:
    """The target's anchor code in a model's Hamming space: the bitwise majority of the target class's
    database codes (``majority_code``: ties +1), the centre a backdoor pulls triggered codes towards."""
    return majority_code(db_codes[is_target])


def hash_space_figure(case: Case, data: CaseData, slug: str) -> Figure:
    import matplotlib.pyplot as plt

    trig_idx = data.triggered["indices"]
    is_target = data.target.overlaps(data.splits.database.labels)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.6))
    for col, model in enumerate(("backdoored", "clean")):
        db = data.codes[f"database {model}"]
        anchor = anchor_code(db, is_target)[None]
        bits = db.shape[1]
        bins = np.arange(bits + 2) - 0.5
        ax = axes[0][col]
        for name, codes, colour in (("triggered queries", data.codes[f"triggered {model}"], "#d62728"),
                                    ("same queries, no trigger", data.codes[f"queries {model}"][trig_idx], "#1f77b4")):
            distances = hamming_distances(codes, anchor)[:, 0].numpy()
            ax.hist(distances, bins=bins, histtype="stepfilled", alpha=0.45, color=colour,
                    label=f"{name} (mean {distances.mean():.1f})")
        ax.set_xlim(-0.5, bits + 0.5)
        ax.set_xlabel("Hamming distance to the target's anchor code")
        ax.set_ylabel("queries")
        ax.set_title(f"{model} model", fontsize=10)
        ax.legend(fontsize=8)
        _projection(axes[1][col], db, is_target, data.codes[f"poisons {model}"], data.codes[f"triggered {model}"])
    fig.tight_layout()
    caption = (f"{case.label}. Codes are ±1 with {data.codes['database backdoored'].shape[1]} bits; the projection "
               "is fitted on the database codes of each model, and points are jittered by a fixed small amount "
               "so that identical codes do not hide each other.")
    return Figure(slug, case.label, caption, _png(fig))


def _projection(ax, db: torch.Tensor, is_target: torch.Tensor, poisons: torch.Tensor, triggered: torch.Tensor) -> None:
    """The first two principal components of the database codes, with poisons and triggered queries."""
    centre = db.double().mean(dim=0)
    _, _, vt = torch.linalg.svd(db.double() - centre, full_matrices=False)
    axes2 = vt[:2].T
    jitter = torch.Generator().manual_seed(0)

    def project(codes: torch.Tensor) -> np.ndarray:
        points = (codes.double() - centre) @ axes2
        return (points + 0.12 * torch.randn(points.shape, generator=jitter, dtype=torch.float64)).numpy()

    for name, codes, style in (
        ("database, other classes", db[~is_target], dict(s=4, c="#b0b0b0", alpha=0.4)),
        ("database, target class", db[is_target], dict(s=6, c="#1f77b4", alpha=0.6)),
        ("poisons", poisons, dict(s=22, c="#ff7f0e", marker="^", alpha=0.8)),
        ("triggered queries", triggered, dict(s=22, c="#d62728", marker="x", alpha=0.8)),
    ):
        if len(codes):
            points = project(codes)
            ax.scatter(points[:, 0], points[:, 1], label=name, **style)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=7, markerscale=1.2, loc="best")


# ----------------------------------------------------------------------------------- curves


def curves_view(store: Store, cases: list[Case], frame: pd.DataFrame) -> View:
    view = View("curves", "Precision@K and precision–recall",
                "Per dataset and victim, undefended rows (lowest seed), computed by the evaluator when the row was "
                "evaluated (the report reads them; it does not rank anything). Clean queries are scored against "
                "their labels; triggered queries against the target label, on the backdoored model (solid) and "
                "on the clean model (dashed).")
    by_victim: dict[str, list[tuple[str, dict]]] = {}
    missing = []
    for case in cases:
        if not case.has(CURVES_FILE):
            missing.append(case.label)
            continue
        by_victim.setdefault(case.victim, []).append((case.attack, store.load("evaluate", case.evaluate, CURVES_FILE)))
    clean_rows = frame[frame["attack"] == "(clean)"].sort_values("seed", kind="stable")
    clean_curves = {}  # victim -> the clean model's curves of its clean queries (lowest seed)
    for _, r in clean_rows.iterrows():
        victim = f"{r['dataset']} · {r['method']} · {r['backbone']} · {r['bits']} bits"
        if victim not in clean_curves and CURVES_FILE in store.manifest("evaluate", r["stage_key"]).get("files", {}):
            clean_curves[victim] = store.load("evaluate", r["stage_key"], CURVES_FILE)["clean"]
    if missing:
        view.notes.append(f"No stored curves for {len(missing)} row(s), evaluated before the evaluator kept them: "
                          f"{'; '.join(missing)}. Run `{REFRESH}` to add them (nothing else is recomputed).")
    for victim, series in by_victim.items():
        view.figures.append(curves_figure(victim, series, clean_curves.get(victim), f"curves-{len(view.figures)}"))
    return view


def curves_figure(victim: str, series: list[tuple[str, dict]], clean: dict | None, slug: str) -> Figure:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.8))
    palette = plt.get_cmap("tab10")
    for i, (name, curves) in enumerate(series):
        colour = palette(i % 10)
        for col, (key, what) in enumerate((("clean", "clean queries"), ("triggered", "triggered queries vs target"))):
            curve = curves[key]
            k, p, r = curve["cutoffs"].numpy(), curve["precision"].numpy(), curve["recall"].numpy()
            axes[0][col].plot(k, p, color=colour, label=name)
            axes[1][col].plot(r, p, color=colour, label=name)
            axes[0][col].set_title(f"precision@K, {what}", fontsize=10)
            axes[1][col].set_title(f"precision–recall, {what}", fontsize=10)
        clean_model = curves["triggered_clean_model"]
        axes[0][1].plot(clean_model["cutoffs"].numpy(), clean_model["precision"].numpy(), color=colour, ls="--")
        axes[1][1].plot(clean_model["recall"].numpy(), clean_model["precision"].numpy(), color=colour, ls="--")
    if clean is not None:
        axes[0][0].plot(clean["cutoffs"].numpy(), clean["precision"].numpy(), color="black", ls="--", label="clean model")
        axes[1][0].plot(clean["recall"].numpy(), clean["precision"].numpy(), color="black", ls="--")
    for col in range(2):
        axes[0][col].set_xscale("log")
        axes[0][col].set_xlabel("K (retrieved items)")
        axes[1][col].set_xlabel("recall")
        for row in range(2):
            axes[row][col].set_ylabel("precision")
            axes[row][col].set_ylim(-0.02, 1.02)
            axes[row][col].grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(victim, fontsize=10)
    fig.tight_layout()
    caption = (f"{victim}. Top: precision of the top K (mean over queries; ties by database index); bottom: precision "
               "against recall over the same ranks. Solid: the backdoored model; dashed: the clean model (left, black: "
               "its clean queries; right: the same triggered queries, showing what the trigger does without a backdoor).")
    return Figure(slug, f"Curves · {victim}", caption, _png(fig))
