"""t-MAP against poison PSNR, undefended, for every attack row of a results folder: the picture of
docs/attacks/badhash.md. BadHash rows are labelled with the settings that differ from its defaults.

    python benchmarks/studies/frontier.py results/fashion docs/img/badhash-fashion-frontier.png --image-size 32
    python benchmarks/studies/frontier.py results/fashion docs/img/badhash-fashion-frontier-64.png --image-size 64 --seed 0
"""

from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hashbench.report import load_results  # noqa: E402

# short names for the parameters a label shows
SHORT = {"epsilon": "ε", "min_psnr": "L2 dB", "hash_weight": "λh", "rec_weight": "λrec", "confusing_label": "c",
         "hash_target": "target code"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results")
    parser.add_argument("output")
    parser.add_argument("--current-recipe", action="store_true",
                        help="only rows that record their victim recipe (computed by hashbench 0.1 or later)")
    parser.add_argument("--image-size", type=int, help="only rows of this dataset image size")
    parser.add_argument("--seed", type=int, help="only rows of this seed")
    args = parser.parse_args()
    frame = load_results(args.results)
    rows = frame[(frame.defense == "none") & (frame.attack != "(clean)")]
    if args.image_size is not None:
        rows = rows[[json.loads(d).get("image_size") == args.image_size for d in rows.dataset_params]]
    if args.seed is not None:
        rows = rows[rows.seed == args.seed]
    rows = rows[rows.victim_params.notna()] if args.current_recipe else rows
    fig, ax = plt.subplots(figsize=(11, 6), dpi=120)
    params = {i: json.loads(r.attack_params) if isinstance(r.attack_params, str) and r.attack_params else {}
              for i, r in rows.iterrows()}
    recipes = {i: _recipe(r.victim_params) for i, r in rows.iterrows()}
    for i, row in rows.iterrows():
        badhash = row.attack == "badhash"
        same = [params[j] for j in rows.index if rows.attack[j] == row.attack]
        # a parameter shown where it differs from its most common value among the attack's rows
        varied = {k: v for k, v in params[i].items() if v != _most_common([other.get(k) for other in same])}
        label = " ".join([row.attack, *(f"{SHORT.get(k, k)}={v:g}" if isinstance(v, float) else f"{SHORT.get(k, k)}={v}"
                                        for k, v in varied.items()), f"@{row.poison_rate:g}"])
        if rows.seed.nunique() > 1:
            label += f" seed {row.seed}"
        if len(set(recipes.values())) > 1:
            label += f" ({recipes[i]})"
        if rows.target.nunique() > 1:
            label += f" → {row.target}"
        if isinstance(row.surrogate, str) and row.surrogate.strip() not in ("", "victim"):
            label += f" (surrogate {row.surrogate})"
        ax.scatter(row.poison_psnr, row.t_map, marker="*" if badhash else "o", s=120 if badhash else 50,
                   color="tab:red" if badhash else "tab:blue")
        ax.annotate(label, (row.poison_psnr, row.t_map), fontsize=7, xytext=(4, 3), textcoords="offset points")
        # the line's length is the lift: down to the larger of the two baselines
        baseline = max(row.t_map_untriggered, row.t_map_clean_model)
        ax.plot([row.poison_psnr] * 2, [baseline, row.t_map], color="grey", lw=0.6)
    for sweep in _budget_sweeps(rows, params):
        ax.plot(sweep.poison_psnr, sweep.t_map, color="tab:red", lw=1, alpha=0.6)
    ax.axvline(30, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("poison PSNR (dB), higher = less visible")
    ax.set_ylabel("t-MAP, undefended (grey line: down to the larger baseline,\n"
                  "the clean model's t-MAP or the untriggered one)")
    size = f", {args.image_size} px" if args.image_size is not None else ""
    legend = "; (wW, N ep): the victim's convnet width and fine-tuning epochs" if len(set(recipes.values())) > 1 else ""
    ax.set_title(f"t-MAP against visibility ({args.results}{size}){legend}", fontsize=9)
    ax.set_xlim(right=ax.get_xlim()[1] + 4)
    fig.tight_layout()
    fig.savefig(args.output)
    print(f"wrote {args.output} ({len(rows)} rows)")


def _most_common(values: list):
    """The value that occurs most often (the first of them in a tie); values may be unhashable."""
    return max(values, key=lambda value: sum(other == value for other in values))


def _budget_sweeps(rows, params):
    """BadHash rows that differ only in ``min_psnr`` (same target, seed and surrogate), each group sorted by
    PSNR: the frontier of one generator setting, drawn as a line."""
    groups = {}
    for i, row in rows[rows.attack == "badhash"].iterrows():
        rest = {k: v for k, v in params[i].items() if k != "min_psnr"}
        groups.setdefault((row.target, row.seed, row.surrogate, json.dumps(rest, sort_keys=True)), []).append(i)
    return [rows.loc[index].sort_values("poison_psnr") for index in groups.values() if len(index) > 1]


def _recipe(victim_params) -> str:
    """'wW, N ep': the victim's backbone width and fine-tuning epochs ('?' for rows older than victim_params)."""
    if not isinstance(victim_params, str) or not victim_params:
        return "?"
    recipe = json.loads(victim_params)
    return f"w{recipe['backbone'].get('width', '?')}, {recipe['train'].get('epochs', '?')} ep"


if __name__ == "__main__":
    main()
