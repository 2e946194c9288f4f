"""The ``hashbench`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .errors import HashbenchError


def _load_spec(args: argparse.Namespace):
    """The benchmark file of ``run`` / ``plan`` with the command line's overrides, and the executor options."""
    from .config import load_spec, with_overrides
    from .errors import ConfigError

    spec = load_spec(args.file)
    overrides = {k: v for k, v in {"device": args.device, "results": args.results}.items() if v is not None}
    if overrides:
        spec = with_overrides(spec, **overrides)
    options = {"address": args.address} if args.address else {}
    if options and (args.executor or spec.settings.executor) != "ray":
        raise ConfigError("--address is an option of the ray executor; add `--executor ray`")
    return spec, options


def _resume_command(args: argparse.Namespace) -> str:
    """The command that resumes this run: the same file and the same overrides."""
    import shlex

    words = ["hashbench", "run", args.file]
    for flag in ("results", "device", "executor", "address"):
        if getattr(args, flag) is not None:
            words += [f"--{flag}", getattr(args, flag)]
    return shlex.join(words)


def _cmd_run(args: argparse.Namespace) -> int:
    from .benchmark import run_benchmark
    from .report import collect_rows, summary_grid, summary_tables

    spec, options = _load_spec(args)
    try:
        result = run_benchmark(spec, executor=args.executor, only=args.only, force=args.force,
                               executor_options=options, progress_bar=not args.quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished stages are kept; run `{_resume_command(args)}` again to resume.",
              file=sys.stderr)
        return 130
    evaluate_keys = [s.key for s in result.plan.evaluations()]
    frame = collect_rows(spec.settings.results, evaluate_keys)
    print(summary_tables(frame) if args.long else summary_grid(frame))
    rebuilt = [o for o in result.outcomes.values() if o.rebuilt]
    if rebuilt:
        print("\nRecomputed although cached:\n" + "\n".join(f"  {result.plan.stages[o.stage_id].label}: {o.rebuilt}" for o in rebuilt))
    print(f"\n{result.count('done')} stages computed, {result.count('cached')} cached, in {result.seconds:.1f}s. "
          f"Results: {spec.settings.results}  (leaderboard: hashbench export {spec.settings.results} --leaderboard FILE.csv"
          f"{'' if args.long else '; every metric: --long'})")
    if not args.no_report and not frame.empty:
        _refresh_report(Path(spec.settings.results))
    if result.failures:
        from .tables import Table

        rows = [[result.plan.stages[o.stage_id].label, o.status, (o.error or "").splitlines()[0][:160]]
                for o in result.failures]
        print("\nFailures:\n" + Table(["stage", "status", "error"], rows).to_markdown())
        return 1
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from .benchmark import matching, plan_status, select_stages
    from .plan import build_plan
    from .store import Store
    from .tables import Table

    spec, _ = _load_spec(args)
    plan = build_plan(spec)
    status = plan_status(plan, Store(spec.settings.results))
    selected = select_stages(plan, args.only)
    for sid in matching(plan, args.force) & selected if args.force else ():
        status[sid] = "to run (forced)"
    if args.estimate:
        return _print_estimate(args, spec, plan, {sid: status[sid] for sid in selected})
    rows = [[s.kind, s.key, status[s.id], s.label] for s in plan.ordered() if s.id in selected]
    print(Table(["kind", "key", "status", "stage"], rows).to_markdown())
    todo = sum(1 for row in rows if row[2] != "cached")
    print(f"\n{len(rows)} stages: {len(rows) - todo} cached, {todo} to run")
    return 0


