"""The plugin manager: built-ins and third-party plugins load the same way, from the entry-point
group ``hashbench``; each built-in module is one entry point named ``<folder>.<module>`` (e.g.
``executors.ray``). ``HASHBENCH_LOAD_PLUGINS`` (comma-separated entry-point names, an allow-list) and
``HASHBENCH_DISABLE_PLUGINS`` (a block-list) choose which load; ``builtins`` in either names every
entry point of hashbench's own distribution (docs/plugins.md, "Choosing what loads")."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .errors import PluginError
from .params import describe_params, did_you_mean

ENTRY_POINT_GROUP = "hashbench"
# The plugin kinds, in the order `hashbench plugins` lists them, and the hook that registers each (the one
# list of kinds: the CLI reads it without importing the torch-based API)
HOOK_FOR_KIND = {
    "attack": "register_attacks",
    "defense": "register_defenses",
    "method": "register_methods",
    "backbone": "register_backbones",
    "dataset": "register_datasets",
    "metric": "register_metrics",
    "exporter": "register_exporters",
    "executor": "register_executors",
}


@dataclass(frozen=True)
class PluginInfo:
    cls: type
    kind: str
    source: str  # the module or distribution it came from

    @property
    def name(self) -> str:
        return self.cls.name


def _csv_env(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


BUILTINS = "builtins"  # the name, in the allow and block lists, of every built-in entry point at once


def _names_in(variable: str, known: dict[str, set[str]]) -> set[str] | None:
    """The entry-point names that ``variable`` lists (``builtins`` expanded), or None when it is unset; a
    name that is no installed plugin is an error, as a typo would otherwise load or block nothing."""
    listed = _csv_env(variable)
    if listed is None:
        return None
    names: set[str] = set()
    for name in sorted(listed):
        if name not in known:
            raise PluginError(
                f"{variable} names '{name}', which is no installed plugin.{did_you_mean(name, known)} "
                f"Installed: {', '.join(sorted(known))} (see `hashbench plugins`)"
            )
        names |= known[name]
    return names


def _check_hooks(pm: pluggy.PluginManager) -> None:
    """A hook implementation whose name is no hashbench hook (``register_attack``) is an error naming the
    plugin and the hook, instead of being silently ignored."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        plugin = pm.get_name(exc.plugin) or repr(exc.plugin)
        known = sorted(name for name in vars(hookspecs) if name.startswith("register_"))
        hook = min(caller.name for caller in pm.get_hookcallers(exc.plugin) if not caller.has_spec())
        raise PluginError(
            f"plugin '{plugin}' implements '{hook}', which is not a hashbench hook.{did_you_mean(hook, known)} "
            f"The hooks are: {', '.join(known)}"
        ) from None


def third_party_plugins_installed() -> bool:
    """Whether a package other than hashbench declares plugins (read from metadata: imports nothing)."""
    return any(ep.dist is None or ep.dist.name != "hashbench" for ep in entry_points(group=ENTRY_POINT_GROUP))


def make_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("hashbench")
    pm.add_hookspecs(hookspecs)
    if not load_entry_points:
        return pm
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    known = {name: {name} for name in found}
    known[BUILTINS] = {name for name, ep in found.items() if ep.dist is not None and ep.dist.name == "hashbench"}
    allow = _names_in("HASHBENCH_LOAD_PLUGINS", known)
    block = _names_in("HASHBENCH_DISABLE_PLUGINS", known) or set()
    for name, ep in found.items():
        if (allow is not None and name not in allow) or name in block:
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a broken third-party plugin must not take hashbench down
            raise PluginError(f"plugin entry point '{ep.name}' ({ep.value}) failed to import: {exc}") from exc
        pm.register(module, name=name)
    return pm


class Registry:
    """Name -> plugin class, per kind, collected from every registered hook implementation."""

    def __init__(self, pm: pluggy.PluginManager):
        _check_hooks(pm)
        self.pm = pm
        self._by_kind: dict[str, dict[str, PluginInfo]] = {kind: {} for kind in HOOK_FOR_KIND}
        for kind, hook_name in HOOK_FOR_KIND.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                source = pm.get_name(impl.plugin) or getattr(impl.plugin, "__name__", repr(impl.plugin))
                impl.function(register=lambda cls, _k=kind, _s=source: self._add(_k, cls, _s))

    def _add(self, kind: str, cls: type, source: str) -> None:
        from .api import Plugin

        if not (isinstance(cls, type) and issubclass(cls, Plugin)):
            raise PluginError(f"{source} registered {cls!r} as a {kind}, but it is not a hashbench plugin class")
        if cls.kind != kind:
            raise PluginError(f"{source} registered {cls.__name__} (kind '{cls.kind}') through the {kind} hook")
        if not cls.name:
            raise PluginError(f"{source} registered {cls.__name__} without a `name`")
        existing = self._by_kind[kind].get(cls.name)
        if existing is not None:
            if existing.cls is cls:
                return
            raise PluginError(
                f"two {kind} plugins are named '{cls.name}': {existing.cls.__module__}.{existing.cls.__name__} "
                f"(from {existing.source}) and {cls.__module__}.{cls.__name__} (from {source}); "
                f"rename one or disable a plugin with HASHBENCH_DISABLE_PLUGINS"
            )
        self._by_kind[kind][cls.name] = PluginInfo(cls, kind, source)

    def names(self, kind: str) -> list[str]:
        return sorted(self._by_kind[kind])

    def get(self, kind: str, name: str) -> type:
        try:
            return self._by_kind[kind][name].cls
        except KeyError:
            known = self.names(kind)
            raise PluginError(
                f"unknown {kind} '{name}'.{did_you_mean(name, known)} Known {kind}s: {', '.join(known) or '(none)'}."
            ) from None

    def infos(self, kind: str | None = None) -> Iterable[PluginInfo]:
        for k in HOOK_FOR_KIND if kind is None else (kind,):
            for name in self.names(k):
                yield self._by_kind[k][name]

    def describe(self, info: PluginInfo) -> dict[str, Any]:
        cls = info.cls
        out: dict[str, Any] = {
            "name": cls.name,
            "kind": info.kind,
            "version": cls.version,
            "source": info.source,
            "summary": cls.summary(),
            "parameters": describe_params(cls.Params),
        }
        threat = getattr(cls, "threat_model", None)
        if info.kind == "attack" and threat is not None:
            out["threat_model"] = dict(threat.__dict__)
        if info.kind == "defense":
            out["level"] = cls.level
            out["role"] = cls.role
        return out


_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _registry
    if _registry is None:
        _registry = Registry(make_manager())
    return _registry


def reset_registry(registry: Registry | None = None) -> None:
    """Drop (or replace) the cached registry; tests use it after registering a plugin object."""
    global _registry
    _registry = registry
