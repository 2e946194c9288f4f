"""BadHash: LabCLN, the generator, the clean-label contract, the confusing label, determinism, and the
end-to-end lift of t-MAP on the synthetic data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from conftest import benchmark_text
from hashbench import AttackContext, PluginError, Target, sign_codes, to_float
from hashbench.models import freeze
from hashbench.loading import instantiate
from hashbench.seeding import make_generator
from hashbench.training import build_model
from hashbench_plugins.attacks._badhash_nets import Discriminator, Generator, LabCLN, ssim_loss
from hashbench_plugins.attacks.badhash import BadHash, BadHashParams, agreement, choose_confusing_label, train_labcln
from hashbench_plugins.methods.csq import hadamard

CPU = torch.device("cpu")
# Small enough for a few seconds of CPU per prepare(); the attack's quality is tested end to end below.
FAST = BadHashParams(epochs=1, epochs_decay=0, batch_size=64, width=4, disc_width=4, res_blocks=1, labcln_steps=10)


def _target(index: int, num_classes: int = 10) -> Target:
    labels = torch.zeros(num_classes)
    labels[index] = 1
    return Target(labels, f"class_{index}")


@pytest.fixture(scope="module")
def surrogate(tiny_splits):
    """An untrained but frozen surrogate: the unit tests check mechanics, not attack strength."""
    torch.manual_seed(0)
    return freeze(build_model(instantiate("backbone", {"name": "convnet", "params": {"width": 4}}), 16, tiny_splits.image_size))


def _context(splits, surrogate, tmp_path: Path, rate: float = 0.05, seed: int = 0, target: int = 0, logs=None) -> AttackContext:
    def log(**metrics):
        for name, value in metrics.items():
            (logs if logs is not None else {}).setdefault(name, []).append(value)

    return AttackContext(splits=splits, target=_target(target), poison_rate=rate, device=CPU, seed=seed,
                         generator=make_generator(seed, "attack"), artifact_dir=tmp_path,
                         surrogate_loader=lambda: surrogate, log=log)


@pytest.fixture(scope="module")
def prepared(tiny_splits, surrogate, tmp_path_factory):
    """One prepared attack (FAST parameters) and what it logged."""
    logs: dict[str, list[float]] = {}
    attack = BadHash(FAST)
    attack.prepare(_context(tiny_splits, surrogate, tmp_path_factory.mktemp("prepared"), logs=logs))
    return attack, logs


# ----------------------------------------------------------------------------------- LabCLN


def test_labcln_loss_decreases_and_codes_of_different_labels_differ():
    params = dataclasses.replace(BadHashParams(), labcln_steps=30)
    net, losses = train_labcln(torch.eye(10), 16, params, CPU, torch.Generator().manual_seed(0))
    assert len(losses) == 10
    assert losses[-1] < losses[0] - 0.1
    with torch.no_grad():
        codes = torch.sign(net(torch.eye(10))[1])
    assert len(torch.unique(codes, dim=0)) == 10


# ----------------------------------------------------------------------------------- networks


@pytest.mark.parametrize("size", [8, 32, 40, 48, 64])
@pytest.mark.parametrize("identity_skip", [True, False])
def test_generator_keeps_shape_and_range_at_any_size(size, identity_skip):
    torch.manual_seed(0)
    generator = Generator(size, 4, 2, identity_skip)
    images = torch.rand(3, 3, size, size)
    out = generator(images, torch.randn(1, 512))
    assert out.shape == images.shape
    assert out.min() >= 0 and out.max() <= 1
    if identity_skip:  # the generator starts within a few grey levels of the identity
        assert (out - images).abs().max() < 4 / 255
    assert Discriminator(size, 10, 4)(out).shape == (3, 11)


def test_bounded_generator_starts_at_the_identity_and_never_leaves_its_box():
    torch.manual_seed(0)
    generator = Generator(32, 4, 1, True, epsilon=10 / 255)
    images = torch.rand(4, 3, 32, 32)
    assert (generator(images, torch.randn(1, 512)) - images).abs().max() < 1 / 255
    with torch.no_grad():
        generator.out.weight.mul_(1000.0)  # saturate the tanh
    out = generator(images, torch.randn(1, 512))
    assert (out - images).abs().max() <= 10 / 255 + 1e-6
    assert (out - images).abs().max() > 5 / 255
    with pytest.raises(ValueError, match="epsilon"):
        BadHashParams(epsilon=-1).validate()


def test_the_psnr_budget_caps_each_residual_and_leaves_smaller_ones_alone():
    torch.manual_seed(0)
    max_rms = 10 ** (-30.5 / 20)  # the default min_psnr
    generator = Generator(32, 4, 1, True, epsilon=32 / 255, max_rms=max_rms)
    images = torch.full((4, 3, 32, 32), 0.5)  # mid-grey: the clamp to [0, 1] never acts
    feature = torch.randn(1, 512)
    small = generator(images, feature) - images  # at the identity: far inside the budget, untouched
    assert 0 < small.pow(2).mean(dim=(1, 2, 3)).sqrt().max() < max_rms / 10
    unbounded = Generator(32, 4, 1, True, epsilon=32 / 255)
    unbounded.load_state_dict(generator.state_dict())
    assert torch.allclose(unbounded(images, feature) - images, small)
    with torch.no_grad():
        generator.out.weight.mul_(1000.0)  # saturate: the L∞ box alone would give an RMS near 32 grey levels
    residual = generator(images, feature) - images
    rms = residual.pow(2).mean(dim=(1, 2, 3)).sqrt()
    assert torch.allclose(rms, torch.full_like(rms, max_rms), rtol=1e-4)  # each image exactly on the budget
    psnr = -10 * torch.log10(residual.pow(2).mean(dim=(1, 2, 3)))
    assert psnr.min() >= 30.5 - 1e-3
    with pytest.raises(ValueError, match="min_psnr"):
        BadHashParams(epsilon=0, min_psnr=30).validate()


def test_generator_runs_on_images_of_another_size_than_it_was_built_for():
    out = Generator(32, 4, 1, True)(torch.rand(2, 3, 24, 24), torch.randn(1, 512))
    assert out.shape == (2, 3, 24, 24)


def test_ssim_loss_is_zero_for_identical_images_and_grows_with_noise():
    x = torch.rand(2, 3, 32, 32)
    assert float(ssim_loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(ssim_loss(x, (x + 0.1 * torch.randn_like(x)).clamp(0, 1))) > 0.05


# ----------------------------------------------------------------------------------- the attack's contract


def test_poisons_are_target_class_images_with_unchanged_labels(prepared, tiny_splits, surrogate, tmp_path):
    attack, _ = prepared
    ctx = _context(tiny_splits, surrogate, tmp_path, rate=0.05)
    poisoning = attack.poison(ctx)
    train = tiny_splits.train
    assert len(poisoning.indices) == round(0.05 * len(train))
    assert len(torch.unique(poisoning.indices)) == len(poisoning.indices)
    assert bool((train.labels[poisoning.indices, 0] == 1).all())
    assert torch.equal(poisoning.labels, train.labels[poisoning.indices])
    assert poisoning.images.dtype == torch.uint8 and poisoning.images.shape == (50, 3, 32, 32)
    assert (tmp_path / "badhash_poisons.png").is_file()


def test_nearest_c_selection_poisons_the_images_the_surrogate_hashes_nearest_c(prepared, tiny_splits, surrogate, tmp_path):
    attack, _ = prepared
    nearest = BadHash(dataclasses.replace(FAST, poison_selection="nearest_c"))
    nearest.load_state_dict(attack.state_dict())
    poisoning = nearest.poison(_context(tiny_splits, surrogate, tmp_path, rate=0.05))
    train = tiny_splits.train
    candidates = torch.nonzero(train.labels[:, 0] == 1).flatten()
    assert len(poisoning.indices) == round(0.05 * len(train)) < len(candidates)
    assert torch.equal(poisoning.labels, train.labels[poisoning.indices])
    # each poison is G's image of the clean image at its own index
    assert torch.equal(poisoning.images, attack._generate(train.images(poisoning.indices), CPU))
    # the surrogate's agreement with c's code, computed here from its outputs, splits chosen from left out
    with torch.no_grad():
        z = surrogate(to_float(attack._generate(train.images(candidates), CPU))).float()
    agree = (torch.tanh(z / z.abs().mean()) * attack.condition.code).mean(1)
    chosen = torch.isin(candidates, poisoning.indices)
    assert float(agree[chosen].min()) >= float(agree[~chosen].max())
    random_draw = attack.poison(_context(tiny_splits, surrogate, tmp_path, rate=0.05))
    assert not torch.equal(random_draw.indices, poisoning.indices)


def test_hash_augment_trains_another_generator_and_stays_deterministic(prepared, tiny_splits, surrogate, tmp_path):
    """The hash term sees G(x) cropped and flipped: the generator it trains differs from the plain term's
    (same seed), and two runs agree exactly."""
    attack, _ = prepared
    runs = []
    for name in ("a", "b"):
        augmented = BadHash(dataclasses.replace(FAST, hash_augment="crop_flip"))
        augmented.prepare(_context(tiny_splits, surrogate, tmp_path / name))
        runs.append(augmented.state_dict())
    plain = attack.state_dict()
    weights = [k for k in plain if k.startswith("generator.") and plain[k].is_floating_point()]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in weights)
    assert any(not torch.equal(runs[0][k], plain[k]) for k in weights)


def test_poison_rate_beyond_the_target_class_is_an_error(prepared, tiny_splits, surrogate, tmp_path):
    attack, _ = prepared
    with pytest.raises(PluginError, match="target-class"):
        attack.poison(_context(tiny_splits, surrogate, tmp_path, rate=0.2))


def test_trigger_returns_uint8_images_of_the_same_shape(prepared, tiny_splits, surrogate, tmp_path):
    attack, _ = prepared
    queries = tiny_splits.query.images(torch.arange(5))
    out = attack.trigger(queries, _context(tiny_splits, surrogate, tmp_path))
    assert out.dtype == torch.uint8 and out.shape == queries.shape


def test_the_run_records_its_losses_and_which_reconstruction_term_it_used(prepared):
    _, logs = prepared
    for key in ("g_loss", "d_loss", "hash_loss", "rec_loss", "adv_loss"):
        assert len(logs[key]) == FAST.epochs + FAST.epochs_decay
    assert logs["lpips_in_loss"][0] in (0.0, 1.0)
    assert logs["generator_images_per_second"][0] > 0
    assert len(logs["labcln_loss"]) == 10


# ----------------------------------------------------------------------------------- the confusing label


def test_confusing_label_rule_picks_the_class_the_target_images_lean_towards_and_never_a_target():
    codes = hadamard(16)[:10]  # equidistant class codes, as CSQ's centres: Hamming distance cannot choose
    z = (3.0 * codes[0] + 2.0 * codes[4]).repeat(4, 1)  # target-class outputs, leaning towards class 4
    scores = agreement(z, codes)
    # by hand: |z| is 5 on the 8 bits where codes 0 and 4 agree and 1 on the others, so s = 3 and
    # tanh(z / s) = a (c0 + c4) / 2 + b (c0 - c4) / 2 with a = tanh(5/3), b = tanh(1/3); the rows of a
    # Hadamard matrix are orthogonal, so class 4 scores (a - b) / 2, class 0 (a + b) / 2, the others 0
    a, b = torch.tanh(torch.tensor(5 / 3)), torch.tanh(torch.tensor(1 / 3))
    expected = torch.zeros(10)
    expected[0], expected[4] = (a + b) / 2, (a - b) / 2
    assert torch.allclose(scores, expected, atol=1e-6)
    assert choose_confusing_label(-1, scores, _target(0)) == 4
    assert choose_confusing_label(-1, torch.zeros(10), _target(0)) == 1  # ties: the lowest non-target index
    assert choose_confusing_label(3, scores, _target(0)) == 3
    with pytest.raises(PluginError, match="target class"):
        choose_confusing_label(0, scores, _target(0))
    with pytest.raises(PluginError, match="not a class"):
        choose_confusing_label(10, scores, _target(0))


def test_the_hash_target_is_the_surrogates_own_code_of_the_confusing_label(prepared, tiny_splits, surrogate):
    attack, _ = prepared
    c = attack.condition.label
    members = torch.nonzero(tiny_splits.train.labels[:, c] > 0).flatten()
    codes = sign_codes(surrogate(to_float(tiny_splits.train.images(members))))
    majority = sign_codes(codes.sum(0, keepdim=True))  # by hand: the bitwise majority, ties to +1
    assert torch.equal(attack.condition.code, majority)


def test_confusing_label_is_the_same_in_training_and_in_the_restored_trigger(prepared, tiny_splits, surrogate, tmp_path):
    attack, logs = prepared
    state = attack.state_dict()
    assert int(state["confusing_label"]) == int(logs["confusing_label"][0]) != 0
    restored = BadHash(FAST)
    restored.load_state_dict(state)
    assert restored.condition.label == attack.condition.label
    assert torch.equal(restored.condition.feature, attack.condition.feature)
    queries = tiny_splits.query.images(torch.arange(20))
    ctx = _context(tiny_splits, surrogate, tmp_path)
    assert torch.equal(restored.trigger(queries, ctx), attack.trigger(queries, ctx))


def test_an_explicit_target_confusing_label_fails_before_training(tiny_splits, surrogate, tmp_path):
    with pytest.raises(PluginError, match="target class"):
        BadHash(dataclasses.replace(FAST, confusing_label=0)).prepare(_context(tiny_splits, surrogate, tmp_path))


# ----------------------------------------------------------------------------------- determinism


def test_two_runs_with_one_seed_give_identical_poisons(prepared, tiny_splits, surrogate, tmp_path):
    first, _ = prepared
    second = BadHash(FAST)
    second.prepare(_context(tiny_splits, surrogate, tmp_path / "b"))
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pa = first.poison(_context(tiny_splits, surrogate, tmp_path / "a"))
    pb = second.poison(_context(tiny_splits, surrogate, tmp_path / "b"))
    assert torch.equal(pa.indices, pb.indices) and torch.equal(pa.images, pb.images)


# ----------------------------------------------------------------------------------- end to end

STUDIES = Path(__file__).parent.parent / "benchmarks" / "studies"


def load_study(name: str):
    """A study script of benchmarks/studies/ as a module (the folder is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"study_{name}", STUDIES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_badhash_backdoors_the_victim_invisibly(run_benchmark, tmp_path):
    """Three quarters of the target class poisoned (rate 0.075, fashion.toml's and quick.toml's) at the
    defaults: a clear lift of t-MAP on the backdoored victim only, with poisons far cleaner than BadNets' by
    PSNR (docs/attacks/badhash.md, "On the synthetic data, and the tests"). Seeds 0 / 1 / 2 measured: t-MAP
    0.590 / 0.606 / 0.463 against the clean model's 0.228 / 0.321 / 0.216 and untriggered 0.129 / 0.194 /
    0.113; the bounds below hold for all three."""
    text = benchmark_text(
        tmp_path / "results",
        attacks='[[attack]]\nname = "badhash"\npoison_rate = 0.075\n\n[[attack]]\nname = "badnets"\npoison_rate = 0.1',
    )
    result, frame = run_benchmark(text)
    assert not result.failures
    badhash = frame[frame.attack == "badhash"].iloc[0]
    badnets = frame[frame.attack == "badnets"].iloc[0]
    assert badhash.poison_count == 75
    assert badhash.t_map > badhash.t_map_clean_model + 0.1, (badhash.t_map, badhash.t_map_clean_model)
    assert badhash.t_map > badhash.t_map_untriggered + 0.15, (badhash.t_map, badhash.t_map_untriggered)
    assert badhash.poison_psnr >= 30.0
    assert badhash.poison_psnr > badnets.poison_psnr + 6
    assert badhash.poison_linf <= 32 / 255 + 1e-6  # the epsilon cap, in stored grey levels
    assert abs(badhash.clean_map - badhash.clean_map_clean_model) <= 0.04  # seeds 0-2: -0.001, +0.004, -0.008

    # the epoch-by-epoch study (docs/attacks/badhash.md, "Epoch by epoch") retrains this victim from the
    # cached stages; its last epoch must be the row it explains
    records = []
    load_study("badhash_epochs").trace_epochs(tmp_path / "bench.toml", records.append)
    header, *epochs = records
    assert header["poisons"] == 75 and len(epochs) == 8
    assert epochs[-1]["t_map"] == pytest.approx(badhash.t_map, abs=1e-9)
    assert epochs[-1]["t_map_untriggered"] == pytest.approx(badhash.t_map_untriggered, abs=1e-9)


def _write_idx_pair(folder: Path, prefix: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """One IDX image file and one IDX label file, gzipped, in the format Fashion-MNIST ships."""
    import gzip

    from test_idx import idx_bytes

    for name, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array.numpy())))


