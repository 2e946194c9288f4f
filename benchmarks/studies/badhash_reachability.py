"""Can the confusing label c be chosen by how reachable its code is? (docs/attacks/badhash.md, "The image size").

BadHash's rule picks, for each target, the class whose anchor code the surrogate's outputs on target-class
images already lean towards most (``agreement``). For each target this script prints the rule's three best
candidates and, for each, how far a per-image perturbation within the generator's budget (the L∞ box of
ε = 32 grey levels, then the RMS of ``--min-psnr`` dB, as ``epsilon`` and ``min_psnr`` bound G) pulls 64
target-class images towards that candidate's anchor code on the surrogate, after 60 Adam steps:

- ``probe``: the hash term 1 − mean(tanh(z / s) · code) that BadHash's generator lowers (0: every bit on c's code);
- ``bits``: the share of code bits equal to c's anchor code.

The surrogate is a cached clean victim of a results folder (a benchmark with that victim must have run):

    python benchmarks/studies/badhash_reachability.py results/fashion --image-size 64 --seed 0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hashbench.data import to_float
from hashbench.loading import instantiate, load_dataset
from hashbench.models import majority_code
from hashbench.training import build_model
from hashbench_plugins.attacks.badhash import agreement, surrogate_outputs

CPU = torch.device("cpu")


def clean_victim(results: Path, image_size: int, seed: int, key: str = "") -> Path:
    """The one clean-victim stage folder of that image size and seed whose stage key starts with ``key``."""
    configs = {m.parent: json.loads(m.read_text())["config"]
               for m in sorted((results / "stages" / "clean_victim").glob(f"{key}*/manifest.json"))}
    found = [folder for folder, config in configs.items()
             if config["dataset"]["params"].get("image_size") == image_size and config.get("seed") == seed]
    if len(found) != 1:
        listing = "".join(f"\n  {folder.name}: {json.dumps(configs[folder]['victim']['train'])}" for folder in found)
        raise SystemExit(f"{len(found)} clean victims of image size {image_size} and seed {seed} in {results}: "
                         f"need one; pick it with --clean-victim KEY{listing}")
    return found[0]


def probe(model: torch.nn.Module, x: torch.Tensor, code: torch.Tensor, scale: float, max_rms: float,
          epsilon: float = 32 / 255, steps: int = 60) -> tuple[float, float]:
    """(hash term, share of bits on ``code``) after a per-image perturbation within the budget."""
    # a tiny random start: the RMS scaling has no gradient at an all-zero residual
    w = (1e-3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=0.05)

    def perturbed() -> torch.Tensor:
        residual = epsilon * torch.tanh(w)
        rms = residual.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
        return (x + residual * (max_rms / rms.clamp(min=1e-12)).clamp(max=1.0)).clamp(0, 1)

    def hash_term(z: torch.Tensor) -> torch.Tensor:
        return 1 - (torch.tanh(z / scale) * code).mean()

    for _ in range(steps):
        loss = hash_term(model(perturbed()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        z = model(perturbed())
    return float(hash_term(z)), float((torch.sign(z) == code).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-psnr", type=float, default=30.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clean-victim", default="", metavar="KEY",
                        help="the clean victim's stage key (a prefix), where the folder holds several of that size and seed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = clean_victim(args.results, args.image_size, args.seed, args.clean_victim)
    config = json.loads((folder / "manifest.json").read_text())["config"]
    splits = load_dataset(config["dataset"])
    model = build_model(instantiate("backbone", config["victim"]["backbone"]), config["victim"]["bits"], splits.image_size)
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    model.eval().requires_grad_(False)
    train, names = splits.train, splits.class_names
    anchors = torch.cat([majority_code(surrogate_outputs(model, train, train.labels[:, k] > 0, CPU))[None]
                         for k in range(len(names))])
    max_rms = 10 ** (-args.min_psnr / 20)
    print(f"surrogate: clean victim {folder.name} (image size {args.image_size}, seed {args.seed})")
    for target, name in enumerate(names):
        members = train.labels[:, target] > 0
        z = surrogate_outputs(model, train, members, CPU)
        scores = agreement(z, anchors)
        scores[target] = -float("inf")
        x = to_float(train.images(torch.nonzero(members).flatten()[:64]))
        cells = []
        for c in torch.argsort(scores, descending=True)[:3].tolist():
            hash_term, bits = probe(model, x, anchors[c], float(z.abs().mean()), max_rms)
            cells.append(f"{names[c]}: agreement {float(scores[c]):.3f}, probe {hash_term:.3f}, bits {bits:.2f}")
        print(f"{name:12s} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
