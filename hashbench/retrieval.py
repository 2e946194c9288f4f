"""Retrieval metrics under one set of conventions (docs/metrics.md).

- Codes are ±1; distance is Hamming; ties are broken by database index (stable and deterministic).
- An item is relevant when it shares at least one label with the query.
- AP@K averages precision@rank over the relevant items inside the top K; a query with no relevant item
  in its top K scores 0 and still counts. ``topk=None`` or ``-1`` ranks the whole database.

Everything is vectorised over a chunk of queries; the chunk is sized so that the (queries × database)
working set stays under ``memory_budget`` elements, which bounds memory at any database size.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

DEFAULT_MEMORY_BUDGET = 1 << 23  # elements of a (chunk × database) matrix per worker thread (~10 bytes each)


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


def _hamming(query_codes: torch.Tensor, db_codes: torch.Tensor) -> torch.Tensor:
    """Hamming distances (queries × items) from ±1 codes via one matrix product (the accelerator path)."""
    bits = db_codes.shape[1]
    inner = query_codes @ db_codes.T  # bits - 2·hamming, exact in float32 for any realistic code length
    return ((bits - inner) * 0.5).round_().to(torch.int16)


def _pack_words(codes: torch.Tensor) -> np.ndarray:
    """±1 codes -> (items, words) uint64 bit-words, so a Hamming distance is XOR + popcount (the CPU path)."""
    packed = np.packbits(codes.cpu().numpy() > 0, axis=1)
    padded = np.zeros((packed.shape[0], -(-packed.shape[1] // 8) * 8), dtype=np.uint8)
    padded[:, : packed.shape[1]] = packed
    return padded.view(np.uint64)


def _hamming_words(query_words: np.ndarray, db_words: np.ndarray, block: int = 8192) -> np.ndarray:
    """(queries × items) Hamming distances, uint8 (uint16 for codes of 256 bits or more, which would wrap).
    The database is walked in blocks so that the XOR temporaries stay in cache (a 1.6× speed-up over one
    pass at NUS-WIDE scale)."""
    dtype = np.uint8 if db_words.shape[1] * 64 < 256 else np.uint16
    distance = np.empty((query_words.shape[0], db_words.shape[0]), dtype=dtype)
    for start in range(0, db_words.shape[0], block):
        out = distance[:, start : start + block]
        np.bitwise_count(query_words[:, 0, None] ^ db_words[None, start : start + block, 0], out=out)
        for w in range(1, db_words.shape[1]):
            out += np.bitwise_count(query_words[:, w, None] ^ db_words[None, start : start + block, w])
    return distance


def _label_words(labels: torch.Tensor) -> torch.Tensor:
    """Multi-hot labels -> (items, words) int64 bitmasks: relevance becomes one AND per word. Built one
    class at a time: a (items × 63·words) int64 matrix of the bits cost 50 ms a call for 69,000 items."""
    n, classes = labels.shape
    words = torch.zeros(n, -(-classes // 63), dtype=torch.int64, device=labels.device)  # 63 bits: masks stay >= 0
    present = labels > 0
    for c in range(classes):
        words[:, c // 63] |= present[:, c].long() << (c % 63)
    return words


def _narrow(words: torch.Tensor, classes: int, for_numpy: bool):
    """Label bitmasks in the narrowest integer type that holds them, as one column when one word does:
    putting the database's masks in ranking order is a gather of (queries × database) masks, and uint16
    masks of 10 classes made it and the AND after it 5× faster than (…, 1) int64 words. numpy has
    unsigned types for the CPU path; torch's signed ones keep a spare bit."""
    if words.shape[1] > 1:
        return words.numpy() if for_numpy else words
    column = words[:, 0]
    if for_numpy:
        dtype = np.uint8 if classes <= 8 else np.uint16 if classes <= 16 else np.uint32 if classes <= 32 else np.int64
        return column.numpy().astype(dtype)
    return column.to(torch.int16 if classes <= 15 else torch.int32 if classes <= 31 else torch.int64)


