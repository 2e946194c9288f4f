"""Retrieval metrics under one set of conventions (DESIGN §6, docs/metrics.md).

- Codes are ±1; distance is Hamming; ties are broken by database index (stable and deterministic).
- An item is relevant when it shares at least one label with the query.
- AP@K averages precision@rank over the relevant items inside the top K; a query with no relevant item
  in its top K scores 0 and still counts. ``topk=None`` or ``-1`` ranks the whole database.

Everything is vectorised over a chunk of queries; the chunk is sized so that the (queries × database)
working set stays under ``memory_budget`` elements, which bounds memory at any database size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

DEFAULT_MEMORY_BUDGET = 1 << 24  # elements of the (chunk × database) key matrix, ~128 MiB as int64


def _tensor(x: Any, device: torch.device | None = None) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    return t.to(device) if device is not None else t


def _check_codes(codes: torch.Tensor, what: str) -> torch.Tensor:
    if codes.dim() != 2:
        raise ValueError(f"{what} must be a 2-D (items × bits) array, got shape {tuple(codes.shape)}")
    codes = codes.float()
    if not bool(((codes == 1) | (codes == -1)).all()):
        raise ValueError(f"{what} must contain only ±1 (use hashbench.sign_codes on real outputs)")
    return codes


def _labels(labels: torch.Tensor, n: int, what: str, num_classes: int | None = None) -> torch.Tensor:
    labels = labels.float()
    if labels.dim() == 1:  # class indices -> one-hot
        labels = torch.nn.functional.one_hot(labels.long(), num_classes or int(labels.max().item()) + 1).float()
    if labels.shape[0] != n:
        raise ValueError(f"{what} has {labels.shape[0]} rows but there are {n} codes")
    return labels


def _label_pair(query_labels: torch.Tensor, db_labels: torch.Tensor, nq: int, ndb: int):
    """Both label sets as multi-hot with the same number of classes (class indices are one-hot encoded)."""
    num_classes = None
    if query_labels.dim() == 1 or db_labels.dim() == 1:
        sizes = [int(t.max().item()) + 1 if t.dim() == 1 else t.shape[1] for t in (query_labels, db_labels) if len(t)]
        num_classes = max(sizes) if sizes else 1
    return (_labels(query_labels, nq, "query_labels", num_classes), _labels(db_labels, ndb, "db_labels", num_classes))


def _hamming(query_codes: torch.Tensor, db_codes: torch.Tensor) -> torch.Tensor:
    """Integer Hamming distances (queries × items) from ±1 codes, via one matrix product."""
    bits = db_codes.shape[1]
    inner = query_codes @ db_codes.T  # bits - 2·hamming, exact in float32 for any realistic code length
    return ((bits - inner) * 0.5).round_().to(torch.int64)


def _pack_words(codes: torch.Tensor) -> np.ndarray:
    """±1 codes -> (items, words) uint64 bit-words, so a Hamming distance is XOR + popcount."""
    packed = np.packbits(codes.cpu().numpy() > 0, axis=1)
    padded = np.zeros((packed.shape[0], -(-packed.shape[1] // 8) * 8), dtype=np.uint8)
    padded[:, : packed.shape[1]] = packed
    return padded.view(np.uint64)


def _hamming_words(query_words: np.ndarray, db_words: np.ndarray) -> np.ndarray:
    distance = np.zeros((query_words.shape[0], db_words.shape[0]), dtype=np.uint8)
    for w in range(db_words.shape[1]):
        distance += np.bitwise_count(query_words[:, w, None] ^ db_words[None, :, w])
    return distance


def _label_words(labels: torch.Tensor) -> torch.Tensor:
    """Multi-hot labels -> (items, words) int64 bitmasks: relevance becomes one AND per word."""
    n, classes = labels.shape
    words = -(-classes // 63)  # 63 bits a word keeps every mask a non-negative int64
    padded = torch.zeros(n, words * 63, dtype=torch.int64, device=labels.device)
    padded[:, :classes] = (labels > 0).long()
    weights = torch.pow(2, torch.arange(63, device=labels.device, dtype=torch.int64))
    return (padded.view(n, words, 63) * weights).sum(dim=2)


def _topk_candidates_cpu(hamming: np.ndarray, k: int, bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_topk_candidates` for the CPU, in numpy: its stable sort on small integer keys is far faster
    than torch's on the CPU."""
    m, n = hamming.shape
    counts = np.bincount((np.arange(m)[:, None] * bins + hamming).ravel(), minlength=m * bins).reshape(m, bins)
    cutoff = (np.cumsum(counts, axis=1) < k).sum(axis=1)
    row, item = np.nonzero(hamming <= cutoff[:, None].astype(hamming.dtype))
    # nonzero yields (row, index) order; a stable sort on (row, distance) keeps index order within ties
    order = np.argsort(row * bins + hamming[row, item], kind="stable")
    row, item = row[order], item[order]
    starts = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=m))])
    rank = np.arange(len(row)) - starts[row]
    keep = rank < k
    return torch.from_numpy(row[keep]), torch.from_numpy(item[keep]), torch.from_numpy(rank[keep])


