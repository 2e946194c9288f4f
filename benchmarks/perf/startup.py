"""CLI start-up: the median wall time of N runs of a few `hashbench` commands, each in a fresh process.

    python benchmarks/perf/startup.py [--runs 5] [--hashbench .venv/bin/hashbench]

Also prints the median time of `python -c "import torch"` on the same interpreter, the floor of any
command that needs torch. Run it from the repository root (the plan command reads benchmarks/smoke.toml).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (
    ["--help"],
    ["plugins"],
    ["plan", "benchmarks/smoke.toml"],
)


def median_seconds(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hashbench", default=str(Path(sys.executable).parent / "hashbench"),
                        help="the hashbench script to time (default: the one beside this interpreter)")
    args = parser.parse_args()
    rows = [("python -c 'import torch'", median_seconds([sys.executable, "-c", "import torch"], args.runs))]
    rows += [(f"hashbench {' '.join(c)}", median_seconds([args.hashbench, *c], args.runs)) for c in COMMANDS]
    width = max(len(name) for name, _ in rows)
    print(f"median of {args.runs} runs each")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:6.2f} s")


if __name__ == "__main__":
    main()
