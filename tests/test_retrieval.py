"""The evaluator against hand-computed cases (docs/metrics.md)."""

import numpy as np
import pytest
import torch

from hashbench.evaluation import auroc, threshold_at_fpr, tpr_at_fpr
from hashbench.retrieval import (
    average_precisions,
    curve_cutoffs,
    hamming_distances,
    mean_average_precision,
    nearest,
    pack_codes,
    precision_at_k,
    retrieval_curves,
    targeted_map,
    unpack_codes,
)

# Query [1, 1] against four items: Hamming distances 0, 2, 0, 1 -> ranking d0, d2, d3, d1 (ties by index).
DB = np.array([[1, 1], [-1, -1], [1, 1], [1, -1]])
Q = np.array([[1, 1]])


def onehot(classes, n=3):
    return np.eye(n)[classes]


def test_ap_whole_database_hand_computed():
    # relevant: d1 and d2 -> relevance along the ranking [0, 1, 0, 1] -> AP = (1/2 + 2/4) / 2
    db_labels = onehot([1, 0, 0, 1])
    q_labels = onehot([0])
    assert mean_average_precision(Q, DB, q_labels, db_labels) == pytest.approx(0.5)
    assert mean_average_precision(Q, DB, q_labels, db_labels, topk=-1) == pytest.approx(0.5)


def test_topk_truncates_the_ranking():
    db_labels = onehot([1, 0, 0, 1])
    q_labels = onehot([0])
    assert mean_average_precision(Q, DB, q_labels, db_labels, topk=2) == pytest.approx(0.5)  # [0, 1]
    assert mean_average_precision(Q, DB, q_labels, db_labels, topk=3) == pytest.approx(0.5)  # [0, 1, 0]
    assert mean_average_precision(Q, DB, q_labels, db_labels, topk=1) == 0.0  # nothing relevant in top 1
    assert mean_average_precision(Q, DB, q_labels, db_labels, topk=100) == pytest.approx(0.5)


def test_ties_are_broken_by_database_index():
    # d0 and d2 have identical codes; d0 always ranks first.
    only_d0 = onehot([0, 1, 1, 1])
    only_d2 = onehot([1, 1, 0, 1])
    q_labels = onehot([0])
    assert mean_average_precision(Q, DB, q_labels, only_d0) == pytest.approx(1.0)
    assert mean_average_precision(Q, DB, q_labels, only_d2) == pytest.approx(0.5)


def test_query_without_relevant_item_scores_zero_and_counts():
    db_labels = onehot([0, 0, 0, 0])
    q_codes = np.array([[1, 1], [1, 1]])
    q_labels = onehot([0, 2])  # the second query has no relevant item anywhere
    aps = average_precisions(q_codes, DB, q_labels, db_labels)
    assert aps.tolist() == [pytest.approx(1.0), 0.0]
    assert mean_average_precision(q_codes, DB, q_labels, db_labels) == pytest.approx(0.5)


def test_multi_label_relevance_is_any_shared_label():
    db_labels = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 1]])
    q_labels = np.array([[1, 1, 0]])  # shares a label with d0 and d3 only
    # ranking d0, d2, d3, d1 -> relevance [1, 0, 1, 0] -> AP = (1/1 + 2/3) / 2
    assert mean_average_precision(Q, DB, q_labels, db_labels) == pytest.approx((1 + 2 / 3) / 2)


def test_class_index_labels_and_tensors_are_accepted():
    db_labels = torch.tensor([1, 0, 0, 1])
    q_labels = torch.tensor([0])
    assert mean_average_precision(torch.tensor(Q), torch.tensor(DB), q_labels, db_labels) == pytest.approx(0.5)


def test_targeted_map_scores_against_the_target_label():
    db_labels = onehot([1, 0, 0, 1])
    # target class 1 -> relevant d0, d3 -> relevance [1, 0, 1, 0] -> AP = (1 + 2/3) / 2
    assert targeted_map(Q, DB, np.array([0, 1, 0]), db_labels) == pytest.approx((1 + 2 / 3) / 2)


def test_chunking_does_not_change_the_result():
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 2, (37, 16), generator=g).float() * 2 - 1
    db = torch.randint(0, 2, (101, 16), generator=g).float() * 2 - 1
    ql = torch.nn.functional.one_hot(torch.randint(0, 5, (37,), generator=g), 5)
    dl = torch.nn.functional.one_hot(torch.randint(0, 5, (101,), generator=g), 5)
    full = average_precisions(q, db, ql, dl, topk=50)
    chunked = average_precisions(q, db, ql, dl, topk=50, memory_budget=101 * 3)
    assert torch.equal(full, chunked)
    # and against a plain per-query loop with a stable sort
    for i in range(37):
        dist = ((16 - db @ q[i]) / 2).numpy()
        order = np.argsort(dist, kind="stable")[:50]
        rel = (dl[order] @ ql[i] > 0).numpy().astype(float)
        expected = (np.cumsum(rel) / np.arange(1, 51) * rel).sum() / rel.sum() if rel.sum() else 0.0
        assert full[i].item() == pytest.approx(expected)


