"""Benchmark files (TOML) -> a validated :class:`BenchmarkSpec`.

Every table is checked against a dataclass: an unknown key, a wrong type or an unknown plugin ends with
one message naming the file, the table, the key and what is valid. A list in any parameter expands into
a grid (for a parameter that itself takes a list, a list of lists expands).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, PluginError
from .params import build_params, did_you_mean, field_types, is_sequence_type, param, params_to_dict
from .plugins import Registry, get_registry
from .training import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class BenchmarkSettings:
    """The `[benchmark]` table."""

    name: str = param("benchmark", "a label for the file's readers; reports are titled with the results folder's name")
    seeds: list[int] = param([0], "one full matrix per seed; the leaderboard gives mean and std over seeds")
    device: str = param("auto", "auto | cpu | cuda | cuda:N")
    results: str = param("results/benchmark", "results directory, relative to the current directory")
    executor: str = param("local", "executor plugin: local or ray")
    executor_options: dict = param({}, "options for the executor (e.g. address = \"auto\" for ray)")

    def validate(self) -> None:
        if not DEVICE_PATTERN.match(self.device):
            raise ValueError(f"device {self.device!r} is not valid; use auto, cpu, cuda or cuda:N")
        if not self.results.strip() or "\0" in self.results:
            raise ValueError(f"results {self.results!r} is not a usable folder name")


DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class PluginSpec:
    """A plugin chosen by name with validated parameters."""

    kind: str
    name: str
    params: Any
    version: str

    def identity(self) -> dict[str, Any]:
        """What a stage key hashes: name, version and every parameter value."""
        return {"name": self.name, "version": self.version, "params": params_to_dict(self.params)}

    def label(self) -> str:
        return self.name


@dataclass(frozen=True)
class VictimSpec:
    method: PluginSpec
    backbone: PluginSpec
    bits: int
    train: TrainConfig

    def identity(self) -> dict[str, Any]:
        return {
            "method": self.method.identity(),
            "backbone": self.backbone.identity(),
            "bits": self.bits,
            "train": params_to_dict(self.train),
        }

    def label(self) -> str:
        return f"{self.method.name}/{self.backbone.name}/{self.bits}b"


@dataclass(frozen=True)
class AttackSpec:
    plugin: PluginSpec
    poison_rate: float
    surrogate: VictimSpec | None  # None: the clean victim of the same dataset and victim settings

    def label(self) -> str:
        return self.plugin.name


@dataclass(frozen=True)
class DefenseSpec:
    plugin: PluginSpec
    clean_fraction: float

    def label(self) -> str:
        return self.plugin.name


@dataclass(frozen=True)
class TargetSpec:
    """The `[target]` table: a class name, a class index, or (multi-label data) a list of them."""

    label: str | int | list = param(0, "target class name or index; a list for multi-label targets")

    def validate(self) -> None:
        if isinstance(self.label, list) and not self.label:
            raise ValueError("'label' is an empty list: give a class name or index")


@dataclass
class BenchmarkSpec:
    path: Path
    settings: BenchmarkSettings
    datasets: list[PluginSpec]
    victims: list[VictimSpec]
    target: TargetSpec
    attacks: list[AttackSpec]
    defenses: list[DefenseSpec]
    # the [metric.NAME] tables: the parameters of installed metric plugins (the others run with defaults)
    metrics: dict[str, Any] = field(default_factory=dict)
    raw: dict = field(default_factory=dict, repr=False)


TOP_LEVEL = {"benchmark", "dataset", "victim", "target", "attack", "defense", "metric"}
VICTIM_KEYS = {"method", "backbone", "bits", "method_params", "backbone_params"}


@dataclass(frozen=True)
class Share:
    """The share an [[attack]] or [[defense]] table sets besides its plugin's parameters."""

    key: str
    default: float
    whole: bool  # whether 1 (the whole training set) is allowed: for a clean fraction, not a poison rate

    @property
    def interval(self) -> str:
        return "(0, 1]" if self.whole else "(0, 1)"

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        return 0 < value < 1 or (self.whole and value == 1)


POISON_RATE = Share("poison_rate", 0.01, whole=False)
CLEAN_FRACTION = Share("clean_fraction", 0.05, whole=True)


def expand_grid(table: dict[str, Any], sequence_keys: set[str] = frozenset(), where: str | None = None) -> list[dict[str, Any]]:
    """Cartesian product over list values. Keys in ``sequence_keys`` take a list as their value, so only
    a list of lists expands there. An empty list is refused: it would silently drop the table."""
    axes = []
    for key, value in table.items():
        if isinstance(value, list) and value and (key not in sequence_keys or isinstance(value[0], list)):
            axes.append([(key, v) for v in value])
        elif isinstance(value, list) and not value and key not in sequence_keys:
            raise ConfigError(f"'{key}' is an empty list: give at least one value", where)
        else:
            axes.append([(key, value)])
    return [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]