def _ap_from_relevance(relevant: torch.Tensor) -> torch.Tensor:
    """AP of each row of a (queries × K) relevance matrix in ranking order (0 where nothing is relevant).

    AP is the mean over a row's relevant items of (hits so far) / rank. On the CPU only the relevant
    items are visited (a tenth of a 10-class database): their ranks come from ``nonzero``, their hit
    counts from their order within the row, and each row's count from ``bincount`` (a sum over the bool
    matrix cost as much as all the rest). That is 3× faster than cumulative sums over the whole matrix
    in float64. On an accelerator the dense form is kept: ``nonzero`` would wait for the device.
    """
    if relevant.device.type != "cpu":
        relevant = relevant.double()
        ranks = torch.arange(1, relevant.shape[1] + 1, device=relevant.device, dtype=torch.float64)
        num_relevant = relevant.sum(dim=1)
        ap = (relevant.cumsum(dim=1) / ranks * relevant).sum(dim=1) / num_relevant.clamp(min=1)
        return torch.where(num_relevant > 0, ap, torch.zeros_like(ap))
    rows, cols = relevant.nonzero(as_tuple=True)  # row-major: each row's relevant items in ranking order
    num_relevant = torch.bincount(rows, minlength=relevant.shape[0])
    first = num_relevant.cumsum(0) - num_relevant  # where each row's items start in ``rows``
    hits = torch.arange(1, len(rows) + 1) - first[rows]
    precision = hits.double() / (cols + 1).double()
    total = torch.zeros(relevant.shape[0], dtype=torch.float64).index_add_(0, rows, precision)
    return total / num_relevant.clamp(min=1)


