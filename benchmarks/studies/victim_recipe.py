"""How a victim recipe retrieves: pretrain a backbone once, fine-tune CSQ victims from it, report clean mAP.

The measurements behind docs/victims.md ("A competent victim on the CPU"). The pretrained weights are kept
in --weights-dir, so several fine-tuning variants share one pretraining:

    python benchmarks/studies/victim_recipe.py --dataset fashion_mnist --pretrain-epochs 6 \\
        --variant epochs=4,lr=1e-3 --variant epochs=8,lr=1e-3 --variant epochs=3,lr=1e-3,freeze=1

Each variant prints one JSON line: its settings, the clean mAP over the whole database, and the seconds
spent fine-tuning and encoding.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch

from hashbench import DatasetContext
from hashbench.evaluation import encode_set
from hashbench.pretraining import pretrain_backbone
from hashbench.retrieval import mean_average_precision
from hashbench.loading import cache_dir, instantiate
from hashbench.seeding import make_generator
from hashbench.training import TrainConfig, build_model, train_hash_model


def parse_variant(text: str) -> dict:
    out = {}
    for item in text.split(","):
        key, value = item.split("=")
        out[key] = float(value) if "." in value or "e" in value else int(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--dataset-params", default="{}", help="JSON object of the dataset's parameters")
    parser.add_argument("--width", type=int, default=16, help="convnet width")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--pretrain-on", default="database", choices=["database", "train"])
    parser.add_argument("--pretrain-augment", default="crop_flip", choices=["none", "crop", "crop_flip"])
    parser.add_argument("--variant", action="append", default=[], help="fine-tuning: key=value,... of TrainConfig "
                        "(epochs, lr, batch_size), plus freeze=1 to train the hash head only")
    parser.add_argument("--weights-dir", default=str(cache_dir() / "studies"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    dataset = instantiate("dataset", {"name": args.dataset, "params": json.loads(args.dataset_params)})
    splits = dataset.load(DatasetContext(cache_dir=cache_dir() / "datasets", seed=0))
    backbone = instantiate("backbone", {"name": "convnet", "params": {"width": args.width}})

    name = f"{args.dataset}-{args.dataset_params}-w{args.width}-{args.pretrain_on}-{args.pretrain_augment}-{args.pretrain_epochs}"
    weights_file = Path(args.weights_dir) / f"{hashlib.sha256(name.encode()).hexdigest()[:16]}.pt"
    if args.pretrain_epochs and weights_file.exists():
        weights = torch.load(weights_file, weights_only=True)
    elif args.pretrain_epochs:
        torch.manual_seed(0)
        started = time.perf_counter()
        recipe = TrainConfig(pretrain_epochs=args.pretrain_epochs, pretrain_on=args.pretrain_on, augment=args.pretrain_augment)
        weights, report = pretrain_backbone(backbone, splits, recipe, cpu, make_generator(0))
        weights_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(weights, weights_file)
        print(json.dumps({"pretrain_seconds": round(time.perf_counter() - started),
                          "pretrain_losses": [round(x, 3) for x in report.epoch_losses]}), flush=True)

    for text in args.variant or ["epochs=4,lr=1e-3"]:
        variant = parse_variant(text)
        freeze = bool(variant.pop("freeze", 0))
        torch.manual_seed(1)
        model = build_model(backbone, args.bits, splits.image_size)
        if args.pretrain_epochs:
            model.backbone.load_state_dict(weights)
        model.backbone.requires_grad_(not freeze)
        started = time.perf_counter()
        train_hash_model(model, instantiate("method", {"name": "csq", "params": {}}), splits.train,
                         TrainConfig(schedule="cosine", augment="crop_flip", **variant), cpu, make_generator(1))
        trained = time.perf_counter()
        query, database = encode_set(model, splits.query, cpu), encode_set(model, splits.database, cpu)
        topk = None if splits.topk < 0 else splits.topk
        clean_map = mean_average_precision(query, database, splits.query.labels, splits.database.labels, topk=topk)
        print(json.dumps({"pretrain_epochs": args.pretrain_epochs, "variant": text, "clean_map": round(float(clean_map), 4),
                          "finetune_seconds": round(trained - started),
                          "encode_seconds": round(time.perf_counter() - trained)}), flush=True)


if __name__ == "__main__":
    main()