def _print_estimate(args: argparse.Namespace, spec, plan, status: dict[str, str]) -> int:
    """`plan --estimate`: stages per kind and their estimated compute (hashbench.estimate)."""
    from .devices import resolve_device
    from .errors import ConfigError
    from .estimate import ThroughputTable, estimate_plan, format_estimate, parse_throughput

    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1; got {args.workers}")
    table = ThroughputTable(resolve_device(args.device or spec.settings.device), parse_throughput(args.throughput))
    todo = {stage_id for stage_id, state in status.items() if state != "cached"}
    print(format_estimate(estimate_plan(plan, todo, table), args.workers))
    if len(todo) < len(status):
        print(f"{len(status) - len(todo)} cached stages are not counted.")
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import HOOK_FOR_KIND, get_registry
    from .tables import Table

    registry = get_registry()
    described = [registry.describe(info) for info in registry.infos(args.kind)]
    if args.json:
        print(json.dumps(described, indent=2, default=str))
        return 0
    for kind in sorted({d["kind"] for d in described}, key=list(HOOK_FOR_KIND).index):
        rows = []
        for d in (d for d in described if d["kind"] == kind):
            params = "; ".join(f"{p['name']}={p['default']!r}" for p in d["parameters"]) or "-"
            extra = ""
            if "threat_model" in d:
                extra = ", ".join(k for k, v in d["threat_model"].items() if v) or "poison-label"
            elif kind == "defense":
                extra = f"{d['level']}/{d['role']}"
            rows.append([d["name"], d["version"], d["source"], extra, d["summary"], params])
        print(f"\n{kind}s")
        print(Table(["name", "version", "source", "traits", "summary", "parameters"], rows).to_text())
    if args.verbose:
        for d in described:
            print(f"\n{d['kind']} {d['name']}: {d['summary']}")
            for p in d["parameters"]:
                print(f"  {p['name']} ({p['type']}, default {p['default']!r}): {p['doc']}")
    return 0


def _exporter_options(settings: list[str] | None) -> dict[str, dict]:
    """``--set NAME.KEY=VALUE`` as ``{exporter name: {key: value}}``; a value is read as TOML (3, true,
    "text"), and as text when it is not TOML (.3f)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    from .errors import ConfigError

    options: dict[str, dict] = {}
    for setting in settings or []:
        target, sep, text = setting.partition("=")
        name, dot, key = target.partition(".")
        if not (sep and dot and name and key):
            raise ConfigError(f"--set {setting}: write NAME.KEY=VALUE, e.g. --set md.digits=3")
        try:
            value = tomllib.loads(f"value = {text}")["value"]
        except tomllib.TOMLDecodeError:
            value = text
        options.setdefault(name, {})[key] = value
    return options


def _build_exporter(cls: type, options: dict[str, dict]):
    """An exporter with its parameters (``--set``), validated like any plugin's."""
    from .params import build_params

    return cls(build_params(cls.Params, options.get(cls.name, {}), f"--set {cls.name}.*"))


def _exporter_for(path: Path, options: dict[str, dict]):
    """The exporter whose suffix ``path`` ends with (``--leaderboard lb.md`` writes Markdown)."""
    from .errors import ConfigError
    from .plugins import get_registry

    if path.is_dir():
        raise ConfigError(f"--leaderboard {path} is a folder; give a file name such as {path / 'leaderboard.csv'}")
    by_suffix = {info.cls.suffix: info.cls for info in get_registry().infos("exporter") if info.cls.suffix}
    if path.suffix not in by_suffix:
        raise ConfigError(f"--leaderboard {path}: the file name chooses the format; end it with "
                          f"{', '.join(sorted(by_suffix))} (e.g. leaderboard.csv)")
    return _build_exporter(by_suffix[path.suffix], options)


def _cmd_export(args: argparse.Namespace) -> int:
    from .files import atomic_output
    from .plugins import get_registry
    from .report import leaderboard, load_results

    results = Path(args.results)
    registry = get_registry()
    options = _exporter_options(args.set)
    # every destination, format and parameter is checked before anything is read or written
    for name in options:
        registry.get("exporter", name)
    jobs = [(_exporter_for(Path(args.leaderboard), options), Path(args.leaderboard))] if args.leaderboard else []
    for fmt in args.format or []:
        exporter = _build_exporter(registry.get("exporter", fmt), options)
        jobs.append((exporter, Path(args.output or results) / f"leaderboard{exporter.suffix}"))
    if not jobs:
        jobs.append((_build_exporter(registry.get("exporter", "csv"), options), results / "leaderboard.csv"))
    frame = load_results(results)
    board = leaderboard(frame)
    for exporter, path in jobs:
        with atomic_output(path) as tmp:
            exporter.export(board, tmp)
    print(f"{len(board)} configurations ({len(frame)} rows over seeds) -> {', '.join(str(p) for _, p in jobs)}")
    return 0


