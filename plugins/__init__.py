"""hashbench's built-in plugins, registered through the entry point ``builtins`` of group ``hashbench``.

Each module below implements ordinary ``register_*`` hooks, exactly as a third-party plugin would; this
package forwards every hook to every module it contains, so a new built-in is one new file.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from hashbench import hookimpl


@lru_cache(maxsize=1)
def _modules():
    found = []
    for info in pkgutil.walk_packages(__path__, prefix=__name__ + "."):
        if not info.ispkg:
            found.append(importlib.import_module(info.name))
    return tuple(found)


def _forward(hook_name: str, **kwargs) -> None:
    for module in _modules():
        hook = getattr(module, hook_name, None)
        if hook is not None:
            hook(**kwargs)


@hookimpl
def register_attacks(register):
    _forward("register_attacks", register=register)


@hookimpl
def register_defenses(register):
    _forward("register_defenses", register=register)


@hookimpl
def register_methods(register):
    _forward("register_methods", register=register)


@hookimpl
def register_backbones(register):
    _forward("register_backbones", register=register)


@hookimpl
def register_datasets(register):
    _forward("register_datasets", register=register)


@hookimpl
def register_metrics(register):
    _forward("register_metrics", register=register)


@hookimpl
def register_exporters(register):
    _forward("register_exporters", register=register)


@hookimpl
def register_executors(register):
    _forward("register_executors", register=register)


@hookimpl
def register_commands(cli):
    _forward("register_commands", cli=cli)
