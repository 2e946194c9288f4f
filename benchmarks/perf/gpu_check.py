"""The GPU checks of benchmarks/perf/gpu_check.sh that need Python: one table, one exit status.

- bf16 autocast and channels-last: a ResNet-50 hash model steps under autocast (bf16 outputs, weights
  stored channels-last, a finite loss) and its codes are compared with fp32's;
- retrieval: AP of every query on the GPU against the CPU, on NUS-WIDE-sized random codes (equal up to float64
  rounding: the two devices sum in different orders);
- ResNet-50 victim training throughput at 224 px through hashbench's own loop (random init, random images);
- BadHash generator throughput at 224 px at the paper's widths (64, 64, 6 residual blocks);
- the peak GPU memory of each.

    python benchmarks/perf/gpu_check.py            # on a CUDA machine (what gpu_check.sh runs)
    python benchmarks/perf/gpu_check.py --cpu      # dry run on the CPU at tiny sizes: checks the script
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hashbench import AttackContext, DatasetSplits, TensorImageSet, Target
from hashbench.devices import autocast, memory_format
from hashbench.models import sign_codes
from hashbench.retrieval import average_precisions
from hashbench.loading import instantiate
from hashbench.seeding import make_generator
from hashbench.training import TrainConfig, build_model, train_hash_model


@dataclass(frozen=True)
class Sizes:
    image: int
    train_images: int
    batch: int
    queries: int
    items: int
    generator_width: int
    res_blocks: int


FULL = Sizes(image=224, train_images=2048, batch=128, queries=2100, items=193_734, generator_width=64, res_blocks=6)
# AP is float64 on both devices, but the GPU's prefix sums add in another order: its APs were seen to differ
# from the CPU's by 5e-15 on an H200; a ranking that differs moves an AP by orders of magnitude more.
AP_ROUNDING = 1e-12
DRY = Sizes(image=32, train_images=32, batch=8, queries=50, items=2000, generator_width=4, res_blocks=1)


def random_images(n: int, size: int, classes: int = 10, seed: int = 0) -> TensorImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.nn.functional.one_hot(torch.arange(n) % classes, classes).float()
    return TensorImageSet(images, labels)


def resnet50(bits: int, size: int):
    torch.manual_seed(0)
    return build_model(instantiate("backbone", {"name": "resnet50", "params": {}}), bits, size)


def peak_mib(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:,.0f}" if device.type == "cuda" else "-"


def check_amp(device: torch.device, sizes: Sizes) -> tuple[bool, str]:
    """bf16 autocast + channels-last: output dtype, weight layout, a finite step, code agreement with fp32."""
    if device.type != "cuda":
        return True, "skipped on the CPU (autocast and channels-last are CUDA-only here)"
    fmt = memory_format(device)
    model = resnet50(64, sizes.image).to(device, memory_format=fmt)
    x = torch.rand(sizes.batch, 3, sizes.image, sizes.image, device=device).contiguous(memory_format=fmt)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    with autocast(device):
        z = model(x)
    loss = z.float().pow(2).mean()
    loss.backward()
    optimizer.step()
    conv = model.backbone.conv1.weight if hasattr(model.backbone, "conv1") else next(
        m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    model.eval()
    with torch.no_grad():
        with autocast(device):
            bf16 = sign_codes(model(x).float())
        fp32 = sign_codes(model(x).float())
    agree = float((bf16 == fp32).float().mean())
    ok = z.dtype == torch.bfloat16 and conv.is_contiguous(memory_format=torch.channels_last) and bool(torch.isfinite(loss))
    return ok, f"outputs {z.dtype}, conv weights channels-last: {conv.is_contiguous(memory_format=torch.channels_last)}, " \
               f"loss finite: {bool(torch.isfinite(loss))}; bits equal to fp32's: {agree:.4f}"


def check_retrieval(device: torch.device, sizes: Sizes) -> tuple[bool, str]:
    """AP of every query on ``device`` vs the CPU: equal within ``AP_ROUNDING``, or the check fails."""
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 2, (sizes.queries, 64), generator=g).float() * 2 - 1
    db = torch.randint(0, 2, (sizes.items, 64), generator=g).float() * 2 - 1
    ql = (torch.rand(sizes.queries, 21, generator=g) < 0.15).float()
    dl = (torch.rand(sizes.items, 21, generator=g) < 0.15).float()
    started = time.perf_counter()
    cpu = average_precisions(q, db, ql, dl, 5000)
    cpu_s = time.perf_counter() - started
    started = time.perf_counter()
    dev = average_precisions(q, db, ql, dl, 5000, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dev_s = time.perf_counter() - started
    largest = float((cpu - dev).abs().max())
    return largest <= AP_ROUNDING, (
        f"{sizes.queries} x {sizes.items:,} items, 64 bits, mAP@5000 {float(cpu.mean()):.6f} (CPU, {cpu_s:.2f} s) "
        f"vs {float(dev.mean()):.6f} ({device.type}, {dev_s:.2f} s); largest AP difference {largest:.3g}")


def check_training(device: torch.device, sizes: Sizes) -> tuple[bool, str]:
    """ResNet-50 victim (CSQ, 64 bits) through train_hash_model: one warm-up epoch, one timed."""
    data = random_images(sizes.train_images, sizes.image)
    model = resnet50(64, sizes.image)
    config = TrainConfig(epochs=1, batch_size=sizes.batch, lr=1e-4)
    method = instantiate("method", {"name": "csq", "params": {}})
    train_hash_model(model, method, data, config, device, make_generator(0))  # warm-up: cudnn autotuning
    report = train_hash_model(model, method, data, config, device, make_generator(1))
    ok = all(torch.isfinite(torch.tensor(report.epoch_losses)))
    return ok, f"{report.images_per_second:,.0f} images/s (batch {sizes.batch}, {sizes.image} px, {sizes.train_images} images)"


def check_badhash(device: torch.device, sizes: Sizes) -> tuple[bool, str]:
    """BadHash's prepare at the paper's generator/discriminator widths; its own images/s log."""
    data = random_images(sizes.train_images, sizes.image)
    splits = DatasetSplits(data, random_images(20, sizes.image, seed=1), data, [f"c{i}" for i in range(10)])
    surrogate = resnet50(64, sizes.image).to(device).eval()
    for p in surrogate.parameters():
        p.requires_grad_(False)
    logged: dict[str, list[float]] = {}
    attack = instantiate("attack", {"name": "badhash", "params": {
        "epochs": 2, "epochs_decay": 0, "batch_size": min(64, sizes.batch), "width": sizes.generator_width,
        "disc_width": sizes.generator_width, "res_blocks": sizes.res_blocks, "labcln_steps": 20}})
    ctx = AttackContext(splits=splits, target=Target(torch.eye(10)[0], "c0"), poison_rate=0.01, device=device, seed=0,
                        generator=make_generator(0), artifact_dir=Path(tempfile.mkdtemp()), surrogate_loader=lambda: surrogate,
                        log=lambda **m: [logged.setdefault(k, []).append(float(v)) for k, v in m.items()])
    attack.prepare(ctx)
    rate = logged["generator_images_per_second"][-1]
    losses = torch.tensor(logged.get("g_loss", [float("nan")]))
    return bool(torch.isfinite(losses).all()), (f"{rate:,.0f} images/s over 2 epochs (the first includes warm-up; "
                                                f"width {sizes.generator_width}, {sizes.res_blocks} residual blocks)")


CHECKS = {
    "bf16 autocast + channels-last (ResNet-50)": check_amp,
    "retrieval: GPU vs CPU AP": check_retrieval,
    "ResNet-50 victim training": check_training,
    "BadHash generator training": check_badhash,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="dry run on the CPU at tiny sizes (checks the script itself)")
    args = parser.parse_args()
    if args.cpu:
        device, sizes = torch.device("cpu"), DRY
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False): nothing was checked. "
              "Run this on a machine with one, or pass --cpu for a dry run of the script.", file=sys.stderr)
        return 3
    else:
        device, sizes = torch.device("cuda"), FULL
    rows, failed = [], 0
    for name, check in CHECKS.items():
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        try:
            ok, detail = check(device, sizes)
        except Exception as exc:  # a check that crashes is a failed check, and the others still run
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        failed += not ok
        rows.append(f"| {name} | {'ok' if ok else 'FAILED'} | {detail} | {peak_mib(device)} | {time.perf_counter() - started:.1f} |")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run, tiny sizes)"
    print(f"\n{name}, torch {torch.__version__}\n")
    print("| check | result | measured | peak GPU MiB | seconds |\n|---|---|---|---|---|")
    print("\n".join(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