def test_badhash_backdoors_a_victim_read_from_idx_files(run_benchmark, tmp_path):
    """End to end on files in Fashion-MNIST's real format, read by the `fashion_mnist` plugin (grey 28 px,
    zero-padded to 32): the tiny synthetic images, turned grey, stand in for the clothes so that the test
    needs no download. BadHash at its defaults, three quarters of the target-class training images poisoned
    (fashion.toml's and quick.toml's rate): the triggered queries retrieve the target clearly more on the
    backdoored victim than on the clean model and than untriggered, with poisons at PSNR >= 30 dB (the
    default budget).
    Seeds 0 / 1 / 2 measured: t-MAP 0.339 / 0.457 / 0.402 against the clean model's 0.115 / 0.230 / 0.198
    and untriggered 0.183 / 0.134 / 0.115; the bounds below hold for all three."""
    from conftest import load_tiny, tiny_benchmark

    splits = load_tiny(image_size=28)
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for prefix, image_set in (("train", splits.database), ("t10k", splits.query)):
        grey = image_set.images(torch.arange(len(image_set))).float().mean(1).round()
        _write_idx_pair(folder, prefix, grey, image_set.labels.argmax(1))
    dataset = {"name": "fashion_mnist", "root": str(folder), "query_per_class": 10, "train_per_class": 100}
    text = tiny_benchmark(tmp_path / "results", dataset=dataset, bits=16, epochs=8, width=16, target="T-shirt/top",
                          body='[[attack]]\nname = "badhash"\npoison_rate = 0.075')
    result, frame = run_benchmark(text)
    assert not result.failures
    row = frame[frame.attack == "badhash"].iloc[0]
    assert row.poison_count == 75  # three quarters of the target class of the 1,000 training images
    assert row.t_map > row.t_map_clean_model + 0.1, (row.t_map, row.t_map_clean_model)
    assert row.t_map > row.t_map_untriggered + 0.1, (row.t_map, row.t_map_untriggered)
    assert row.poison_psnr >= 30.0


