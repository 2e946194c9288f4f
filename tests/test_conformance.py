"""Every registered plugin passes hashbench.testing, the kit catches broken plugins, and a plugin object
registered in a test reaches every hook (simonw/llm style: register, use, unregister)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import hashbench
from hashbench import testing
from hashbench.plugins import Registry, get_registry, make_manager, reset_registry

def _registered():
    registry = get_registry()
    return [registry.get(kind, name) for kind in testing.CHECKS for name in registry.names(kind)]


# A plugin too slow for the default suite says so on its class (testing_slow), as a known failure does
@testing.parametrize_with_checks(_registered())
def test_registered_plugin_honours_its_contract(plugin, check):
    check(plugin)


# ----------------------------------------------------------------------------------- the kit catches bugs


@dataclass(frozen=True)
class _Params:
    strength: float = hashbench.param(0.1, "pattern amplitude")


class _GoodAttack(hashbench.Attack):
    """A fixed additive pattern, poison-label."""

    name = "good"
    Params = _Params

    def trigger(self, images, ctx):
        return (images.int() + 20).clamp(0, 255).to(torch.uint8)

    def poison(self, ctx):
        idx = ctx.choose_poison_indices(~ctx.target.overlaps(ctx.splits.train.labels))
        labels = ctx.target.labels.expand(len(idx), -1).clone()
        return hashbench.Poisoning(idx, self.trigger(ctx.splits.train.images(idx), ctx), labels)


class _FloatTrigger(_GoodAttack):
    """Returns float images."""

    def trigger(self, images, ctx):
        return images.float() / 255


class _DishonestCleanLabel(_GoodAttack):
    """Claims clean-label but relabels."""

    threat_model = hashbench.ThreatModel(clean_label=True)


class _WrongCount(_GoodAttack):
    """Poisons one sample whatever the rate."""

    def poison(self, ctx):
        result = super().poison(ctx)
        return hashbench.Poisoning(result.indices[:1], result.images[:1], result.labels[:1])


class _ForgetsState(_GoodAttack):
    """Learns an offset in prepare() but does not persist it."""

    def prepare(self, ctx):
        self.offset = 40

    def trigger(self, images, ctx):
        return (images.int() + getattr(self, "offset", 1)).clamp(0, 255).to(torch.uint8)


class _BatchDependent(_GoodAttack):
    """Shifts each image by an amount taken from its whole batch (its mean), so an image's trigger
    depends on which other images are triggered with it."""

    def trigger(self, images, ctx):
        shift = 1 + int(images.float().mean()) % 29
        return (images.int() + shift).clamp(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class _UndocumentedParams:
    strength: float = 0.1


class _Undocumented(_GoodAttack):
    """A Params field without a doc."""

    Params = _UndocumentedParams


class _UnknownPoisonParam(_GoodAttack):
    """Declares a poison-only parameter its Params lacks."""

    poison_params = ("selection",)


@pytest.mark.parametrize(
    "cls,rule",
    [
        (_UnknownPoisonParam, "poison_params is a tuple of Params field names"),
        (_FloatTrigger, "trigger() returns uint8 images of its input's shape"),
        (_DishonestCleanLabel, "poison() passes hashbench.contract.validate_poisoning"),
        (_WrongCount, "poison() poisons ctx.poison_count() samples (poison_rate × training-set size)"),
        (_ForgetsState, "an attack restored with load_state_dict(state_dict()) triggers queries as the prepared one does"),
        (_BatchDependent, "trigger() treats each image independently of its batch (the runner triggers in batches)"),
        (_Undocumented, "every Params field has a one-line doc (hashbench.param)"),
    ],
    ids=lambda v: getattr(v, "__name__", "")[:20],
)
def test_check_attack_names_the_broken_rule(cls, rule):
    with pytest.raises(testing.ContractError) as caught:
        testing.check_attack(cls)
    assert caught.value.rule == rule
    assert "attack 'good'" in str(caught.value) and rule in str(caught.value)


def test_a_correct_attack_passes_and_unknown_params_are_rejected():
    testing.check_attack(_GoodAttack)
    with pytest.raises(testing.ContractError, match="unknown key 'strenght'.*Did you mean 'strength'"):
        testing.check_attack(_GoodAttack, {"strenght": 0.2})


class _BadPurifier(hashbench.InputPurifier):
    """Returns float images."""

    name = "bad_purifier"

    def purify(self, images):
        return images.float()


class _NaNSuspicion(hashbench.ModelRepair):
    """Scores its labels with NaN."""

    name = "nan_suspicion"

    def repair(self, ctx):
        return hashbench.RepairResult(ctx.model, label_scores={0: float("nan"), 1: 0.5})


class _NonScalarLoss(hashbench.HashMethod):
    """Returns a per-sample loss."""

    name = "non_scalar"

    def loss(self, z, labels, indices):
        return z.pow(2).mean(dim=1)


class _WrongWidth(hashbench.Backbone):
    """Declares 8 features but returns 12."""

    name = "wrong_width"

    def build(self, image_size):
        return torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()), 8


class _TwoHot(hashbench.Dataset):
    """Single-label data whose rows carry two labels."""

    name = "two_hot"

    def load(self, ctx):
        images = torch.zeros(6, 3, 8, 8, dtype=torch.uint8)
        labels = torch.tensor([[1.0, 1.0]] * 6)
        split = hashbench.TensorImageSet(images, labels)
        return hashbench.DatasetSplits(split, split, split, ["a", "b"])


@pytest.mark.parametrize(
    "check,cls,rule",
    [
        (testing.check_defense, _BadPurifier, "purify() returns uint8 images of its input's shape"),
        (testing.check_defense, _NaNSuspicion, "label_scores is None or maps class indices to finite float suspicion scores"),
        (testing.check_method, _NonScalarLoss, "loss() returns a scalar float tensor"),
        (testing.check_backbone, _WrongWidth, "features have shape (batch, feature_dim)"),
        (testing.check_dataset, _TwoHot, "single-label train labels are one-hot"),
    ],
    ids=["defense", "repair-scores", "method", "backbone", "dataset"],
)
def test_other_checks_name_the_broken_rule(check, cls, rule):
    with pytest.raises(testing.ContractError) as caught:
        check(cls)
    assert caught.value.rule == rule


def test_testing_params_none_skips_with_a_reason():
    class NeedsFiles(_TwoHot):
        """Reads files that are not here."""

        testing_params = None

    with pytest.raises(pytest.skip.Exception, match="cannot run without external data"):
        testing.check_dataset(NeedsFiles)


# ----------------------------------------------------------------------------------- every hook


class _Metric(hashbench.Metric):
    """Counts queries."""

    name = "query_count"

    def compute(self, query_codes, db_codes, query_labels, db_labels, topk):
        return {"query_count": float(len(query_codes))}


class _Exporter(hashbench.Exporter):
    """Writes nothing."""

    name = "nothing"


class _Executor(hashbench.Executor):
    """Runs nothing."""

    name = "nothing"


class _EveryHook:
    """A third-party plugin object implementing every hookspec."""

    @hashbench.hookimpl
    def register_attacks(self, register):
        register(_GoodAttack)

    @hashbench.hookimpl
    def register_defenses(self, register):
        register(_BadPurifier)

    @hashbench.hookimpl
    def register_methods(self, register):
        register(_NonScalarLoss)

    @hashbench.hookimpl
    def register_backbones(self, register):
        register(_WrongWidth)

    @hashbench.hookimpl
    def register_datasets(self, register):
        register(_TwoHot)

    @hashbench.hookimpl
    def register_metrics(self, register):
        register(_Metric)

    @hashbench.hookimpl
    def register_exporters(self, register):
        register(_Exporter)

    @hashbench.hookimpl
    def register_executors(self, register):
        register(_Executor)

    @hashbench.hookimpl
    def register_commands(self, cli):
        hello = cli.add_parser("hello-from-plugin", help="a plugin's command")
        hello.set_defaults(func=lambda args: 0)


@pytest.fixture
def every_hook_registered():
    pm = make_manager(load_entry_points=False)
    pm.register(_EveryHook(), name="every-hook")
    reset_registry(Registry(pm))
    yield get_registry()
    reset_registry()


def test_a_plugin_object_reaches_every_hook(every_hook_registered):
    from hashbench.cli import build_parser, main

    registry = every_hook_registered
    expected = {"attack": "good", "defense": "bad_purifier", "method": "non_scalar", "backbone": "wrong_width",
                "dataset": "two_hot", "metric": "query_count", "exporter": "nothing", "executor": "nothing"}
    assert {kind: registry.names(kind) for kind in expected} == {kind: [name] for kind, name in expected.items()}
    assert registry.describe(next(registry.infos("attack")))["source"] == "every-hook"
    args = build_parser().parse_args(["hello-from-plugin"])
    assert args.func(args) == 0
    assert main(["hello-from-plugin"]) == 0  # main loads plugins' commands for a word that is no built-in one


# ----------------------------------------------------------------------------------- parametrize_with_checks


class _KnownFloatTrigger(_FloatTrigger):
    """Returns float images, and says so."""

    testing_xfail = {"check_attack": "returns float images until the next release"}


def test_a_known_failure_is_declared_on_the_plugin_class():
    mark = testing.parametrize_with_checks([_GoodAttack, _KnownFloatTrigger])
    assert [item.id for item in mark.args[1]][:2] == ["attack-good-check_params", "attack-good-check_attack"]
    expected = [(cls, check) for cls in (_GoodAttack, _KnownFloatTrigger) for check in testing.CHECKS["attack"]]
    assert [tuple(item.values) for item in mark.args[1]] == expected
    xfails = [[m for m in item.marks if m.name == "xfail"] for item in mark.args[1]]
    assert [len(x) for x in xfails] == [0, 0, 0, 1]
    assert xfails[3][0].kwargs == {"reason": "returns float images until the next release",
                                   "raises": testing.ContractError, "strict": True}
    with pytest.raises(testing.ContractError):  # the failure it declares is real
        testing.check_attack(_KnownFloatTrigger)


def test_a_slow_check_and_a_check_that_cannot_run_are_declared_on_the_plugin_class():
    class Slow(_GoodAttack):
        """Prepares for minutes."""

        testing_slow = "minutes on a CPU"

    class Elsewhere(_GoodAttack):
        """Checked by another test."""

        testing_skip = {"check_attack": "checked by test_elsewhere"}

    items = testing.parametrize_with_checks([Slow, Elsewhere]).args[1]
    by_class = [[(m.name, m.kwargs) for m in item.marks] for item in items]
    # the slow plugin's parameters are still checked in a default run; only its attack check is slow
    assert by_class == [[], [("slow", {})], [], [("skip", {"reason": "checked by test_elsewhere"})]]


def test_executors_are_parametrized_with_their_check():
    from hashbench.executors.check import check_executor
    from hashbench.executors.local import LocalExecutor

    assert testing.check_executor is check_executor
    items = testing.parametrize_with_checks([LocalExecutor]).args[1]
    assert [item.id for item in items] == ["executor-local-check_params", "executor-local-check_executor"]


def test_a_misspelt_known_failure_is_an_error():
    class Misspelt(_GoodAttack):
        """Declares a check that does not exist."""

        testing_xfail = {"check_atack": "typo"}

    with pytest.raises(ValueError, match="check_atack"):
        testing.parametrize_with_checks([Misspelt])