def _sequence_keys(params_cls: type) -> set[str]:
    return {name for name, tp in field_types(params_cls).items() if is_sequence_type(tp)}


def _plugin_grid(registry: Registry, kind: str, name: Any, table: dict[str, Any], where: str) -> list[PluginSpec]:
    if not isinstance(name, str):
        raise ConfigError(f"'name' must be a string naming a {kind} plugin", where)
    try:
        cls = registry.get(kind, name)
    except PluginError as exc:
        raise ConfigError(str(exc), where) from None
    out = []
    for combo in expand_grid(table, _sequence_keys(cls.Params), where):
        out.append(PluginSpec(kind, name, build_params(cls.Params, combo, f"{where} ({name})"), cls.version))
    return out


def _as_tables(value: Any, table: str, where: str) -> list[dict]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return value
    raise ConfigError(f"[{table}] must be a table or an array of tables ([[{table}]])", where)


def _check_keys(table: dict, allowed: set[str], where: str, extra_ok: bool = False) -> None:
    if extra_ok:
        return
    for key in table:
        if key not in allowed:
            from .params import did_you_mean

            raise ConfigError(f"unknown key '{key}'.{did_you_mean(key, allowed)} Valid keys: {', '.join(sorted(allowed))}.", where)


def _params_by_plugin(table: dict, kind: str, where: str) -> dict[str, dict]:
    """``<kind>_params``: a table per plugin the victim table names (a typo'd name would otherwise be
    ignored and the plugin trained with its defaults)."""
    key = f"{kind}_params"
    sub = table.get(key, {})
    chosen = table.get(kind)
    named = {n for n in (chosen if isinstance(chosen, list) else [chosen]) if isinstance(n, str)}
    if not isinstance(sub, dict):
        raise ConfigError(f"'{key}' must be a table of tables keyed by {kind} name, e.g. {key}.NAME = {{ ... }}", where)
    for name, params in sub.items():
        if name not in named:
            raise ConfigError(f"'{key}.{name}' names no {kind} of this table.{did_you_mean(name, named)} "
                              f"The table's {kind}s: {', '.join(sorted(named)) or '(none)'}.", where)
        if not isinstance(params, dict):
            raise ConfigError(f"'{key}.{name}' = {params!r} must be a table of {name}'s parameters, "
                              f"e.g. {key}.{name} = {{ ... }}", where)
    return sub


def _rates(value: Any, key: str, where: str) -> list:
    """A rate or a grid of rates; an empty grid is refused (it would drop the table from the plan)."""
    return [combo[key] for combo in expand_grid({key: value}, where=where)]


def _parse_victims(registry: Registry, table: dict, where: str) -> list[VictimSpec]:
    train_keys = set(field_types(TrainConfig))
    _check_keys(table, VICTIM_KEYS | train_keys, where)
    for required in ("method", "backbone", "bits"):
        if required not in table:
            raise ConfigError(f"missing key '{required}'", where)
    method_params = _params_by_plugin(table, "method", where)
    backbone_params = _params_by_plugin(table, "backbone", where)
    grid_input = {k: v for k, v in table.items() if k not in ("method_params", "backbone_params")}
    victims = []
    for combo in expand_grid(grid_input, where=where):
        method_name, backbone_name, bits = combo.pop("method"), combo.pop("backbone"), combo.pop("bits")
        if not isinstance(bits, int) or isinstance(bits, bool) or bits < 1:
            raise ConfigError(f"'bits' = {bits!r} must be a positive integer", where)
        train = build_params(TrainConfig, combo, where)
        methods = _plugin_grid(registry, "method", method_name, method_params.get(method_name, {}), f"{where}.method_params")
        backbones = _plugin_grid(
            registry, "backbone", backbone_name, backbone_params.get(backbone_name, {}), f"{where}.backbone_params"
        )
        for m, b in itertools.product(methods, backbones):
            victims.append(VictimSpec(m, b, bits, train))
    return victims


def load_spec(path: str | Path, registry: Registry | None = None) -> BenchmarkSpec:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"'{path}' is a folder; give a benchmark file (.toml) such as benchmarks/quick.toml")
    if not path.is_file():
        raise ConfigError(f"benchmark file '{path}' does not exist")
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start}); save the file as UTF-8", str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", str(path)) from None
    return parse_spec(raw, path, registry)


