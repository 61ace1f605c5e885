"""Start-up time of the ``activa`` command: ``--help``, ``models`` and two identical ``predict`` runs.

Each command runs in a fresh process (what a user at a terminal pays), ``--repeats`` times; the
report gives the median wall time. The two ``predict`` runs share a fresh JAX persistent
compilation cache (``ACTIVA_CACHE_DIR`` pointed at a temporary folder), so the first one
compiles and the second one reads the compiled prediction from the cache::

    python benchmarks/bench_startup.py                 # report on stdout
    python benchmarks/bench_startup.py --json out.json # also every timing as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _time(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return elapsed


def main(argv=None) -> dict:
    """Run the measurements and print the report; returns the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per command (default 3)")
    parser.add_argument("--model", default="gauss2", help="zoo model of the predict runs (default gauss2)")
    parser.add_argument("--json", default=None, help="also write the timings to this JSON file")
    args = parser.parse_args(argv)
    activa = [sys.executable, "-m", "activa_ppl.cli"]
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, ACTIVA_CACHE_DIR=str(Path(tmp) / "cache"))
        csv = Path(tmp) / "obs.csv"
        lines = ["X0,X1"] + [f"{0.1 * i:.3f},{0.05 * i - 2:.3f}" for i in range(100)]
        csv.write_text("\n".join(lines) + "\n")
        results["activa --help"] = [_time(activa + ["--help"], env) for _ in range(args.repeats)]
        results["activa models"] = [_time(activa + ["models"], env) for _ in range(args.repeats)]
        predict = activa + ["predict", "--model", args.model, "--data", str(csv), "--target", "X0",
                            "--out", str(Path(tmp) / "samples.csv"), "--force"]
        results["activa predict (first, empty cache)"] = [_time(predict, env)]
        results["activa predict (second, same shape)"] = [_time(predict, env) for _ in range(args.repeats)]
    print(f"{'command':40s} {'median s':>9s}  runs")
    for name, times in results.items():
        print(f"{name:40s} {statistics.median(times):9.2f}  {', '.join(f'{t:.2f}' for t in times)}")
    first = results["activa predict (first, empty cache)"][0]
    second = statistics.median(results["activa predict (second, same shape)"])
    print(f"second predict is {first / second:.1f}x faster than the first")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