@pytest.mark.parametrize("bits", [3, 130])  # heavy ties at the top-K cut-off; codes spanning three words
def test_partial_ranking_matches_a_full_stable_sort(bits):
    g = torch.Generator().manual_seed(bits)
    q = torch.randint(0, 2, (9, bits), generator=g).float() * 2 - 1
    db = torch.randint(0, 2, (700, bits), generator=g).float() * 2 - 1
    ql = torch.nn.functional.one_hot(torch.randint(0, 4, (9,), generator=g), 4)
    dl = torch.nn.functional.one_hot(torch.randint(0, 4, (700,), generator=g), 4)
    for topk in (1, 45, 699, 700):
        aps = average_precisions(q, db, ql, dl, topk=topk)
        for i in range(9):
            dist = ((bits - db @ q[i]) / 2).numpy()
            rel = (dl[np.argsort(dist, kind="stable")[:topk]] @ ql[i] > 0).numpy().astype(float)
            expected = (np.cumsum(rel) / np.arange(1, topk + 1) * rel).sum() / rel.sum() if rel.sum() else 0.0
            assert aps[i].item() == pytest.approx(expected, abs=1e-12)


def test_top_k_order_equals_a_stable_argsort():
    from hashbench.retrieval import _top_k_order

    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 17, 500, dtype=np.uint8), np.full(300, 4, dtype=np.uint8),
            rng.integers(0, 300, 400).astype(np.uint16)]
    for row in rows:
        for k in (1, 7, len(row) - 1, len(row)):
            assert np.array_equal(_top_k_order(row, k), np.argsort(row, kind="stable")[:k])


def test_codes_of_256_bits_and_more_do_not_wrap():
    q = np.ones((1, 300))
    db = np.stack([np.r_[-np.ones(256), np.ones(44)], np.r_[-np.ones(10), np.ones(290)]])  # distances 256, 10
    labels = np.eye(2)
    # a uint8 count would wrap 256 to 0 and put d0 first
    assert average_precisions(q, db, labels[[1]], labels, topk=1).item() == 1.0


def test_blocked_distances_equal_a_direct_count():
    from hashbench.retrieval import _hamming_words, _pack_words

    g = torch.Generator().manual_seed(1)
    q = torch.randint(0, 2, (5, 130), generator=g).float() * 2 - 1
    db = torch.randint(0, 2, (301, 130), generator=g).float() * 2 - 1
    direct = ((130 - q @ db.T) / 2).numpy()
    assert np.array_equal(_hamming_words(_pack_words(q), _pack_words(db), block=64), direct)


def test_precision_at_k():
    db_labels = onehot([1, 0, 0, 1])
    assert precision_at_k(Q, DB, onehot([0]), db_labels, k=2) == pytest.approx(0.5)
    assert precision_at_k(Q, DB, onehot([0]), db_labels, k=1) == 0.0


def test_nearest_follows_the_ranking_with_ties_by_index():
    # distances 0, 2, 0, 1 -> d0, d2 (tied with d0, later index), d3, d1
    assert hamming_distances(Q, DB).tolist() == [[0, 2, 0, 1]]
    assert nearest(Q, DB, 3).tolist() == [[0, 2, 3]]
    assert nearest(np.array([[-1, -1]]), DB, 10).tolist() == [[1, 3, 0, 2]]  # k beyond the database: all of it


def test_retrieval_curves_hand_computed():
    # query 0 (class 0) ranks d0, d2, d3, d1 with relevance [0, 1, 0, 1] (d1, d2 are class 0);
    # query 1 [-1, -1] (class 1) ranks d1, d3, d0, d2 with relevance [0, 1, 1, 0] (d0, d3 are class 1)
    db_labels = onehot([1, 0, 0, 1])
    curves = retrieval_curves(np.array([[1, 1], [-1, -1]]), DB, onehot([0, 1]), db_labels, [1, 2, 3, 4])
    # precision@K: q0 0, 1/2, 1/3, 2/4; q1 0, 1/2, 2/3, 2/4
    assert curves["precision"].tolist() == pytest.approx([0, 1 / 2, 1 / 2, 1 / 2])
    # recall@K: q0 0, 1/2, 1/2, 1; q1 0, 1/2, 1, 1
    assert curves["recall"].tolist() == pytest.approx([0, 1 / 2, 3 / 4, 1])
    assert int(curves["queries"]) == 2
    # the same precision as the evaluator's precision@k at every cut-off
    for k, p in zip([1, 2, 3, 4], curves["precision"].tolist()):
        assert p == pytest.approx(precision_at_k(np.array([[1, 1], [-1, -1]]), DB, onehot([0, 1]), db_labels, k))


