#!/usr/bin/env python
"""Core speed benchmark of activa_ppl: training throughput and FLOP efficiency, prediction
latency and throughput, against DoWhy per dataset and the MACE-TNP baseline, on CPU.

For each ACTIVA architecture preset (default ``small`` and ``paper``) at each dataset shape
(Gauss 2: N=100, d=2; Gauss 8: N=80, d=8; SERGIO: N=30, d=8):

* **matmul peak**: this machine's float32 matmul rate, measured by the script itself at the
  start and at the end of the run (jitted chains of square f32 matmuls, several sizes, all
  cores; best of all), the reference for the FLOP efficiencies below;
* **training**: the compiled chunk of :func:`activa_ppl.train`, built by the library's own
  ``activa_ppl.training.svi_chunks``; FLOPs per SVI step from XLA's cost analysis (a loop's
  body is counted once, so the chunk's count is one step's; cross-checked against a single
  lowered ``svi.update``), chunk length and number of timed chunks sized adaptively to
  ``--target-s`` seconds; tasks/s, achieved GFLOP/s and its fraction of the matmul peak; peak
  RSS of the process that trained (every preset and shape runs in its own subprocess);
* **prediction**: ``FittedActiva.predict`` (one query: latency, and how much of it is the
  compiled forward pass) and ``FittedActiva.predict_batch`` (Q queries: queries/s), with
  randomly initialised parameters (speed does not depend on their values);
* **DoWhy** (what a user would do instead): per dataset, fit a ``gcm.StructuralCausalModel``
  with the true graph (linear additive-noise mechanisms, Gaussian noise) and draw N samples
  from the interventional distribution with ``gcm.interventional_samples``: queries/s;
* **MACE-TNP**: training tasks/s and prediction queries/s of the baseline at the same shape,
  preset of the closest parameter count (both counts printed);
* **goals**: paper preset training >= 60 % of matmul peak, small >= 40 %; one query < 20 ms;
  batched prediction >= 1000x the DoWhy per-dataset rate: met / gap.

Usage::

    python benchmarks/bench_core.py                        # everything (< 10 min on 2 idle cores)
    python benchmarks/bench_core.py --shapes gauss8 --presets paper
    python benchmarks/bench_core.py --quick                # smoke test (tiny presets, < 1 min)
    python benchmarks/bench_core.py --old-path --no-dowhy  # training: issue 17's path vs the old one
    python benchmarks/bench_core.py --json bench.json      # also write every number

Timings on a shared CPU box vary by about +-30 % run to run: compare runs side by side.

This file is the command line; the measurements live in ``benchmarks/bench_lib`` (see
``benchmarks/README.md``), and each model of each cell runs as ``bench_core.py --worker``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from bench_lib.cells import SHAPES, TRAIN_TASKS, closest_mace_preset  # same folder: run as a script
from bench_lib.machine import load_avg, machine_info, matmul_peak, print_result, run_worker, write_json
from bench_lib.report import format_report, goal_rows

def library_env() -> dict:
    """The allocator environment ``activa train`` and the ``inference/`` scripts run in:
    ``GLIBC_TUNABLES`` with glibc's huge-page allocator added (:mod:`activa_ppl.allocator`:
    XLA's CPU backend allocates its temporaries every step, and glibc returning them to the OS
    costs page faults), or this process's own when the library would not add it (opted out with
    ``ACTIVA_NO_HUGETLB=1``, already set, not glibc >= 2.35)."""
    from activa_ppl.allocator import hugetlb_environment

    env = hugetlb_environment(os.environ)
    return {"GLIBC_TUNABLES": (env or os.environ).get("GLIBC_TUNABLES", "")}


def plain_env() -> dict:
    """``GLIBC_TUNABLES`` without the huge-page allocator: the allocator before issue 17."""
    tunables = os.environ.get("GLIBC_TUNABLES", "").split(":")
    return {"GLIBC_TUNABLES": ":".join(t for t in tunables if t and not t.startswith("glibc.malloc.hugetlb"))}


def worker(kind: str, spec: dict, env: dict | None = None) -> dict:
    """One model of one cell in a fresh process (``bench_core.py --worker KIND SPEC``), so that
    compile caches are not shared and its peak RSS is its own. ``env``: the allocator
    environment (default :func:`library_env`, the library's own)."""
    return run_worker(__file__, ["--worker", kind, json.dumps(spec)], env=library_env() if env is None else env,
                      label=f"{kind} {spec.get('preset')}@{spec.get('shape')}")


def _worker_main(kind: str, spec: dict) -> None:
    if kind == "activa":
        from bench_lib.activa_worker import worker_activa as measure
    else:
        from bench_lib.mace_worker import worker_mace as measure
    result = measure(spec)
    result["glibc_tunables"] = os.environ.get("GLIBC_TUNABLES", "")
    print_result(result)


# --------------------------------------------------------------------------- arguments
def parse_args(argv=None):
    from activa_ppl.config import ActivaConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default=None,
                   help="comma-separated ActivaConfig presets (default small,paper; tiny with --quick)")
    p.add_argument("--shapes", default=None,
                   help=f"comma-separated shapes from {sorted(SHAPES)} (default all; gauss2 with --quick)")
    p.add_argument("--shape", dest="shapes", help=argparse.SUPPRESS)  # the former single-shape option
    p.add_argument("--batch-size", type=int, default=32, help="tasks per training step (default 32)")
    p.add_argument("--steps-per-chunk", type=int, default=None,
                   help="SVI steps per compiled chunk (default: sized from the step's FLOPs to ~0.5 s)")
    p.add_argument("--target-s", type=float, default=None,
                   help="seconds of timed training per model and cell (default 5; 0.5 with --quick)")
    p.add_argument("--predict-calls", type=int, default=None,
                   help="timed single-query predict calls (default 30; 5 with --quick)")
    p.add_argument("--predict-batch", type=int, default=None,
                   help="queries per predict_batch call (default 256; 8 with --quick)")
    p.add_argument("--batch-repeats", type=int, default=None,
                   help="most timed predict_batch calls (default 5; 2 with --quick)")
    p.add_argument("--dowhy-datasets", type=int, default=None,
                   help="datasets fitted with DoWhy per shape (default 5; 2 with --quick)")
    p.add_argument("--train-tasks", type=int, default=TRAIN_TASKS,
                   help=f"size of the simulated training set (default {TRAIN_TASKS})")
    p.add_argument("--old-path", action="store_true",
                   help="also time ACTIVA's training path before issue 17 side by side, same cells: the "
                        "observational embedding computed in model and guide (svi_chunks(shared_embedding="
                        "False)), Flax's softmax attention (ActivaConfig(attention='softmax')) and glibc's "
                        "allocator without huge pages")
    p.add_argument("--no-mace", action="store_true", help="skip the MACE-TNP baseline")
    p.add_argument("--no-dowhy", action="store_true", help="skip DoWhy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    p.add_argument("--json", metavar="PATH", default=None, help="also write all numbers as JSON")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {"presets": "tiny" if quick else "small,paper", "shapes": "gauss2" if quick else ",".join(SHAPES),
                "target_s": 0.5 if quick else 5.0, "predict_calls": 5 if quick else 30,
                "predict_batch": 8 if quick else 256, "batch_repeats": 2 if quick else 5,
                "dowhy_datasets": 2 if quick else 5}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if quick:
        args.batch_size = min(args.batch_size, 4)
        args.train_tasks = min(args.train_tasks, 16)
    for k in ("batch_size", "predict_calls", "predict_batch", "batch_repeats", "train_tasks", "dowhy_datasets"):
        if getattr(args, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1")
    if args.steps_per_chunk is not None and not 1 <= args.steps_per_chunk <= 1000:
        p.error("--steps-per-chunk must be in 1..1000")
    if not args.target_s > 0:
        p.error("--target-s must be positive")
    args.presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for name in args.presets:
        try:
            ActivaConfig.preset(name)
        except ValueError as e:
            p.error(str(e))
    for name in args.shapes:
        if name not in SHAPES:
            p.error(f"unknown shape {name!r}; choose from {sorted(SHAPES)}")
    return args


def _settings(args) -> dict:
    return {
        "presets": ",".join(args.presets), "shapes": ",".join(args.shapes), "batch_size": args.batch_size,
        "steps_per_chunk": args.steps_per_chunk or "auto", "target_s": args.target_s,
        "predict_calls": args.predict_calls, "predict_batch": args.predict_batch,
        "batch_repeats": args.batch_repeats, "dowhy_datasets": args.dowhy_datasets,
        "train_tasks": args.train_tasks, "seed": args.seed, "quick": args.quick, "old_path": args.old_path,
    }


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _cells(args, peak_gflops: float) -> list[dict]:
    """Every preset at every shape: ACTIVA, then MACE-TNP of about its size, each in its own process."""
    cells = []
    for shape in args.shapes:
        d = SHAPES[shape][1]
        for preset in args.presets:
            spec = {"preset": preset, "shape": shape, "quick": args.quick, "seed": args.seed,
                    "batch_size": args.batch_size, "train_tasks": args.train_tasks,
                    "steps_per_chunk": args.steps_per_chunk, "target_s": args.target_s,
                    "predict_calls": args.predict_calls, "predict_batch": args.predict_batch,
                    "batch_repeats": args.batch_repeats, "peak_gflops": peak_gflops}
            t0 = time.perf_counter()
            _log(f"ACTIVA {preset} @ {shape} ...")
            cell = {"spec": spec, "activa": worker("activa", spec)}
            if args.old_path:
                _log(f"ACTIVA {preset} @ {shape}, old training path ...")
                cell["activa_old"] = worker("activa", {**spec, "shared_embedding": False, "attention": "softmax"},
                                            env=plain_env())
            if not args.no_mace:
                mace_preset, _ = closest_mace_preset(cell["activa"]["num_params"], d)
                _log(f"MACE-TNP {mace_preset} @ {shape} ...")
                cell["mace"] = worker("mace", {**spec, "preset": mace_preset})
            _log(f"{preset} @ {shape} done in {time.perf_counter() - t0:.0f} s")
            cells.append(cell)
    return cells


def _dowhy(args) -> list[dict]:
    from bench_lib.dowhy_baseline import bench_dowhy

    rows = []
    for shape in args.shapes:
        _log(f"DoWhy @ {shape} ...")
        rows.append(bench_dowhy(shape, args.dowhy_datasets, args.seed, route="linear"))
        rows.append(bench_dowhy(shape, max(1, args.dowhy_datasets // 2), args.seed, route="auto"))
    return rows


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:  # a subprocess of worker()
        _worker_main(argv[1], json.loads(argv[2]))
        return 0
    args = parse_args(argv)
    start = time.perf_counter()
    info = machine_info()
    sizes = (256, 512) if args.quick else (256, 512, 1024, 2048)
    _log("matmul peak ...")
    peak_start = matmul_peak(sizes, target_s=0.3 if args.quick else 1.0)
    cells = _cells(args, peak_start["gflops"])
    allocator = None
    if not args.quick and cells and library_env() != plain_env():
        # The same first cell again, side by side, without glibc's huge-page allocator.
        spec = cells[0]["spec"]
        _log(f"ACTIVA {spec['preset']} @ {spec['shape']} with {plain_env()} ...")
        allocator = {"env": plain_env(), "activa": worker("activa", spec, env=plain_env())}
    dowhy = [] if args.no_dowhy else _dowhy(args)
    _log("matmul peak (again) ...")
    peak_end = matmul_peak(sizes, target_s=0.3 if args.quick else 1.0)
    peak = max(peak_start["gflops"], peak_end["gflops"])
    if allocator is not None:
        allocator["train_peak_fraction"] = allocator["activa"]["train"]["gflops"] / peak
    for cell in cells:
        for key, name in (("activa", "train"), ("mace", "mace_train"), ("activa_old", "old_train")):
            if key in cell and cell[key]["train"].get("gflops"):
                cell[f"{name}_peak_fraction"] = cell[key]["train"]["gflops"] / peak
    report = {"machine": info, "settings": _settings(args),
              "matmul_peak": {"gflops": peak, "start": peak_start, "end": peak_end},
              "cells": cells, "allocator": allocator, "dowhy": dowhy, "load_avg_end": load_avg(),
              "argv": argv}
    report["goals"] = goal_rows(report)
    report["total_s"] = time.perf_counter() - start
    print(format_report(report))
    print(f"\ntotal benchmark time {report['total_s']:.0f} s")
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