def _cmd_new(args: argparse.Namespace) -> int:
    from .scaffold import scaffold

    root = scaffold(args.kind, args.name, Path(args.output) if args.output else None, force=args.force)
    print(f"wrote {args.kind} plugin '{args.name}' to {root}\n"
          f"next: pip install -e {root} && hashbench plugins --kind {args.kind} && pytest {root / 'tests'}")
    return 0


def _refresh_report(results: Path) -> None:
    """Rewrite the report of a run's results folder when it is older than the results. A report that is
    up to date is kept: drawing it is most of a cached re-run's time (docs/performance.md)."""
    from .report_html import write_report
    from .report_sources import staleness

    page = results / "report.html"
    if (results / "report.md").is_file() and not staleness(results, page):
        print(f"Report: {page} is up to date with the results (redraw it with `hashbench report {results}`)")
        return
    print("writing the report ...", file=sys.stderr)
    try:
        written = write_report(results)
    except HashbenchError as exc:  # the run's results are kept whatever happens to its report
        print(f"hashbench: warning: the report was not written: {exc}", file=sys.stderr)
        return
    print(f"Report: {written[1]} (and {written[0].name}); turn this off with --no-report")


def _cmd_report(args: argparse.Namespace) -> int:
    from .report_html import write_report

    if args.check:
        from .report_sources import staleness

        page = Path(args.output or args.results) / "report.html"
        reasons = staleness(Path(args.results), page)
        if reasons:
            print(f"{page} is stale:\n" + "\n".join(f"  - {r}" for r in reasons) +
                  f"\nrefresh it with: hashbench report {args.results}" + (f" --output {args.output}" if args.output else ""))
            return 1
        print(f"{page} is up to date with {args.results}")
        return 0
    written = write_report(Path(args.results), Path(args.output) if args.output else None)
    print("wrote " + ", ".join(str(path) for path in written))
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .fetch import CATALOGUE, catalogue_rows, fetch
    from .tables import Table

    if args.list or not args.name:
        print(Table(["name", "size", "goes to", "what"], catalogue_rows(args.root)).to_text())
        print("\nhashbench fetch NAME [--root DIR]; see docs/datasets.md")
        return 0
    fetch(CATALOGUE[args.name], args.root, progress=not args.quiet)
    return 0


BUILTIN_COMMANDS = ("run", "plan", "plugins", "export", "new", "report", "fetch")


def _wants_plugin_commands(argv: list[str]) -> bool:
    """Whether parsing ``argv`` needs the commands plugins add, which means importing every plugin (and
    torch: seconds). Not for a built-in command; for another word, yes (it may be a plugin's command); with
    no command (``hashbench --help``) only when a package other than hashbench installs plugins, as the
    built-ins add no command (tests/test_plugins.py checks it)."""
    from .plugins import third_party_plugins_installed

    command = next((word for word in argv if not word.startswith("-")), None)
    if command is None:
        return third_party_plugins_installed()
    return command not in BUILTIN_COMMANDS