def test_retrieval_curves_recall_without_the_whole_database_and_default_cutoffs():
    # cut-offs short of the database still divide by every relevant item, not by those found
    curves = retrieval_curves(Q, DB, onehot([0]), onehot([1, 0, 0, 1]), [2])
    assert curves["recall"].tolist() == pytest.approx([1 / 2])
    assert curve_cutoffs(4).tolist() == [1, 2, 3, 4]
    grid = curve_cutoffs(3000)
    assert grid[0] == 1 and grid[-1] == 3000 and len(grid) <= 40 and bool((grid[1:] > grid[:-1]).all())


def test_codes_must_be_plus_minus_one():
    with pytest.raises(ValueError, match="±1"):
        mean_average_precision(np.array([[0, 1]]), DB, onehot([0]), onehot([0, 0, 0, 0]))


def test_packed_codes_round_trip():
    codes = torch.tensor([[1.0, -1, -1, 1, 1, 1, -1, 1, -1, 1]])
    assert torch.equal(unpack_codes(pack_codes(codes), 10), codes)


def test_auroc_counts_ties_as_one_half():
    assert auroc(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0])) == pytest.approx(0.875)
    assert auroc(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0])) == 1.0


def test_threshold_at_fpr_flags_at_most_that_fraction_of_negatives():
    neg = torch.arange(100).float()
    t = threshold_at_fpr(neg, 0.05)
    assert (neg > t).float().mean() <= 0.05
    assert tpr_at_fpr(neg, torch.tensor([200.0, 0.0]), 0.05) == 0.5


def test_ap_from_relevance_matches_its_definition_row_by_row():
    """The CPU form visits only the relevant items; it must give the definition's value, including a row
    with nothing relevant (0) and a row where everything is."""
    from hashbench.retrieval import _ap_from_relevance

    generator = torch.Generator().manual_seed(3)
    relevant = torch.rand(40, 300, generator=generator) < torch.rand(40, 1, generator=generator)
    relevant[0] = False
    relevant[1] = True
    expected = []
    for row in relevant.tolist():
        hits, precisions = 0, []
        for rank, is_relevant in enumerate(row, start=1):
            if is_relevant:
                hits += 1
                precisions.append(hits / rank)
        expected.append(sum(precisions) / len(precisions) if precisions else 0.0)
    assert torch.allclose(_ap_from_relevance(relevant), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("classes", [5, 20, 40, 70])  # uint8, uint32, int64 masks; 70 classes span two words
def test_one_ranking_scores_every_judgement_as_separate_calls_would(classes):
    from hashbench.retrieval import score_rankings

    g = torch.Generator().manual_seed(classes)
    q = torch.randint(0, 2, (23, 12), generator=g).float() * 2 - 1
    db = torch.randint(0, 2, (300, 12), generator=g).float() * 2 - 1
    dl = (torch.rand(300, classes, generator=g) < 2 / classes).float()  # multi-label, some items unlabelled
    own = torch.randint(0, classes, (23,), generator=g)
    target = torch.nn.functional.one_hot(torch.full((23,), classes - 1), classes)
    for topk in (40, -1):
        scores = score_rankings(q, db, dl, {"own": own, "target": target}, topk, curves=["target"],
                                memory_budget=300 * 4)
        assert torch.equal(scores["own"].average_precisions, average_precisions(q, db, own, dl, topk))
        assert torch.equal(scores["target"].average_precisions, average_precisions(q, db, target, dl, topk))
        assert scores["own"].precision is None  # no curve asked for
        curves = retrieval_curves(q, db, target, dl)
        for name in ("precision", "recall"):
            assert torch.allclose(scores["target"].curves()[name], curves[name], rtol=0, atol=1e-12)
        # a subset of the queries: the same as scoring those queries alone
        keep = torch.arange(23) % 3 == 0
        assert scores["own"].mean_average_precision(keep) == pytest.approx(
            mean_average_precision(q[keep], db, own[keep], dl, topk), abs=1e-12)
        subset = retrieval_curves(q[keep], db, target[keep], dl)
        assert torch.allclose(scores["target"].curves(keep)["precision"], subset["precision"], rtol=0, atol=1e-12)
        assert int(scores["target"].curves(keep)["queries"]) == int(keep.sum())


def test_score_rankings_refuses_a_curve_of_an_unknown_judgement_and_mismatched_labels():
    from hashbench.retrieval import score_rankings

    with pytest.raises(ValueError, match="not among the judgements"):
        score_rankings(Q, DB, onehot([1, 0, 0, 1]), {"own": onehot([0])}, curves=["target"])
    with pytest.raises(ValueError, match="judgement 'own' has 2 rows but there are 1 codes"):
        score_rankings(Q, DB, onehot([1, 0, 0, 1]), {"own": onehot([0, 1])})