def _top_k_order(distances: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` nearest items of one query, ordered by (distance, index).

    Distances are small integers, so a histogram gives the cut-off distance at which the top ``k`` is
    complete; only the items at or below it (about ``k`` plus the ties at the cut-off, a few percent of
    a large database) are sorted. numpy's stable sort of small unsigned integers is a radix sort, and
    ``flatnonzero`` returns candidates in index order, so ties stay in database order without
    comparisons. The histogram is torch's: it releases the GIL, which ``np.bincount`` does not (with it
    the thread pool ran one row at a time and the whole evaluation took 2.4× as long).
    """
    values = distances if distances.dtype == np.uint8 else distances.astype(np.int32)
    reached = torch.bincount(torch.from_numpy(values)).cumsum(0).numpy()
    cutoff = int(np.searchsorted(reached, k))  # the smallest distance whose cumulative count reaches k
    candidates = np.flatnonzero(distances <= cutoff)
    return candidates[np.argsort(distances[candidates], kind="stable")[:k]]


@dataclass(frozen=True)
class QueryScores:
    """One ranking scored against one relevance judgement, query by query: AP@K, and precision@K and
    recall@K at the curves' cut-off ranks when curves were asked for. Averages over a subset of the
    queries (those a detector let through, say) come from the same ranking through ``keep``."""

    average_precisions: torch.Tensor  # (queries,) float64
    precision: torch.Tensor | None = None  # (queries, cut-offs) float64
    recall: torch.Tensor | None = None
    cutoffs: torch.Tensor | None = None

    def mean_average_precision(self, keep: torch.Tensor | None = None) -> float:
        """mAP over the queries ``keep`` selects (a bool mask or indices; default all); NaN for none."""
        aps = self.average_precisions if keep is None else self.average_precisions[keep]
        return float(aps.mean()) if len(aps) else float("nan")

    def curves(self, keep: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The averaged curves of :func:`retrieval_curves` over the queries ``keep`` selects."""
        if self.precision is None or self.recall is None or self.cutoffs is None:
            raise ValueError("these scores were computed without curves; name the judgement in score_rankings' curves")
        precision = self.precision if keep is None else self.precision[keep]
        recall = self.recall if keep is None else self.recall[keep]
        count = max(len(precision), 1)
        return {"cutoffs": self.cutoffs, "precision": precision.sum(dim=0) / count,
                "recall": recall.sum(dim=0) / count, "queries": torch.tensor(len(precision))}


def _curve_points(relevant: torch.Tensor, cutoffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query precision and recall at ``cutoffs`` from relevance over the whole ranking. A query with
    no relevant item has recall 0 (as its AP is 0)."""
    hits = relevant.cumsum(dim=1, dtype=torch.int32)  # int32 counts are exact and half float64's memory
    total = hits[:, -1:].double()
    hits = hits[:, cutoffs.to(hits.device) - 1].double()
    return (hits / cutoffs.to(hits.device).double()).cpu(), (hits / total.clamp(min=1)).cpu()


def _score_chunk(order, db_masks, judgement_masks, k: int, curves: list[bool], cutoffs) -> list[tuple]:
    """Score one chunk's ranking (``order``: database indices, best first) against each judgement. The
    database's label masks are put in ranking order once; each judgement then costs one AND."""
    ranked = db_masks[order]  # (chunk, ranked items) or, for more than 63 classes, (chunk, ranked items, words)
    out = []
    for masks, curve in zip(judgement_masks, curves):
        relevant = (ranked & masks[:, None]) != 0
        if relevant.ndim == 3:
            relevant = relevant.any(axis=2)
        if isinstance(relevant, np.ndarray):
            relevant = torch.from_numpy(relevant)
        ap = _ap_from_relevance(relevant[:, :k]).cpu()
        out.append((ap, *(_curve_points(relevant, cutoffs) if curve else (None, None))))
    return out


def _one_torch_thread() -> None:
    """Pool workers are the parallelism: their torch calls must not each start a team of OpenMP threads
    (cores² threads on a large machine). With the OpenMP backend the thread count is per calling thread;
    with another backend it would be process-wide, so nothing is changed there."""
    if "parallel backend: OpenMP" in _parallel_info():
        torch.set_num_threads(1)


@functools.lru_cache(maxsize=1)
def _parallel_info() -> str:
    return torch.__config__.parallel_info()


def score_rankings(
    query_codes: Any,
    db_codes: Any,
    db_labels: Any,
    judgements: Mapping[str, Any],
    topk: int | None = None,
    *,
    curves: Collection[str] = (),
    cutoffs: Any = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    device: torch.device | str | None = None,
) -> dict[str, QueryScores]:
    """Rank the database once for every query and score that one ranking against several relevance
    judgements. ``judgements`` maps a name to label rows, one per query, that say what is relevant to
    it: its own labels for mAP, the target's for t-MAP. Ranking is most of the cost, so the evaluator
    asks for every judgement of one set of codes in one call.

    Returns a :class:`QueryScores` per judgement: AP@``topk`` of every query and, for the names in
    ``curves``, precision@K and recall@K at ``cutoffs`` (default: :func:`curve_cutoffs` of the database
    size), which need the whole ranking. CPU chunks run on a thread pool (numpy releases the GIL), so
    every core works; chunks are sized by ``memory_budget`` as the module doc says.
    """
    unknown = set(curves) - set(judgements)
    if unknown:
        raise ValueError(f"curves asked for {sorted(unknown)}, which are not among the judgements {sorted(judgements)}")
    dev = torch.device(device) if device is not None else None
    q = _check_codes(_tensor(query_codes, dev), "query_codes")
    db = _check_codes(_tensor(db_codes, dev), "db_codes")
    if q.shape[1] != db.shape[1]:
        raise ValueError(f"query codes have {q.shape[1]} bits but database codes have {db.shape[1]}")
    n = db.shape[0]
    k = n if topk is None or topk < 0 or topk > n else int(topk)
    if k == 0:
        raise ValueError("topk must be positive, or -1 / None for the whole database")
    names = list(judgements)
    db_l, *judged = _label_sets(_tensor(db_labels, q.device), [_tensor(judgements[name], q.device) for name in names],
                                q.shape[0], n, names)
    on_cpu = q.device.type == "cpu"
    db_masks, *masks = (_narrow(_label_words(labels), db_l.shape[1], on_cpu) for labels in (db_l, *judged))
    with_curve = [name in curves for name in names]
    cuts = None
    if any(with_curve):
        cuts = curve_cutoffs(n) if cutoffs is None else torch.as_tensor(cutoffs, dtype=torch.int64).clamp(1, n)
    ranked = n if any(with_curve) else k  # curves need the whole ranking; AP@K reads its first K items
    chunk = max(1, memory_budget // max(n, 1))
    starts = range(0, q.shape[0], chunk)
    if not on_cpu:
        def work(s: int) -> list[tuple]:
            order = torch.sort(_hamming(q[s : s + chunk], db), dim=1, stable=True).indices[:, :ranked]
            return _score_chunk(order, db_masks, [m[s : s + chunk] for m in masks], k, with_curve, cuts)

        parts = [work(s) for s in starts]
    else:
        from concurrent.futures import ThreadPoolExecutor

        db_words, q_words = _pack_words(db), _pack_words(q)

        def work(s: int) -> list[tuple]:
            distances = _hamming_words(q_words[s : s + chunk], db_words)
            if ranked == n:  # the whole database in one stable sort of small integers: numpy's radix sort
                order = np.argsort(distances, axis=1, kind="stable")
            else:
                order = np.stack([_top_k_order(row, ranked) for row in distances])
            return _score_chunk(order, db_masks, [m[s : s + chunk] for m in masks], k, with_curve, cuts)

        with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads()), initializer=_one_torch_thread) as pool:
            parts = list(pool.map(work, starts))
    return {name: _joined([part[j] for part in parts], cuts if with_curve[j] else None) for j, name in enumerate(names)}


def _joined(pieces: list[tuple], cutoffs: torch.Tensor | None) -> QueryScores:
    """One judgement's per-chunk scores as one QueryScores (empty tensors when there are no queries)."""
    def cat(i: int, *columns: int) -> torch.Tensor:
        return torch.cat([p[i] for p in pieces]) if pieces else torch.zeros(0, *columns, dtype=torch.float64)

    if cutoffs is None:
        return QueryScores(cat(0))
    return QueryScores(cat(0), cat(1, len(cutoffs)), cat(2, len(cutoffs)), cutoffs)


def _label_sets(db_labels: torch.Tensor, judged: list[torch.Tensor], nq: int, ndb: int, names: list[str]) -> list[torch.Tensor]:
    """The database's labels and every judgement's as multi-hot rows over the same classes (class
    indices are one-hot encoded), each checked against its number of rows."""
    num_classes = None
    if db_labels.dim() == 1 or any(t.dim() == 1 for t in judged):
        sizes = [int(t.max().item()) + 1 if t.dim() == 1 else t.shape[1] for t in (db_labels, *judged) if len(t)]
        num_classes = max(sizes) if sizes else 1
    whats = [f"judgement {name!r}" if name else "query_labels" for name in names]
    out = [_labels(db_labels, ndb, "db_labels", num_classes)]
    out += [_labels(t, nq, what, num_classes) for what, t in zip(whats, judged)]
    for what, t in zip(whats, out[1:]):
        if t.shape[1] != out[0].shape[1]:
            raise ValueError(f"{what} has {t.shape[1]} classes but db_labels has {out[0].shape[1]}")
    return out


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
    return score_rankings(query_codes, db_codes, db_labels, {"": query_labels}, topk,
                          memory_budget=memory_budget, device=device)[""].average_precisions


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
    memory_budget: int = DEFAULT_MEMORY_BUDGET, device: torch.device | str | None = None,
) -> float:
    """Mean fraction of relevant items among the first ``k`` retrieved (ties by database index)."""
    if not len(query_codes):
        return 0.0
    scores = score_rankings(query_codes, db_codes, db_labels, {"": query_labels}, curves=[""],
                            cutoffs=[min(k, len(db_codes))], memory_budget=memory_budget, device=device)[""]
    return float(scores.curves()["precision"][0])


def curve_cutoffs(n: int, points: int = 40) -> torch.Tensor:
    """Ranks at which the curves are sampled: about ``points`` ranks spread evenly on a log scale from 1 to
    ``n`` (the whole database, where recall reaches 1)."""
    grid = np.unique(np.round(np.geomspace(1, max(n, 1), points)).astype(np.int64))
    return torch.from_numpy(grid)


def retrieval_curves(
    query_codes: Any, db_codes: Any, query_labels: Any, db_labels: Any, cutoffs: Any = None, *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET, device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Precision@K and recall@K, averaged over the queries, at each rank K of ``cutoffs`` (default:
    :func:`curve_cutoffs` of the database size), from the same ranking as AP (ties by database index).
    Plotting precision against K gives the precision@K curve, precision against recall the
    precision-recall curve. Recall is the share of the query's relevant database items found in its top
    K; a query with no relevant item has recall 0 and still counts (as AP does)."""
    return score_rankings(query_codes, db_codes, db_labels, {"": query_labels}, curves=[""], cutoffs=cutoffs,
                          memory_budget=memory_budget, device=device)[""].curves()


def hamming_distances(query_codes: Any, db_codes: Any) -> torch.Tensor:
    """(queries × items) Hamming distances between ±1 codes, as int64."""
    q = _check_codes(_tensor(query_codes), "query_codes")
    db = _check_codes(_tensor(db_codes), "db_codes")
    return torch.from_numpy(_hamming_words(_pack_words(q), _pack_words(db)).astype(np.int64))


def nearest(query_codes: Any, db_codes: Any, k: int) -> torch.Tensor:
    """Database indices of each query's top ``k``, in the evaluator's ranking order (Hamming distance,
    ties by database index): the items every metric above scores."""
    distances = hamming_distances(query_codes, db_codes).numpy()
    k = min(k, distances.shape[1])
    if not len(distances):
        return torch.zeros(0, k, dtype=torch.int64)
    return torch.from_numpy(np.stack([_top_k_order(row, k) for row in distances]))


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """±1 codes -> packed uint8 bits (8× smaller on disk); see :func:`unpack_codes`."""
    bits = (codes > 0).to(torch.uint8).cpu().numpy()
    return torch.from_numpy(np.packbits(bits, axis=1))


def unpack_codes(packed: torch.Tensor, bits: int) -> torch.Tensor:
    unpacked = np.unpackbits(packed.cpu().numpy(), axis=1, count=bits)
    return torch.from_numpy(unpacked).float().mul_(2).sub_(1)