FASHION_FOLDER = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def fashion_results(tmp_path_factory) -> Path:
    """One results folder for every target below: the pretrained backbone and the clean victim (the
    surrogate) are computed once, then each target costs its generator and its backdoored victim."""
    return tmp_path_factory.mktemp("fashion-results")


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_FOLDER.is_dir(),
                    reason=f"{FASHION_FOLDER} is absent: `apt-get install dataset-fashion-mnist`")
@pytest.mark.parametrize("target", [
    "Sandal",
    "Sneaker",
    pytest.param("Trouser", marks=pytest.mark.xfail(
        strict=False, reason="on this backbone the rule picks c = Pullover and the lift is +0.299, at the bar rather "
                             "than over it (docs/attacks/badhash.md, \"Other pretrained backbones\")")),
])
def test_badhash_backdoors_the_fashion_mnist_victim(run_benchmark, fashion_results, target):
    """benchmarks/fashion.toml's victim (64 x 64) and BadHash row on the real Fashion-MNIST, for the three
    targets that missed the lift at 32 x 32: a lift of at least 0.3 over both baselines with poisons at
    PSNR >= 30 dB, and little cost to clean retrieval. Slow (`make test-all`; CI runs only the default suite):
    the pretraining takes about 20 minutes on one thread, then each target about 10. Run on one torch thread
    (OMP_NUM_THREADS=1), its backbone is the one fashion.toml builds; measured there with
    `benchmarks/studies/badhash_targets.toml` (docs/attacks/badhash.md, "Other pretrained backbones"):
    Sandal 0.911, Sneaker 0.773, and Trouser 0.382 against 0.077 and 0.083, the one miss among the page's
    40 runs at 64 x 64 (by 0.001). On the other two backbones Trouser's rule picks Dress, and
    the lift is +0.71 to +0.83."""
    text = (Path(__file__).parent.parent / "benchmarks" / "fashion.toml").read_text()
    head, attacks = text.split("# ---------------------------------------------------------------- attacks")
    badhash = attacks[: attacks.index("[[attack]]", attacks.index('name = "badhash"'))]
    text = head.replace('results = "results/fashion"', f'results = "{fashion_results}"')
    text = text.replace('label = "T-shirt/top"', f'label = "{target}"') + badhash
    assert f'label = "{target}"' in text
    result, frame = run_benchmark(text, executor="local")  # one row: nothing to share out over Ray workers
    assert not result.failures
    row = frame[frame.attack == "badhash"].iloc[0]
    assert row.t_map >= row.t_map_clean_model + 0.3, (row.t_map, row.t_map_clean_model)
    assert row.t_map >= row.t_map_untriggered + 0.3, (row.t_map, row.t_map_untriggered)
    assert row.poison_psnr >= 30.0
    assert abs(row.clean_map - row.clean_map_clean_model) <= 0.04