def parse_spec(raw: dict, path: Path | str = "<benchmark>", registry: Registry | None = None) -> BenchmarkSpec:
    registry = registry or get_registry()
    path = Path(path)
    _check_keys(raw, TOP_LEVEL, str(path))
    bench_table = raw.get("benchmark", {})
    if not isinstance(bench_table, dict):
        raise ConfigError("[benchmark] must be a table", str(path))
    settings = build_params(BenchmarkSettings, bench_table, f"{path} [benchmark]")
    if not settings.seeds:
        raise ConfigError("'seeds' needs at least one seed", f"{path} [benchmark]")
    executor_params(registry, settings.executor, settings.executor_options, f"{path} [benchmark]")

    if "dataset" not in raw:
        raise ConfigError("missing [dataset] table (e.g. name = \"synthetic\")", str(path))
    datasets: list[PluginSpec] = []
    for i, table in enumerate(_as_tables(raw["dataset"], "dataset", str(path))):
        where = f"{path} [dataset] #{i + 1}"
        table = dict(table)
        if "name" not in table:
            raise ConfigError("missing key 'name'", where)
        datasets += _plugin_grid(registry, "dataset", table.pop("name"), table, where)

    if "victim" not in raw:
        raise ConfigError("missing [victim] table (method, backbone, bits)", str(path))
    victims: list[VictimSpec] = []
    for i, table in enumerate(_as_tables(raw["victim"], "victim", str(path))):
        victims += _parse_victims(registry, table, f"{path} [victim] #{i + 1}")

    target = build_params(TargetSpec, raw.get("target", {}), f"{path} [target]")

    attacks = [AttackSpec(plugin, rate, surrogate)
               for plugin, rate, own, where in _plugin_blocks(registry, raw, "attack", POISON_RATE, path, ("surrogate",))
               for surrogate in _surrogates(registry, own.get("surrogate"), where)]
    defenses = [DefenseSpec(plugin, fraction)
                for plugin, fraction, _, _ in _plugin_blocks(registry, raw, "defense", CLEAN_FRACTION, path)]
    # The undefended baseline is always evaluated: every defense row is compared with it.
    if not any(d.plugin.name == "none" for d in defenses):
        defenses.insert(0, DefenseSpec(_plugin_grid(registry, "defense", "none", {}, str(path))[0], 0.05))

    metrics = _metric_params(registry, raw.get("metric", {}), path)
    return BenchmarkSpec(path, settings, datasets, victims, target, attacks, defenses, metrics, raw)


def _metric_params(registry: Registry, table: Any, path: Path) -> dict[str, Any]:
    """The [metric.NAME] tables: each names an installed metric plugin and holds its parameters (one value
    each: a metric's parameters set how every row is scored, so a list is a value, not a grid)."""
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ConfigError("[metric] must hold one table per metric plugin, e.g. [metric.NAME] with its parameters",
                          str(path))
    out = {}
    for name, params in table.items():
        where = f"{path} [metric.{name}]"
        try:
            cls = registry.get("metric", name)
        except PluginError as exc:
            raise ConfigError(f"{exc} Install the metric plugin or remove the table.", where) from None
        out[name] = build_params(cls.Params, params, where)
    return out


def _plugin_blocks(registry: Registry, raw: dict, kind: str, share: Share, path: Path,
                   own_keys: tuple[str, ...] = ()) -> list[tuple[PluginSpec, float, dict, str]]:
    """The [[attack]] or [[defense]] tables of a file, each expanded over its grids of ``share`` and of
    its plugin's parameters: ``(plugin, share value, the table's ``own_keys``, where)`` in file order,
    share values outermost."""
    out = []
    for i, table in enumerate(_as_tables(raw.get(kind, []), kind, str(path))):
        where = f"{path} [[{kind}]] #{i + 1}"
        table = dict(table)
        if "name" not in table:
            raise ConfigError("missing key 'name'", where)
        name = table.pop("name")
        values = table.pop(share.key, share.default)
        own = {key: table.pop(key) for key in own_keys if key in table}
        for value in _rates(values, share.key, where):
            if not share.accepts(value):
                raise ConfigError(f"'{share.key}' = {value!r} must be a number in {share.interval}", where)
            out += [(plugin, float(value), own, where) for plugin in _plugin_grid(registry, kind, name, table, where)]
    return out


def _surrogates(registry: Registry, table: Any, where: str) -> list[VictimSpec | None]:
    """The surrogates an attack table names (a grid, like a victim table); [None]: the clean victim."""
    if table is None:
        return [None]
    if not isinstance(table, dict):
        raise ConfigError("'surrogate' must be a table (method, backbone, bits, training keys)", where)
    return list(_parse_victims(registry, table, f"{where}.surrogate"))


def executor_params(registry: Registry, name: str, options: dict, where: str) -> Any:
    """The validated parameters of executor ``name``; an unknown executor or a bad option is a ConfigError."""
    try:
        cls = registry.get("executor", name)
    except PluginError as exc:
        raise ConfigError(str(exc), where) from None
    return build_params(cls.Params, options, f"{where} executor_options")


def with_overrides(spec: BenchmarkSpec, **settings: Any) -> BenchmarkSpec:
    """A copy of ``spec`` with `[benchmark]` settings replaced (CLI flags such as --device), validated
    as the file's own values are."""
    values = params_to_dict(spec.settings) | settings
    return dataclasses.replace(spec, settings=build_params(BenchmarkSettings, values, "command line"))
