"""Retrieval evaluation at NUS-WIDE scale: hashbench's vectorised mAP@K vs a per-query sorting loop.

Random ±1 codes (2,100 queries × 193,734 items, 64 bits), 21-class multi-hot labels, K = 5000. Checks
that both give the same mAP (to 1e-9), times them, and reports peak memory of the vectorised path
(tracemalloc on the CPU, which sees numpy and torch CPU allocations via the RSS high-water mark too).

    python benchmarks/perf/retrieval.py [--device cuda] [--loop-queries 300]

``--row`` also times what an evaluation row asks of one set of codes (mAP, t-MAP against the first
class, and the curves of the own-label judgement): three separate calls, each ranking the database,
against one ``score_rankings`` call that ranks it once, and checks that they agree.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import numpy as np
import torch

from hashbench.retrieval import DEFAULT_MEMORY_BUDGET, average_precisions, mean_average_precision, retrieval_curves, score_rankings


def make_data(n_query: int, n_db: int, bits: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    q = np.where(rng.random((n_query, bits)) < 0.5, -1.0, 1.0).astype(np.float32)
    db = np.where(rng.random((n_db, bits)) < 0.5, -1.0, 1.0).astype(np.float32)
    ql = (rng.random((n_query, classes)) < 0.12).astype(np.float32)
    dl = (rng.random((n_db, classes)) < 0.12).astype(np.float32)
    return q, db, ql, dl


def loop_map(q, db, ql, dl, topk: int) -> float:
    """The straightforward evaluator: per query, Hamming distances, a stable argsort, AP over the top K."""
    bits = q.shape[1]
    aps = []
    for i in range(len(q)):
        hamming = 0.5 * (bits - db @ q[i])
        order = np.argsort(hamming, kind="stable")[: topk if topk > 0 else None]
        relevant = (dl[order] @ ql[i] > 0).astype(np.float64)
        hits = relevant.sum()
        if hits == 0:
            aps.append(0.0)
            continue
        precision = np.cumsum(relevant) / np.arange(1, len(relevant) + 1)
        aps.append(float((precision * relevant).sum() / hits))
    return float(np.mean(aps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--queries", type=int, default=2100)
    parser.add_argument("--database", type=int, default=193_734)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--topk", type=int, default=5000, help="K of mAP@K; -1: the whole database")
    parser.add_argument("--loop-queries", type=int, default=0,
                        help="time the loop on this many queries and extrapolate (0: all of them)")
    parser.add_argument("--row", action="store_true", help="time an evaluation row's three scores: three calls vs one")
    args = parser.parse_args()
    q, db, ql, dl = make_data(args.queries, args.database, args.bits, 21)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"device {device}; {args.queries} queries x {args.database} items, {args.bits} bits, K={args.topk}")

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mean_average_precision(q[:8], db, ql[:8], dl, args.topk, device=device)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fast = mean_average_precision(q, db, ql, dl, args.topk, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    fast_s = time.perf_counter() - start
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak = (f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if device.type == "cuda"
            else f"peak RSS {rss_after:.0f} MiB (inputs alone {rss_before:.0f} MiB)")
    print(f"hashbench: mAP@{args.topk} = {fast:.12f} in {fast_s:.2f} s; {peak}; "
          f"chunk = {max(1, DEFAULT_MEMORY_BUDGET // args.database)} queries")

    n_loop = args.loop_queries or args.queries
    start = time.perf_counter()
    slow = loop_map(q[:n_loop], db, ql[:n_loop], dl, args.topk)
    loop_s = (time.perf_counter() - start) * args.queries / n_loop
    same = mean_average_precision(q[:n_loop], db, ql[:n_loop], dl, args.topk, device=device)
    print(f"loop:      mAP@{args.topk} = {slow:.12f} on {n_loop} queries; {loop_s:.1f} s for all "
          f"{'(extrapolated)' if n_loop < args.queries else ''}")
    print(f"difference on the same queries: {abs(same - slow):.2e} (must be < 1e-9); speed-up {loop_s / fast_s:.1f}x")
    if abs(same - slow) > 1e-9:
        raise SystemExit("MISMATCH between the vectorised and the loop evaluator")
    if args.row:
        time_row(q, db, ql, dl, args.topk, device)


def time_row(q, db, ql, dl, topk: int, device: torch.device) -> None:
    target = np.zeros_like(ql)
    target[:, 0] = 1
    start = time.perf_counter()
    separate = (average_precisions(q, db, ql, dl, topk, device=device), average_precisions(q, db, target, dl, topk, device=device),
                retrieval_curves(q, db, ql, dl, device=device))
    separate_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = score_rankings(q, db, dl, {"own": ql, "target": target}, topk, curves=["own"], device=device)
    once_s = time.perf_counter() - start
    agree = (torch.equal(scores["own"].average_precisions, separate[0])
             and torch.equal(scores["target"].average_precisions, separate[1])
             and all(torch.allclose(scores["own"].curves()[k], separate[2][k], rtol=0, atol=1e-12) for k in ("precision", "recall")))
    print(f"a row's mAP + t-MAP + curves: three calls {separate_s:.2f} s, one ranking {once_s:.2f} s "
          f"({separate_s / once_s:.1f}x); identical: {agree}")
    if not agree:
        raise SystemExit("MISMATCH between one ranking and separate calls")


if __name__ == "__main__":
    main()
