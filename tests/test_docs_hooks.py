"""Every hookspec is documented in docs/plugins.md with its exact signature, and exercised by some test."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from hashbench import hookspecs

REPO = Path(__file__).resolve().parent.parent
HOOKS = {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "hashbench_spec")}


def test_hookspecs_are_found():
    assert "register_attacks" in HOOKS and "register_commands" in HOOKS


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_is_documented_with_its_signature(name):
    signature = f"{name}{inspect.signature(HOOKS[name])}"
    assert signature in (REPO / "docs" / "plugins.md").read_text(), f"docs/plugins.md does not document `{signature}`"


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_is_exercised_by_a_test(name):
    tests = [p for p in (REPO / "tests").glob("*.py") if p.name != Path(__file__).name]
    users = [p.name for p in tests if f"def {name}(" in p.read_text()]
    assert users, f"no test implements the hook `{name}` (add it to a plugin object registered in a test)"
