"""The undefended baseline (always evaluated; every defense row is compared with it)."""

from hashbench import NoDefense, hookimpl


@hookimpl
def register_defenses(register):
    register(NoDefense)
