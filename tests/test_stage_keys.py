"""The keys of the stages that train or attack are pinned: results folders hold hours of them, and a key
that changes by accident silently orphans every cached copy (the stage is planned under a new key and
computed again).

The pinned keys were computed by the code before the typed stage records (hashbench 0.1.0, issue #16). A
change on purpose (a new hashbench version, a plugin's ``version`` bumped, a new entry in a stage's
identity) updates them: run this benchmark's ``build_plan`` and paste the new keys here, and say in
docs/architecture.md ("Stage keys") which keys changed and why."""

from __future__ import annotations

from conftest import write_benchmark
from hashbench.config import load_spec
from hashbench.plan import build_plan

BODY = """
[[attack]]
name = "ciba"
poison_rate = 0.1

[[attack]]
name = "badnets"
poison_rate = 0.1

[[defense]]
name = "strip"

[[defense]]
name = "finetune"

[[defense]]
name = "spectral"
"""

# (label, key) of the stages whose keys must not change: every kind that trains or attacks, and the
# defenses that train a model (a repair, a data filter).
PINNED = [
    ("pretrain convnet on synthetic", "14ba53e569a1d3b74a3c"),
    ("clean victim synthetic csq/convnet/16b seed=0", "53d84775bdfe1f1ce975"),
    ("attack ciba on synthetic seed=0 (surrogate csq/convnet/16b)", "b6e9fbec7a6ab28df61b"),
    ("poison ciba on synthetic seed=0 rate=0.1", "5037aaa8d243441cc4ea"),
    ("backdoored victim synthetic csq/convnet/16b seed=0 ciba@0.1", "8af244f8b49aac825d03"),
    ("defend finetune synthetic csq/convnet/16b seed=0 ciba", "d24822ad24707cd7d8d1"),
    ("defend spectral synthetic csq/convnet/16b seed=0 ciba", "a7c5201794b843f595ae"),
    ("attack badnets on synthetic seed=0", "7669fc56c6948e6bed64"),
    ("poison badnets on synthetic seed=0 rate=0.1", "e5d0605864b52e088289"),
    ("backdoored victim synthetic csq/convnet/16b seed=0 badnets@0.1", "36f0fe3d3eff67cc1d3c"),
    ("defend finetune synthetic csq/convnet/16b seed=0 badnets", "cb0ed23ed8c09086feb6"),
    ("defend spectral synthetic csq/convnet/16b seed=0 badnets", "4990f5449321fd7ccaf7"),
    # the detector's defend stage and the evaluate stages of unchanged defend stages kept their keys too
    ("defend strip synthetic csq/convnet/16b seed=0 badnets", "234cd4127c80ce319a34"),
    ("evaluate clean synthetic csq/convnet/16b seed=0", "3b263ab506fd1a937f94"),
    ("evaluate synthetic csq/convnet/16b seed=0 badnets x finetune", "08c43749d6e22b1ead58"),
]


def test_the_keys_of_expensive_stages_are_those_computed_before(tmp_path):
    spec = load_spec(write_benchmark(
        tmp_path, name="keys", dataset=dict(name="synthetic", image_size=32, num_classes=2, train_per_class=12,
                                            query_per_class=4, database_per_class=24),
        bits=16, epochs=1, width=8, victim_extra="pretrain_epochs = 1", body=BODY))
    keys = {stage.label: stage.key for stage in build_plan(spec).ordered()}
    assert [(label, keys.get(label)) for label, _ in PINNED] == PINNED


def test_a_poison_only_parameter_keys_the_poison_stage_and_not_the_attack_stage(tmp_path):
    """BadHash's ``poison_selection`` is in ``BadHash.poison_params``: two benchmarks that differ only in it
    share the prepared attack (its trained generator) and differ from the poison stage on."""

    def stages(selection: str) -> dict[str, object]:
        (tmp_path / selection).mkdir()
        body = f'[[attack]]\nname = "badhash"\npoison_rate = 0.1\npoison_selection = "{selection}"\n'
        spec = load_spec(write_benchmark(
            tmp_path / selection, name="keys", dataset=dict(name="synthetic", image_size=32, num_classes=2,
                                                           train_per_class=12, query_per_class=4,
                                                           database_per_class=24),
            bits=16, epochs=1, width=8, body=body))
        return {stage.kind: stage for stage in build_plan(spec).ordered()}

    random, nearest = stages("random"), stages("nearest_c")
    assert random["attack"].key == nearest["attack"].key
    assert "poison_selection" not in random["attack"].config["attack"]["params"]
    assert random["poison"].key != nearest["poison"].key and random["victim"].key != nearest["victim"].key
    assert nearest["poison"].attack_identity()["params"]["poison_selection"] == "nearest_c"
