"""Hashing objectives: each loss against hand-computed values on tiny tensors, and each method learns."""

from __future__ import annotations

import math

import pytest
import torch

from hashbench import MethodSetup
from hashbench.evaluation import encode_set
from hashbench.retrieval import mean_average_precision
from hashbench.loading import instantiate
from hashbench.seeding import make_generator
from hashbench.training import TrainConfig, build_model, train_hash_model

SOFTPLUS_MINUS_1 = math.log1p(math.exp(-1))  # -log sigmoid(1) = log(1 + e^-1)


def method(name: str, labels: torch.Tensor, bits: int, **params):
    m = instantiate("method", {"name": name, "params": params})
    m.setup(MethodSetup(labels.float(), bits, torch.device("cpu"), make_generator(0)))
    return m


def one_hot(*classes: int, num: int = 2) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(classes), num).float()


def test_dpsh_loss_by_hand():
    labels = one_hot(0, 1)
    z = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])  # theta = 0.5 z z^T = [[1, -1], [-1, 1]]; codes exact
    # similar pairs: theta = 1, -log sigmoid(1); dissimilar: theta = -1, -log(1 - sigmoid(-1)): both log(1 + e^-1)
    balanced = method("dpsh", labels, 2).loss(z, labels, torch.arange(2))
    assert balanced.item() == pytest.approx(2 * SOFTPLUS_MINUS_1, abs=1e-6)
    plain = method("dpsh", labels, 2, balanced=False).loss(z, labels, torch.arange(2))
    assert plain.item() == pytest.approx(SOFTPLUS_MINUS_1, abs=1e-6)
    # quantisation: z = 0.5 -> (0.5 - 1)^2 = 0.25 per element; likelihood at theta = 1/8 per pair
    half = method("dpsh", labels[:1], 1, alpha=2.0, balanced=False).loss(torch.tensor([[0.5]]), labels[:1], torch.arange(1))
    expected = math.log1p(math.exp(0.125)) - 0.125 + 2.0 * 0.25
    assert half.item() == pytest.approx(expected, abs=1e-6)


def test_dpsh_compares_with_the_memory_bank():
    labels = one_hot(0, 0)
    m = method("dpsh", labels, 1, alpha=0.0, balanced=False)
    m.loss(torch.tensor([[2.0]]), labels[:1], torch.tensor([0]))  # bank row 0 <- 2
    loss = m.loss(torch.tensor([[2.0]]), labels[1:], torch.tensor([1]))
    # pairs of sample 1 with rows 0 and 1 of the bank, both similar, theta = 0.5 * 2 * 2 = 2
    assert loss.item() == pytest.approx(math.log1p(math.exp(-2)), abs=1e-6)


def test_hashnet_loss_by_hand():
    labels = one_hot(0, 0, 1)
    a = math.atanh(0.5)
    z = torch.tensor([[a], [a], [-a]])  # h = tanh(z) = ±0.5; alpha 4 -> theta_ij = ±1
    m = method("hashnet", labels, 1, alpha=4.0)
    assert m.scale() == 1.0
    # similar (0,1): theta 1; dissimilar (0,2), (1,2): theta -1; every pair costs log(1 + e^-1)
    assert m.loss(z, labels, torch.arange(3)).item() == pytest.approx(2 * SOFTPLUS_MINUS_1, abs=1e-6)
    assert m.scale() == pytest.approx(math.sqrt(1.005))  # continuation: beta grows with the step


def test_hashnet_default_alpha_is_ten_over_bits():
    m = method("hashnet", one_hot(0, 1), 20)
    assert m.alpha == pytest.approx(0.5)