def build_parser(plugin_commands: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hashbench", description=__doc__,
                                     epilog="Installed plugins may add commands (docs/plugins.md, Hooks).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each training epoch")
    sub = parser.add_subparsers(dest="command", required=True)

    # `plan` takes the options of `run`, so it shows exactly the stages that `run` with them would run
    run_options = argparse.ArgumentParser(add_help=False)
    run_options.add_argument("file")
    run_options.add_argument("--device", help="override [benchmark] device (auto | cpu | cuda | cuda:N)")
    run_options.add_argument("--results", help="override [benchmark] results directory")
    run_options.add_argument("--executor", help="override [benchmark] executor (local | ray)")
    run_options.add_argument("--address", help="ray executor: the Ray cluster to join (\"auto\" inside a cluster); default: start Ray here")
    run_options.add_argument("--only", nargs="+", metavar="PATTERN", help="run only matching stages (kind, key prefix or label glob) and what they need")
    run_options.add_argument("--force", nargs="+", metavar="PATTERN", help="recompute matching stages even when cached")

    run = sub.add_parser("run", parents=[run_options], help="run a benchmark file (resumes: finished stages are reused)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    run.add_argument("--long", action="store_true", help="print every metric per row instead of the attack x defense grid of t-MAP")
    run.add_argument("--no-report", action="store_true", help="do not write or refresh report.md / report.html at the end")
    run.set_defaults(func=_cmd_run)

    plan = sub.add_parser("plan", parents=[run_options], help="list the stages of a benchmark and which are cached")
    plan.add_argument("--estimate", action="store_true", help="instead of the stages: their count and estimated compute per kind")
    plan.add_argument("--workers", type=int, default=1, help="--estimate: how the compute splits over N workers (Ray)")
    plan.add_argument("--throughput", metavar="K=V,...", help="--estimate: your machine's train=, encode= (images/s) "
                      "and retrieval= (pairs/s) instead of measuring here")
    plan.set_defaults(func=_cmd_plan)

    from .plugins import HOOK_FOR_KIND

    plugins = sub.add_parser("plugins", help="list plugins with their parameters")
    plugins.add_argument("--kind", choices=list(HOOK_FOR_KIND))
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=_cmd_plugins)

    export = sub.add_parser("export", help="write the leaderboard (mean and std over seeds)")
    export.add_argument("results", help="a results directory")
    export.add_argument("--leaderboard", metavar="FILE.csv", help="write the leaderboard here, in the format its suffix names (.csv, .md, .json)")
    export.add_argument("--format", action="append", help="also write leaderboard.<fmt> (csv, md, json)")
    export.add_argument("--output", help="folder for --format files (default: the results directory)")
    export.add_argument("--set", action="append", metavar="NAME.KEY=VALUE",
                        help="a parameter of exporter NAME, e.g. md.digits=3 (`hashbench plugins --kind exporter`)")
    export.set_defaults(func=_cmd_export)

    new = sub.add_parser("new", help="scaffold a plugin package (entry point, Params, README, conformance test)")
    new.add_argument("kind", choices=("attack", "defense", "method", "dataset"))
    new.add_argument("name", help="the plugin's name (lower case, digits, '_')")
    new.add_argument("--output", help="folder to write (default: ./hashbench-NAME)")
    new.add_argument("--force", action="store_true", help="write into a non-empty folder")
    new.set_defaults(func=_cmd_new)

    report = sub.add_parser("report", help="write report.md and a self-contained report.html with tables, image grids and plots")
    report.add_argument("results", help="a results directory")
    report.add_argument("--output", help="folder for the report (default: the results directory)")
    report.add_argument("--check", action="store_true", help="write nothing; say whether the report is older than the "
                        "results (exit code 1 when it is)")
    report.set_defaults(func=_cmd_report)

    from .fetch import CATALOGUE

    fetch = sub.add_parser("fetch", help="download a public dataset or weight file, check its published checksum "
                                         "and unpack it where hashbench reads it (run never downloads)")
    fetch.add_argument("name", nargs="?", choices=list(CATALOGUE), help="what to fetch (none: list them)")
    fetch.add_argument("--root", help="folder to put it in (weights: the TORCH_HOME to use); default: where "
                                      "the dataset or torch looks by default")
    fetch.add_argument("--list", action="store_true", help="list what can be fetched, where it goes and its size")
    fetch.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    fetch.set_defaults(func=_cmd_fetch)

    if plugin_commands:
        from .plugins import get_registry

        try:
            get_registry().pm.hook.register_commands(cli=sub)
        except HashbenchError:
            pass  # a broken plugin is reported when it is used
    for command in sub.choices.values():  # `-v` is accepted after the subcommand too
        if "-v" not in command._option_string_actions:
            command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                 help="log each training epoch")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else argv
        parser = build_parser(plugin_commands=_wants_plugin_commands(argv))
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
        if getattr(args, "quiet", False):
            os.environ["HASHBENCH_QUIET"] = "1"
        return int(args.func(args) or 0)
    except HashbenchError as exc:
        print(f"hashbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished stages are kept; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
