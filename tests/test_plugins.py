"""Plugin registration: built-ins load through their entry points; clashes and allow/block lists."""

import argparse
import ast
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

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


ROOT = Path(__file__).resolve().parent.parent


def _hook_modules() -> dict[str, str]:
    """Entry-point name -> module, for every module of plugins/ that defines a register_* function."""
    found = {}
    for path in sorted((ROOT / "plugins").glob("*/*.py")):
        tree = ast.parse(path.read_text())
        if any(isinstance(node, ast.FunctionDef) and node.name.startswith("register_") for node in tree.body):
            found[f"{path.parent.name}.{path.stem}"] = f"hashbench_plugins.{path.parent.name}.{path.stem}"
    return found


def test_every_builtin_module_with_a_hook_has_its_own_entry_point():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["hashbench"]
    assert declared == _hook_modules()
    assert not [name for name in declared if name.split(".")[1].startswith("_")], "helpers (_*) are no plugins"
    installed = {ep.name: ep.value for ep in entry_points(group="hashbench") if ep.dist.name == "hashbench"}
    assert installed == declared, "the installed entry points are stale: pip install -e ."


def test_no_builtin_adds_a_command():
    # `hashbench --help` lists plugins' commands only when another package installs plugins (hashbench.cli)
    assert not [path.name for path in (ROOT / "plugins").glob("*/*.py") if "def register_commands" in path.read_text()]


def test_the_cli_knows_its_built_in_commands():
    from hashbench.cli import BUILTIN_COMMANDS, build_parser

    parser = build_parser(plugin_commands=False)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(BUILTIN_COMMANDS)


@pytest.mark.parametrize("argv", [["--help"], ["fetch", "--help"], ["fetch", "--list"], ["report", "--help"],
                                  ["-v", "run", "--help"]])
def test_the_cli_parses_built_in_commands_without_importing_torch(argv):
    code = ("import sys; from hashbench.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'hashbench_plugins' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "False False"


def test_a_public_name_is_imported_on_first_use():
    code = "import sys, hashbench; a = 'torch' in sys.modules; hashbench.Attack; print(a, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]
    with pytest.raises(AttributeError, match="no attribute 'Atack'"):
        import hashbench

        hashbench.Atack


def test_builtins_are_registered_module_by_module():
    registry = get_registry()
    assert {"badnets"} <= set(registry.names("attack"))
    assert {"none", "jpeg"} <= set(registry.names("defense"))
    assert {"dpsh", "csq"} <= set(registry.names("method"))
    assert "synthetic" in registry.names("dataset") and "convnet" in registry.names("backbone")
    sources = {info.name: info.source for info in registry.infos("attack")}
    assert sources["badnets"] == "attacks.badnets" and sources["badhash"] == "attacks.badhash"
    assert {info.name: info.source for info in registry.infos("executor")} == {"local": "executors.local",
                                                                                 "ray": "executors.ray"}


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
    assert "attacks.badnets" in message and "clashing_plugin" in message


def test_allow_and_block_lists(monkeypatch):
    monkeypatch.setenv("HASHBENCH_LOAD_PLUGINS", "exporters.tables")
    registry = Registry(make_manager())
    assert registry.names("attack") == [] and registry.names("exporter") == ["csv", "json", "md"]
    monkeypatch.delenv("HASHBENCH_LOAD_PLUGINS")
    monkeypatch.setenv("HASHBENCH_DISABLE_PLUGINS", "builtins")
    assert Registry(make_manager()).names("defense") == []
    monkeypatch.setenv("HASHBENCH_LOAD_PLUGINS", "builtins")
    monkeypatch.setenv("HASHBENCH_DISABLE_PLUGINS", "executors.ray, attacks.badnets")
    registry = Registry(make_manager())
    assert registry.names("executor") == ["local"]
    assert "badnets" not in registry.names("attack") and "badhash" in registry.names("attack")
    monkeypatch.delenv("HASHBENCH_LOAD_PLUGINS")
    monkeypatch.delenv("HASHBENCH_DISABLE_PLUGINS")
    assert "badnets" in Registry(make_manager()).names("attack")


@pytest.mark.parametrize("variable", ["HASHBENCH_DISABLE_PLUGINS", "HASHBENCH_LOAD_PLUGINS"])
def test_an_unknown_name_in_the_plugin_lists_is_an_error(monkeypatch, variable):
    monkeypatch.setenv(variable, "executors.rya")
    with pytest.raises(PluginError, match=rf"{variable} names 'executors.rya', which is no installed plugin. "
                                          r"Did you mean 'executors.ray'\?"):
        make_manager()


def test_a_misspelt_hook_is_an_error_naming_the_plugin_and_the_hook():
    class Misspelt:
        @hookimpl
        def register_attack(self, register):  # the hook is register_attacks
            register(FakeBadNets)

    pm = make_manager(load_entry_points=False)
    pm.register(Misspelt(), name="misspelt_plugin")
    with pytest.raises(PluginError, match="plugin 'misspelt_plugin' implements 'register_attack', which is not a "
                                          "hashbench hook. Did you mean 'register_attacks'"):
        Registry(pm)


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
