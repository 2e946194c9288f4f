"""Training overhead: a hashbench victim run vs a bare PyTorch loop of the same model, data and optimiser.

Both train a convnet hash model with the CSQ objective for the same epochs and batch size (Adam, same
lr); the bare loop slices the same uint8 tensor, normalises and steps, nothing else. Prints seconds and
images/s of each and the overhead. On CUDA both use bf16 autocast and channels-last.

    python benchmarks/perf/training.py [--device cuda] [--epochs 3] [--width 16]
"""

from __future__ import annotations

import argparse
import time

import torch

from hashbench.data import to_float
from hashbench.devices import autocast, memory_format
from hashbench.loading import instantiate, load_dataset
from hashbench.seeding import make_generator
from hashbench.training import TrainConfig, build_model, train_hash_model

DATA = {"name": "synthetic", "version": "1", "params": {
    "image_size": 32, "num_classes": 10, "train_per_class": 200, "query_per_class": 20, "database_per_class": 200,
    "multi_label": False, "max_objects": 3, "noise": 0.03, "seed": 0}}


def fresh(width: int, bits: int):
    torch.manual_seed(0)
    return build_model(instantiate("backbone", {"name": "convnet", "params": {"width": width}}), bits, 32)


def bare_loop(model, method, train, config: TrainConfig, device: torch.device) -> float:
    fmt = memory_format(device)
    model.to(device=device, memory_format=fmt).train()
    from hashbench import MethodSetup

    method.setup(MethodSetup(train.labels.to(device), model.bits, device, make_generator(0)))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    images, labels = train.all_images(), train.labels
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(config.epochs):
        order = torch.randperm(len(images), generator=g)
        for s in range(0, len(order), config.batch_size):
            idx = order[s : s + config.batch_size]
            x = to_float(images[idx].to(device, non_blocking=True)).contiguous(memory_format=fmt)
            with autocast(device, config.amp):
                z = model(x)
            loss = method.loss(z.float(), labels[idx].to(device), idx.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--bits", type=int, default=32)
    args = parser.parse_args()
    device = torch.device(args.device)
    train = load_dataset(DATA).train
    config = TrainConfig(epochs=args.epochs, batch_size=64)
    n = len(train) * args.epochs
    bare = bare_loop(fresh(args.width, args.bits), instantiate("method", {"name": "csq", "params": {}}), train, config, device)
    report = train_hash_model(fresh(args.width, args.bits), instantiate("method", {"name": "csq", "params": {}}),
                              train, config, device, make_generator(0))
    print(f"device {device}, {torch.get_num_threads()} threads; {len(train)} images x {args.epochs} epochs, batch 64")
    print(f"bare PyTorch loop: {bare:.2f} s ({n / bare:.0f} img/s)")
    print(f"hashbench loop:    {report.seconds:.2f} s ({report.images_per_second:.0f} img/s)")
    print(f"overhead: {100 * (report.seconds / bare - 1):+.1f}%")


if __name__ == "__main__":
    main()
