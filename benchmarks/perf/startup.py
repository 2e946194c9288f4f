"""CLI start-up: the median wall time and CPU time (user + system) of N runs of a few `hashbench`
commands, each in a fresh process. On a shared machine the CPU time is the steadier of the two: it does
not count the time the process waited for a core.

    python benchmarks/perf/startup.py [--runs 5] [--hashbench .venv/bin/hashbench]

Also prints the median time of `python -c "import torch"` on the same interpreter, the floor of any
command that needs torch. Run it from the repository root (the plan command reads benchmarks/smoke.toml).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import os
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (
    ["--help"],
    ["fetch", "--list"],
    ["plugins"],
    ["plan", "benchmarks/smoke.toml"],
)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_seconds(argv: list[str], runs: int) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds) of ``runs`` runs of ``argv``."""
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), _children_cpu()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall.append(time.perf_counter() - start)
        cpu.append(_children_cpu() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hashbench", default=str(Path(sys.executable).parent / "hashbench"),
                        help="the hashbench script to time (default: the one beside this interpreter)")
    args = parser.parse_args()
    rows = [("python -c 'import torch'", median_seconds([sys.executable, "-c", "import torch"], args.runs))]
    rows += [(f"hashbench {' '.join(c)}", median_seconds([args.hashbench, *c], args.runs)) for c in COMMANDS]
    width = max(len(name) for name, _ in rows)
    print(f"median of {args.runs} runs each (load average {os.getloadavg()[0]:.1f} at the end)")
    print(f"{'':<{width}}  {'wall':>8}  {'CPU':>8}")
    for name, (wall, cpu) in rows:
        print(f"{name:<{width}}  {wall:6.2f} s  {cpu:6.2f} s")


if __name__ == "__main__":
    main()
