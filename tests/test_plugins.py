"""Plugin registration: built-ins load through the entry point; clashes and allow/block lists."""

from dataclasses import dataclass

import pytest

from hashbench import Attack, InputPurifier, ThreatModel, hookimpl, param
from hashbench.errors import PluginError
from hashbench.plugins import Registry, get_registry, make_manager, reset_registry


@dataclass(frozen=True)
class InvertParams:
    strength: float = param(1.0, "how much to invert")


class Invert(InputPurifier):
    """Inverts queries (a test plugin)."""

    name = "invert_for_test"
    Params = InvertParams

    def purify(self, images):
        return 255 - images


class FakeBadNets(Attack):
    """Clashes with the built-in name."""

    name = "badnets"
    threat_model = ThreatModel(clean_label=False)


class ThirdParty:
    @hookimpl
    def register_defenses(self, register):
        register(Invert)


class Clashing:
    @hookimpl
    def register_attacks(self, register):
        register(FakeBadNets)


@pytest.fixture
def fresh_registry():
    yield
    reset_registry()


def test_builtins_are_registered_through_the_entry_point():
    registry = get_registry()
    assert {"badnets"} <= set(registry.names("attack"))
    assert {"none", "jpeg"} <= set(registry.names("defense"))
    assert {"dpsh", "csq"} <= set(registry.names("method"))
    assert "synthetic" in registry.names("dataset") and "convnet" in registry.names("backbone")
    assert {info.source for info in registry.infos("attack")} >= {"builtins"}


def test_a_registered_plugin_object_appears_with_its_parameters(fresh_registry):
    pm = make_manager()
    pm.register(ThirdParty(), name="third_party")
    registry = Registry(pm)
    reset_registry(registry)
    info = next(i for i in registry.infos("defense") if i.name == "invert_for_test")
    described = registry.describe(info)
    assert described["source"] == "third_party"
    assert described["parameters"] == [{"name": "strength", "type": "float", "default": 1.0, "doc": "how much to invert"}]
    assert described["level"] == "input" and described["role"] == "purify"


def test_a_name_clash_is_an_error_naming_both_sources():
    pm = make_manager()
    pm.register(Clashing(), name="clashing_plugin")
    with pytest.raises(PluginError) as err:
        Registry(pm)
    message = str(err.value)
    assert "two attack plugins are named 'badnets'" in message
    assert "builtins" in message and "clashing_plugin" in message


def test_allow_and_block_lists(monkeypatch):
    monkeypatch.setenv("HASHBENCH_LOAD_PLUGINS", "someone_else")
    assert Registry(make_manager()).names("attack") == []
    monkeypatch.delenv("HASHBENCH_LOAD_PLUGINS")
    monkeypatch.setenv("HASHBENCH_DISABLE_PLUGINS", "builtins")
    assert Registry(make_manager()).names("defense") == []
    monkeypatch.delenv("HASHBENCH_DISABLE_PLUGINS")
    assert "badnets" in Registry(make_manager()).names("attack")


def test_unknown_plugin_suggests_a_close_name():
    with pytest.raises(PluginError, match="Did you mean 'jpeg'"):
        get_registry().get("defense", "jpg")


def test_a_non_plugin_class_is_refused():
    class NotAPlugin:
        pass

    class Bad:
        @hookimpl
        def register_attacks(self, register):
            register(NotAPlugin)

    pm = make_manager(load_entry_points=False)
    pm.register(Bad())
    with pytest.raises(PluginError, match="is not a hashbench plugin class"):
        Registry(pm)
