"""How a backdoored victim learns BadHash's poisons, epoch by epoch (docs/attacks/badhash.md, "Epoch by
epoch").

Run a benchmark file with a BadHash row first (e.g. benchmarks/studies/badhash_targets.toml); this script
then trains that row's backdoored victim again from the cached stages, with the victim stage's recipe,
initialisation and seed, and after every epoch measures on the whole database:

- ``t_map``: the t-MAP of the attack's triggered queries (the last epoch's is the results row's);
- ``t_map_untriggered``: the t-MAP of the same queries without the trigger;
- ``poisons_nearer_target``: the fraction of poisons whose code is nearer the target's class centre than
  the confusing label c's, a class centre being the sign of the mean database code of that class;
- ``poison_bits_to_target`` / ``poison_bits_to_c``: the poisons' mean Hamming distance to those centres.

    python benchmarks/studies/badhash_epochs.py FILE.toml [--threads 1]

One JSON line per epoch. On the CPU, with the thread count the victim stage ran with, the last epoch
reproduces the results row's t-MAP exactly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import torch

from hashbench import artifacts
from hashbench.artifacts import BACKBONE_FILE, TriggeredQueries
from hashbench.benchmark import plan_run
from hashbench.config import load_spec
from hashbench.evaluation import encode_set, encode_tensor
from hashbench.loading import instantiate, load_dataset, new_model, victim_generator, victim_recipe
from hashbench.records import VictimStage
from hashbench.retrieval import score_rankings
from hashbench.runner import StageRunner
from hashbench.stages.attack import restored_attack
from hashbench.stages.victims import poisoned_train_set
from hashbench.training import train_hash_model


def badhash_victim(plan) -> VictimStage:
    victims = [s for s in plan.ordered() if s.kind == "victim" and s.poison.attack.attack["name"] == "badhash"]
    if len(victims) != 1:
        raise SystemExit(f"the file plans {len(victims)} BadHash victims; give it exactly one (one seed, one rate)")
    return victims[0]


def class_centre(db_codes: torch.Tensor, db_labels: torch.Tensor, label: int) -> torch.Tensor:
    """The sign of the mean code of the database images of ``label`` (ties to +1)."""
    mean = db_codes[db_labels[:, label] > 0].mean(0)
    return torch.where(mean >= 0, 1.0, -1.0)


def trace_epochs(benchmark: Path, emit: Callable[[dict], None]) -> None:
    """Train the BadHash victim of ``benchmark`` again, calling ``emit`` with a header, then each epoch's
    measurements."""
    spec = load_spec(benchmark)
    runner = StageRunner(spec.settings.results, spec.settings.device)
    stage = badhash_victim(plan_run(spec))
    prepared = stage.poison.attack
    for needed in (prepared, stage.poison):
        if not runner.store.stage_dir(needed.kind, needed.key).exists():
            raise SystemExit(f"{needed.label} is not in {spec.settings.results}: run `hashbench run {benchmark}` first")

    splits = load_dataset(stage.dataset)
    target = prepared.resolved_target()
    (target_label,) = target.classes
    confusing = int(restored_attack(runner, stage.poison).condition.label)
    train, poisons = poisoned_train_set(runner, stage.poison, splits.train)
    triggered = artifacts.load(runner.store, prepared.id, TriggeredQueries)
    db_labels = splits.database.labels
    target_rows = target.labels.reshape(1, -1).expand(len(triggered.indices), -1)

    model = new_model(stage.victim, splits.image_size, stage.seed)
    if stage.pretrain is not None:
        model.backbone.load_state_dict(runner.store.load(*stage.pretrain.id.split("/"), BACKBONE_FILE))
    device = runner.device

    def measure(epoch: int, loss: float) -> None:
        db_codes = encode_set(model, splits.database, device)
        trig_codes = encode_tensor(model, triggered.images, device)
        plain_codes = encode_tensor(model, splits.query.images(triggered.indices), device)
        poison_codes = encode_tensor(model, poisons.images, device)
        model.train()  # encoding left it in eval mode; the next epoch trains
        bits = model.bits
        to_target = (bits - poison_codes @ class_centre(db_codes, db_labels, target_label)) / 2
        to_c = (bits - poison_codes @ class_centre(db_codes, db_labels, confusing)) / 2
        t_maps = {
            name: score_rankings(codes, db_codes, db_labels, {"target": target_rows}, splits.topk,
                                 device=device)["target"].mean_average_precision()
            for name, codes in (("t_map", trig_codes), ("t_map_untriggered", plain_codes))
        }
        emit({
            "epoch": epoch + 1, "loss": loss, **t_maps,
            "poisons_nearer_target": float((to_target < to_c).double().mean()),
            "poison_bits_to_target": float(to_target.mean()),
            "poison_bits_to_c": float(to_c.mean()),
        })

    emit({"victim": stage.label, "target": target.name, "confusing_label": confusing, "poisons": len(poisons.indices)})
    train_hash_model(model, instantiate("method", stage.victim["method"]), train, victim_recipe(stage.victim),
                     device, victim_generator(stage.victim, stage.seed), on_epoch=measure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", type=Path, help="a benchmark file with one BadHash row, already run")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    trace_epochs(args.benchmark, lambda record: print(json.dumps(
        {k: round(v, 3) if isinstance(v, float) else v for k, v in record.items()}), flush=True))


if __name__ == "__main__":
    main()
