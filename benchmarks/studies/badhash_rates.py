"""BadHash's lift per target class at each poison rate: t-MAP minus the larger of its two baselines (the
clean model's t-MAP of the same triggered queries, and the backdoored victim's untriggered t-MAP), for the
undefended BadHash rows at its default parameters on one victim recipe, image size and seed. The picture
of docs/attacks/badhash.md, "Which rate" (a study at 32 x 32, fashion.toml's image size then):

    python benchmarks/studies/badhash_rates.py results/fashion docs/img/badhash-fashion-rates.png --image-size 32
"""

from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hashbench.params import params_to_dict  # noqa: E402
from hashbench.plugins import get_registry  # noqa: E402
from hashbench.report import load_results  # noqa: E402

BAR = 0.3  # the lift over both baselines that docs/attacks/badhash.md holds BadHash to


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results")
    parser.add_argument("output")
    parser.add_argument("--width", type=int, default=24, help="the victim convnet's width (the recipe to plot)")
    parser.add_argument("--image-size", type=int, default=32, help="the dataset's image size (the rate study ran at 32)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    frame = load_results(args.results)
    defaults = json.dumps(_default_params(), sort_keys=True)
    rows = frame[(frame.attack == "badhash") & (frame.defense == "none") & (frame.seed == args.seed)]
    rows = rows[[json.dumps(json.loads(p), sort_keys=True) == defaults for p in rows.attack_params]]
    rows = rows[[json.loads(v)["backbone"].get("width") == args.width for v in rows.victim_params]]
    rows = rows[[json.loads(d).get("image_size") == args.image_size for d in rows.dataset_params]]
    lift = (rows.t_map - rows[["t_map_clean_model", "t_map_untriggered"]].max(axis=1)).rename("lift")
    table = rows.assign(lift=lift).pivot_table(index="target", columns="poison_rate", values="lift")
    table = table.loc[table.max(axis=1).sort_values(ascending=False).index]
    print(table.round(3).to_string())
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=120)
    step = 0.8 / len(table.columns)
    for k, rate in enumerate(table.columns):
        ax.bar([i + (k - (len(table.columns) - 1) / 2) * step for i in range(len(table))], table[rate], step,
               label=f"rate {rate:g}")
    ax.axhline(BAR, color="grey", ls=":", lw=1)
    ax.set_xticks(range(len(table)), table.index, rotation=20)
    ax.set_ylabel("t-MAP lift over both baselines")
    ax.set_title(f"BadHash at its defaults, undefended, per target ({args.results}, convnet width {args.width}, "
                 f"{args.image_size} px, seed {args.seed}); dotted: a lift of {BAR}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.output)
    print(f"wrote {args.output} ({len(rows)} rows)")


def _default_params() -> dict:
    """BadHash's default parameters as a results row records them."""
    return params_to_dict(get_registry().get("attack", "badhash").Params())


if __name__ == "__main__":
    main()