def _topk_candidates(hamming: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``k`` items of every row's ranking by (distance, database index), as flat
    ``(row, item, rank)`` tensors in ranking order.

    Distances are small integers, so a per-row histogram finds the distance d* at which the running count
    reaches k; only items with distance <= d* (about k per row) are then sorted, instead of the whole row.
    """
    m, n = hamming.shape
    bins = int(hamming.max().item()) + 1 if hamming.numel() else 1
    rows = torch.arange(m, device=hamming.device).unsqueeze(1)
    counts = torch.bincount((rows * bins + hamming).flatten(), minlength=m * bins).view(m, bins)
    cutoff = (counts.cumsum(dim=1) < k).sum(dim=1)  # first distance whose running count reaches k
    row, item = torch.nonzero(hamming <= cutoff.unsqueeze(1), as_tuple=True)
    key = (row * bins + hamming[row, item]) * n + item  # row-major, then distance, then index
    order = torch.argsort(key)
    row, item = row[order], item[order]
    starts = torch.zeros(m + 1, dtype=torch.long, device=hamming.device)
    starts[1:] = torch.bincount(row, minlength=m).cumsum(0)
    rank = torch.arange(len(row), device=hamming.device) - starts[row]
    keep = rank < k
    return row[keep], item[keep], rank[keep]


def average_precisions(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    topk: int | None = None,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """AP@K of every query, as a float64 CPU tensor (see the module doc for the conventions)."""
    dev = torch.device(device) if device is not None else None
    q = _check_codes(_tensor(query_codes, dev), "query_codes")
    db = _check_codes(_tensor(db_codes, dev), "db_codes")
    if q.shape[1] != db.shape[1]:
        raise ValueError(f"query codes have {q.shape[1]} bits but database codes have {db.shape[1]}")
    ql, dl = _label_pair(_tensor(query_labels, q.device), _tensor(db_labels, q.device), q.shape[0], db.shape[0])
    if ql.shape[1] != dl.shape[1]:
        raise ValueError(f"query labels have {ql.shape[1]} classes but database labels have {dl.shape[1]}")
    n = db.shape[0]
    k = n if topk is None or topk < 0 or topk > n else int(topk)
    if k == 0:
        raise ValueError("topk must be positive, or -1 / None for the whole database")
    chunk = max(1, memory_budget // max(n, 1))
    on_cpu = q.device.type == "cpu"
    db_words = _pack_words(db) if on_cpu else None
    q_masks, db_masks = _label_words(ql), _label_words(dl)
    out = []
    for start in range(0, q.shape[0], chunk):
        qc = q[start : start + chunk]
        m = qc.shape[0]
        if on_cpu:
            hamming = _hamming_words(_pack_words(qc), db_words)
            row, item, rank = _topk_candidates_cpu(hamming, k, q.shape[1] + 1)
        else:
            row, item, rank = _topk_candidates(_hamming(qc, db), k)
        relevant = ((q_masks[start : start + chunk][row] & db_masks[item]) != 0).any(dim=1).double()
        # hits up to each position = running count of relevant items within the same row
        running = relevant.cumsum(0)
        row_start = torch.zeros(m + 1, dtype=torch.float64, device=q.device)
        row_start[1:] = torch.zeros(m, dtype=torch.float64, device=q.device).index_add_(0, row, relevant).cumsum(0)
        hits = running - row_start[row]
        precision_sum = torch.zeros(m, dtype=torch.float64, device=q.device).index_add_(0, row, hits / (rank + 1) * relevant)
        num_relevant = row_start[1:] - row_start[:-1]
        ap = precision_sum / num_relevant.clamp(min=1)
        out.append(torch.where(num_relevant > 0, ap, torch.zeros_like(ap)).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def mean_average_precision(
    query_codes: Any,
    db_codes: Any,
    query_labels: Any,
    db_labels: Any,
    topk: int | None = None,
    **kwargs: Any,
) -> float:
    """mAP@K. Accepts numpy arrays or tensors; ±1 codes; multi-hot, one-hot or class-index labels."""
    aps = average_precisions(query_codes, db_codes, query_labels, db_labels, topk, **kwargs)
    return float(aps.mean()) if len(aps) else float("nan")


def targeted_map(
    query_codes: Any, db_codes: Any, target_labels: Any, db_labels: Any, topk: int | None = None, **kwargs: Any
) -> float:
    """t-MAP@K: every query is scored against the target label set instead of its own labels."""
    q = _tensor(query_codes)
    target = _tensor(target_labels).float().reshape(1, -1).expand(q.shape[0], -1)
    return mean_average_precision(q, db_codes, target, db_labels, topk, **kwargs)


def precision_at_k(
    query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any, k: int, *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> float:
    """Mean fraction of relevant items among the first ``k`` retrieved (ties by database index)."""
    q = _check_codes(_tensor(query_codes), "query_codes")
    db = _check_codes(_tensor(db_codes), "db_codes")
    ql, dl = _label_pair(_tensor(query_labels), _tensor(db_labels), q.shape[0], db.shape[0])
    k = min(k, db.shape[0])
    chunk = max(1, memory_budget // max(db.shape[0], 1))
    total = 0.0
    for start in range(0, q.shape[0], chunk):
        row, item, _ = _topk_candidates(_hamming(q[start : start + chunk], db), k)
        total += float(((ql[start : start + chunk][row] * dl[item]).sum(dim=1) > 0).double().sum()) / k
    return total / max(q.shape[0], 1)


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """±1 codes -> packed uint8 bits (8× smaller on disk); see :func:`unpack_codes`."""
    bits = (codes > 0).to(torch.uint8).cpu().numpy()
    return torch.from_numpy(np.packbits(bits, axis=1))


def unpack_codes(packed: torch.Tensor, bits: int) -> torch.Tensor:
    unpacked = np.unpackbits(packed.cpu().numpy(), axis=1, count=bits)
    return torch.from_numpy(unpacked).float().mul_(2).sub_(1)
