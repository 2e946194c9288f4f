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


def hamming_ranking(query_codes: torch.Tensor, db_codes: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` nearest database items per query, nearest first, ties by database index."""
    n, bits = db_codes.shape
    inner = query_codes @ db_codes.T  # bits - 2·hamming
    hamming = ((bits - inner) * 0.5).round_().long()
    if k >= n:
        return torch.sort(hamming, dim=1, stable=True).indices
    # A unique composite key makes top-k exact: distance first, database index second.
    key = hamming.mul_(n).add_(torch.arange(n, device=hamming.device))
    return torch.topk(key, k, dim=1, largest=False, sorted=True).indices


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
    ranks = torch.arange(1, k + 1, device=q.device, dtype=torch.float64)
    out = []
    for start in range(0, q.shape[0], chunk):
        order = hamming_ranking(q[start : start + chunk], db, k)
        relevant = (ql[start : start + chunk] @ dl.T > 0).gather(1, order).double()
        hits = relevant.cumsum(dim=1)
        num_relevant = relevant.sum(dim=1)
        ap = (hits / ranks * relevant).sum(dim=1) / num_relevant.clamp(min=1)
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
    query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any, k: int, **kwargs: Any
) -> float:
    """Mean fraction of relevant items among the first ``k`` retrieved (ties by database index)."""
    q = _check_codes(_tensor(query_codes), "query_codes")
    db = _check_codes(_tensor(db_codes), "db_codes")
    ql, dl = _label_pair(_tensor(query_labels), _tensor(db_labels), q.shape[0], db.shape[0])
    k = min(k, db.shape[0])
    chunk = max(1, kwargs.get("memory_budget", DEFAULT_MEMORY_BUDGET) // max(db.shape[0], 1))
    total = 0.0
    for start in range(0, q.shape[0], chunk):
        order = hamming_ranking(q[start : start + chunk], db, k)
        total += float((ql[start : start + chunk] @ dl.T > 0).gather(1, order).double().mean(dim=1).sum())
    return total / max(q.shape[0], 1)


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """±1 codes -> packed uint8 bits (8× smaller on disk); see :func:`unpack_codes`."""
    bits = (codes > 0).to(torch.uint8).cpu().numpy()
    return torch.from_numpy(np.packbits(bits, axis=1))


def unpack_codes(packed: torch.Tensor, bits: int) -> torch.Tensor:
    unpacked = np.unpackbits(packed.cpu().numpy(), axis=1, count=bits)
    return torch.from_numpy(unpacked).float().mul_(2).sub_(1)