def test_dsh_loss_by_hand():
    different = one_hot(0, 1)
    m = method("dsh", different, 1, margin=5.0, alpha=0.5)
    # dissimilar pair at squared distance 4: 0.5 * (5 - 4); outputs at ±1: no regulariser
    assert m.loss(torch.tensor([[1.0], [-1.0]]), different, torch.arange(2)).item() == pytest.approx(0.5)
    # outputs 2 and 0: squared distance 4 again; | |u| - 1 | = 1 for both -> 2 * alpha * 1
    assert m.loss(torch.tensor([[2.0], [0.0]]), different, torch.arange(2)).item() == pytest.approx(1.5)
    same = one_hot(0, 0)
    # similar pair at squared distance 1: 0.5 * 1; regulariser mean(0, 1) = 0.5 -> 2 * 0.5 * 0.5
    assert method("dsh", same, 1, margin=5.0, alpha=0.5).loss(torch.tensor([[1.0], [0.0]]), same, torch.arange(2)).item() \
        == pytest.approx(1.0)


def test_dsh_default_margin_is_twice_the_bits():
    assert method("dsh", one_hot(0, 1), 12).margin == 24


def test_greedyhash_loss_and_straight_through_gradient():
    labels = one_hot(0)
    m = method("greedyhash", labels, 2, alpha=0.1)
    m.classifier.data = torch.eye(2)
    z = torch.tensor([[0.5, -2.0]], requires_grad=True)  # sign -> [1, -1] -> logits [1, -1]
    loss = m.loss(z, labels, torch.arange(1))
    ce = math.log1p(math.exp(-2))
    penalty = (0.5**3 + 1.0**3) / 2  # | |z| - 1 |^3 averaged
    assert loss.item() == pytest.approx(ce + 0.1 * penalty, abs=1e-6)
    loss.backward()
    p0 = 1 / (1 + math.exp(-2))  # softmax probability of the true class
    d_logits = torch.tensor([p0 - 1, 1 - p0])
    # d/dz of |(|z| - 1)|^3 is -3 (1 - |z|)^2 sign(z) inside [-1, 1] and 3 (|z| - 1)^2 sign(z) outside; mean over 2
    d_penalty = 0.1 * 3 * torch.tensor([-(0.5**2), -1.0]) / 2
    assert torch.allclose(z.grad[0], d_logits + d_penalty, atol=1e-6)  # sign passed the gradient through
    assert m.classifier.grad is not None and m.parameters() == [m.classifier]


def test_greedyhash_multi_label_uses_sigmoid_cross_entropy():
    labels = torch.tensor([[1.0, 1.0]])
    m = method("greedyhash", labels, 2, alpha=0.0)
    m.classifier.data = torch.eye(2)
    loss = m.loss(torch.tensor([[1.0, -1.0]]), labels, torch.arange(1))
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(1))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_training_loop_optimises_the_methods_parameters(tiny_splits):
    """HashMethod.parameters() reaches the optimiser: GreedyHash's classifier changes while training."""
    m = instantiate("method", {"name": "greedyhash", "params": {}})
    model = build_model(instantiate("backbone", {"name": "convnet", "params": {"width": 4}}), 8, 32)
    subset = tiny_splits.train.subset(torch.arange(64))
    seen = {}
    original_setup = m.setup

    def setup(s):
        original_setup(s)
        seen["before"] = m.classifier.detach().clone()

    m.setup = setup
    train_hash_model(model, m, subset, TrainConfig(epochs=1, batch_size=32), torch.device("cpu"), make_generator(0))
    assert not torch.equal(seen["before"], m.classifier.detach())


@pytest.mark.parametrize("name", ["dpsh", "csq", "hashnet", "dsh", "greedyhash"])
def test_method_learns_on_synthetic_data(name, tiny_splits):
    """A short run lands well above chance (0.1 on 10 balanced classes)."""
    torch.manual_seed(0)
    model = build_model(instantiate("backbone", {"name": "convnet", "params": {"width": 16}}), 16, 32)
    m = instantiate("method", {"name": name, "params": {}})
    train_hash_model(model, m, tiny_splits.train, TrainConfig(epochs=5), torch.device("cpu"), make_generator(0))
    cpu = torch.device("cpu")
    score = mean_average_precision(encode_set(model, tiny_splits.query, cpu), encode_set(model, tiny_splits.database, cpu),
                                   tiny_splits.query.labels, tiny_splits.database.labels)
    assert score > 0.15, f"{name}: mAP {score:.3f} after 5 epochs"
