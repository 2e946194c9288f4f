"""A cached re-run: the wall time of `hashbench run FILE` when every stage is cached, and where it goes.

    python benchmarks/perf/rerun.py FILE [--runs 3] [--hashbench .venv/bin/hashbench]

Run FILE once to the end first (its results folder must hold every stage). Prints the median wall time of
`hashbench run FILE -q` in a fresh process, then one run in this process with each phase timed through
the real code path (the phases' functions are wrapped, nothing is re-implemented): importing hashbench
and torch, loading the plugins, reading the benchmark file, planning, the preflight (it loads each
dataset), the cache checks (manifests and file checksums), executing the cached stages, collecting the
rows, the terminal table and the report. docs/performance.md has the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from startup import median_seconds  # noqa: E402  (timed the same way as start-up)


def timed(phases: dict[str, float], name: str, module, attribute: str) -> None:
    """Wrap ``module.attribute`` so that its calls add their seconds to ``phases[name]``."""
    original = getattr(module, attribute)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - start

    setattr(module, attribute, wrapper)


def breakdown(file: str) -> dict[str, float]:
    """One cached run of ``file`` in this process, timed phase by phase (seconds)."""
    phases: dict[str, float] = {}
    start = time.perf_counter()
    import hashbench.benchmark as benchmark  # imports torch
    import hashbench.cli as cli
    import hashbench.config as config
    import hashbench.executors.local as local
    import hashbench.plugins as plugins
    import hashbench.report as report

    phases["import (hashbench, torch)"] = time.perf_counter() - start
    wrapped = (
        ("config (read the file)", config, "load_spec"),
        ("  plugins (within config)", plugins, "make_manager"),
        ("plan", benchmark, "build_plan"),
        ("preflight (load datasets)", benchmark, "preflight"),
        ("cache checks (checksums)", benchmark, "stages_to_run"),
        ("execute (all cached)", local, "run_in_order"),
        ("collect rows", report, "collect_rows"),
        ("terminal table", report, "summary_grid"),
        ("report", cli, "_refresh_report"),
    )
    for name, module, attribute in wrapped:
        timed(phases, name, module, attribute)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["run", file, "-q"])
    phases["total in process (after imports)"] = time.perf_counter() - started
    if code != 0 or not re.search(r"^0 stages computed", out.getvalue(), re.M):
        raise SystemExit(f"the run of {file} was not fully cached (exit {code}); run it to the end first")
    # in the order of the run (a nested phase after its parent), not of completion
    order = ["import (hashbench, torch)"] + [name for name, _, _ in wrapped] + ["total in process (after imports)"]
    return {name: phases[name] for name in order if name in phases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hashbench", default=str(Path(sys.executable).parent / "hashbench"),
                        help="the hashbench script to time (default: the one beside this interpreter)")
    args = parser.parse_args()
    phases = breakdown(args.file)  # first: it also refuses a results folder that is not fully cached
    wall, cpu = median_seconds([args.hashbench, "run", args.file, "-q"], args.runs)
    print(f"hashbench run {args.file} -q, every stage cached: {wall:.2f} s wall, {cpu:.2f} s CPU "
          f"(medians of {args.runs})")
    print("one run in process, by phase:")
    for name, seconds in phases.items():
        print(f"  {name:<34} {seconds:7.2f} s")


if __name__ == "__main__":
    main()
