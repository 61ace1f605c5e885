#!/usr/bin/env python
"""ACTIVA training throughput on a GPU, float32 and bfloat16 matmuls, with the paper's
schedules projected: the Python side of ``benchmarks/gpu_run.sh``.

For each dataset shape (Gauss 2: N=100, d=2; Gauss 8: N=80, d=8; SERGIO: N=30, d=8) and each
``ActivaConfig.matmul_dtype`` (``float32``, ``bfloat16``) it compiles the library's own training
chunk (``activa_ppl.training.svi_chunks``: minibatches drawn inside the compiled loop, Adam +
clipping, ``num_particles`` ELBO particles, the shared observational embedding), runs one
warm-up chunk and times chunks for ``--target-s`` seconds, and records:

* tasks/s (median chunk), ms per step, XLA's FLOPs per step (cost analysis of the compiled
  chunk), the achieved TFLOP/s and its fraction of the device's peak: measured here (a jitted
  chain of square matmuls in the same dtype) and, for known devices, nominal (dense tensor-core
  figures; float32 against TF32, which XLA uses for float32 dots on NVIDIA GPUs by default);
* the projected wall time of the paper's schedules at that rate: 5,000 epochs of 2,400 SCMs x 2
  queries (the 2-variable sets, Gauss 2 shape) and 1,000 epochs of 16,000 SCMs x 8 queries (the
  8-variable sets, Gauss 8 and SERGIO shapes);
* the first step's loss in both dtypes (the same initial state and minibatch), and their
  relative difference.

The JSON (``--out``) is rewritten after every cell, so a run stopped by its time limit keeps
what it measured; cells that would not fit in ``--budget-s`` are listed as skipped.

``--cpu-dry-run`` runs every code path at tiny sizes on the CPU (tiny preset, small shapes,
sub-second timings), for the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from bench_lib.machine import block, matmul_peak, timed_repeats, xla_cost  # same folder: run as a script

#: (N samples, d variables) of the paper's dataset shapes, and the dry run's stand-ins.
SHAPES = {"gauss8": (80, 8), "sergio": (30, 8), "gauss2": (100, 2)}
DRY_SHAPES = {"gauss8": (8, 3), "sergio": (6, 3), "gauss2": (10, 2)}
#: The paper's training schedules: epochs x SCMs x queries per SCM, and the shapes they train.
SCHEDULES = {
    "2-variable (5,000 epochs x 2,400 SCMs x 2 queries)": (5000, 2400, 2, ("gauss2",)),
    "8-variable (1,000 epochs x 16,000 SCMs x 8 queries)": (1000, 16000, 8, ("gauss8", "sergio")),
}
#: Dense tensor-core peaks, FLOP/s, by device name fragment (float32: TF32).
NOMINAL_PEAKS = {
    "H200": {"float32": 494.7e12, "bfloat16": 989.4e12},
    "H100": {"float32": 494.7e12, "bfloat16": 989.4e12},
    "A100": {"float32": 156e12, "bfloat16": 312e12},
    "L40S": {"float32": 183e12, "bfloat16": 362e12},
}


def parse_args(argv=None):
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes on the CPU (a test of the script)")
    p.add_argument("--out", default=None,
                   help="JSON to write (default: $OUT/gpu_bench.json, or gpu_bench.json without $OUT)")
    p.add_argument("--preset", default=None, help="ActivaConfig preset (default paper; tiny with --cpu-dry-run)")
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated, in order of priority")
    p.add_argument("--dtypes", default="float32,bfloat16", help="ActivaConfig.matmul_dtype values")
    p.add_argument("--batch-size", type=int, default=None, help="tasks per step (default 32; 4 dry)")
    p.add_argument("--train-tasks", type=int, default=None, help="simulated training tasks (default 512; 16 dry)")
    p.add_argument("--steps-per-chunk", type=int, default=None, help="steps per compiled chunk (default 20; 2 dry)")
    p.add_argument("--target-s", type=float, default=None, help="timed seconds per cell (default 8; 0.2 dry)")
    p.add_argument("--budget-s", type=float, default=400.0,
                   help="skip cells that would end after this many seconds of the run (default 400)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    dry = args.cpu_dry_run
    for name, full, tiny in (("preset", "paper", "tiny"), ("batch_size", 32, 4), ("train_tasks", 512, 16),
                             ("steps_per_chunk", 20, 2), ("target_s", 8.0, 0.2)):
        if getattr(args, name) is None:
            setattr(args, name, tiny if dry else full)
    if args.out is None:
        args.out = os.path.join(os.environ.get("OUT") or ".", "gpu_bench.json")
    args.shapes = [s for s in args.shapes.split(",") if s]
    args.dtypes = [s for s in args.dtypes.split(",") if s]
    unknown = [s for s in args.shapes if s not in SHAPES]
    if unknown:
        p.error(f"unknown shapes {unknown}; choose from {sorted(SHAPES)}")
    return args


def _log(msg: str) -> None:
    print(f"[gpu_bench] {msg}", file=sys.stderr, flush=True)


def _nominal_peak(device_kind: str, dtype: str) -> float | None:
    for name, peaks in NOMINAL_PEAKS.items():
        if name in device_kind:
            return peaks.get(dtype)
    return None


def _schedule(shape: str, tasks_per_s: float) -> dict:
    for name, (epochs, scms, queries, shapes) in SCHEDULES.items():
        if shape in shapes:
            tasks = epochs * scms * queries
            seconds = tasks / tasks_per_s
            return {"name": name, "tasks": tasks, "projected_s": seconds, "projected_h": seconds / 3600,
                    "projected_days": seconds / 86400}
    return {}


def measure_cell(args, shape: str, dtype: str, n: int, d: int) -> dict:
    """One shape in one matmul dtype: compile, warm up, time; see the module docstring."""
    import jax
    import numpy as np

    from activa_ppl import simulate
    from activa_ppl.config import ActivaConfig, TrainConfig
    from activa_ppl.model import Activa
    from activa_ppl.training import svi_chunks, task_arrays

    activa = Activa(ActivaConfig.preset(args.preset, matmul_dtype=dtype))
    num_scms = max(4, -(-args.train_tasks // d) * 10 // 8 + 1)  # 80 % of the SCMs are training SCMs
    data = simulate.linear_dataset(num_scms=num_scms, num_vars=d, noise="gauss", num_samples=n, seed=args.seed)
    arrays = task_arrays(data.tasks("train"))
    num_tasks = int(arrays[0].shape[0])
    batch = min(args.batch_size, num_tasks)
    config = TrainConfig(batch_size=batch, eval_every=args.steps_per_chunk, seed=args.seed)
    chunks = svi_chunks(activa, config, num_tasks)
    state = chunks.init(*arrays)
    call = (np.int32(args.steps_per_chunk), chunks.batch_key, *arrays)
    t0 = time.perf_counter()
    compiled = chunks.compiled.lower(state, *call).compile()
    compile_s = time.perf_counter() - t0
    try:
        flops = xla_cost(compiled.cost_analysis())  # XLA counts the loop body once: one step's FLOPs
    except Exception:  # pragma: no cover - backend without cost analysis
        flops = None
    t0 = time.perf_counter()
    state, losses = block(compiled(state, *call))
    warmup_s = time.perf_counter() - t0
    first_loss = float(np.asarray(losses)[0])  # step 0: the same state and minibatch in both dtypes

    def one_chunk():
        nonlocal state, losses
        state, losses = block(compiled(state, *call))

    chunk_s = timed_repeats(one_chunk, args.target_s, 3, 2000)
    step_s = statistics.median(chunk_s) / args.steps_per_chunk
    tasks_per_s = batch / step_s
    return {
        "shape": shape, "N": n, "d": d, "matmul_dtype": dtype, "preset": args.preset, "batch_size": batch,
        "num_particles": activa.config.num_particles, "train_tasks": num_tasks,
        "steps_per_chunk": args.steps_per_chunk, "timed_chunks": len(chunk_s), "compile_s": compile_s,
        "warmup_chunk_s": warmup_s, "median_step_ms": 1e3 * step_s, "tasks_per_s": tasks_per_s,
        "gflop_per_step": flops / 1e9 if flops else None,
        "tflops": flops / step_s / 1e12 if flops else None,
        "first_step_loss": first_loss, "finite": bool(np.all(np.isfinite(np.asarray(losses)))),
        "schedule": _schedule(shape, tasks_per_s), "device": str(jax.devices()[0]),
    }


def _write(path: str, report: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, path)


def main(argv=None) -> int:
    """Run the benchmark and write the JSON; returns the exit status."""
    args = parse_args(argv)
    if args.cpu_dry_run:
        os.environ["JAX_PLATFORMS"] = "cpu"  # before JAX is imported
    start = time.perf_counter()
    import jax

    from activa_ppl.config import ActivaConfig

    ActivaConfig.preset(args.preset)  # an unknown preset fails here, before any work
    device = jax.devices()[0]
    kind = getattr(device, "device_kind", str(device))
    _log(f"{len(jax.devices())} x {kind} ({jax.default_backend()}), jax {jax.__version__}")
    sizes = (64, 128) if args.cpu_dry_run else (4096, 8192)
    peak_s = 0.1 if args.cpu_dry_run else 1.0
    report = {"device": {"kind": kind, "platform": device.platform, "count": len(jax.devices())},
              "jax": jax.__version__, "settings": {k: v for k, v in vars(args).items()},
              "peaks": {}, "cells": [], "skipped": [], "schedules": {k: list(v[:3]) for k, v in SCHEDULES.items()}}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    for dtype in args.dtypes:
        measured = matmul_peak(sizes, target_s=peak_s, dtype=dtype)
        report["peaks"][dtype] = {"measured_flops_per_s": measured["gflops"] * 1e9,
                                  "per_size": {n: r["gflops"] * 1e9 for n, r in measured["sizes"].items()},
                                  "nominal_flops_per_s": _nominal_peak(kind, dtype)}
        _log(f"matmul peak {dtype}: {measured['gflops'] / 1e3:.1f} TFLOP/s")
    shapes = DRY_SHAPES if args.cpu_dry_run else SHAPES
    longest = 0.0
    for shape in args.shapes:
        n, d = shapes[shape]
        for dtype in args.dtypes:
            elapsed = time.perf_counter() - start
            if elapsed + max(longest, 1.0) > args.budget_s:
                report["skipped"].append({"shape": shape, "matmul_dtype": dtype, "reason": "time budget"})
                _log(f"skip {shape} {dtype}: {elapsed:.0f} s of {args.budget_s:.0f} s used")
                continue
            t0 = time.perf_counter()
            _log(f"{args.preset} @ {shape} (N={n}, d={d}) {dtype} ...")
            cell = measure_cell(args, shape, dtype, n, d)
            peak = report["peaks"][dtype]
            if cell["tflops"]:
                cell["peak_fraction_measured"] = cell["tflops"] * 1e12 / peak["measured_flops_per_s"]
                nominal = peak["nominal_flops_per_s"]
                cell["peak_fraction_nominal"] = cell["tflops"] * 1e12 / nominal if nominal else None
            cell["cell_s"] = time.perf_counter() - t0
            longest = max(longest, cell["cell_s"])
            report["cells"].append(cell)
            _log(f"  {cell['tasks_per_s']:.0f} tasks/s, {cell['median_step_ms']:.1f} ms/step, "
                 f"compile {cell['compile_s']:.0f} s; {cell['schedule'].get('projected_h', float('nan')):.1f} h "
                 f"for the paper's schedule")
            report["total_s"] = time.perf_counter() - start
            _write(args.out, report)
    _pair_losses(report)
    report["total_s"] = time.perf_counter() - start
    _write(args.out, report)
    _log(f"wrote {args.out} ({report['total_s']:.0f} s)")
    return 0 if report["cells"] and all(c["finite"] for c in report["cells"]) else 1


def _pair_losses(report: dict) -> None:
    """bfloat16's first-step loss relative to float32's at each shape (same state, same minibatch)."""
    by = {(c["shape"], c["matmul_dtype"]): c for c in report["cells"]}
    for (shape, dtype), cell in by.items():
        ref = by.get((shape, "float32"))
        if dtype != "float32" and ref:
            cell["loss_rel_diff_vs_float32"] = abs(cell["first_step_loss"] - ref["first_step_loss"]) \
                / max(abs(ref["first_step_loss"]), 1e-30)
            cell["speedup_vs_float32"] = cell["tasks_per_s"] / ref["tasks_per_s"]


if __name__ == "__main__":
    sys.exit(main())
