#!/usr/bin/env python
"""Core speed benchmark of activa_ppl: SVI training throughput and prediction latency.

For each architecture preset, at one dataset shape (Gauss 2: N=100, d=2; Gauss 8: N=80, d=8):

* training: the compiled chunk of :func:`activa_ppl.training.train` (``lax.scan`` over
  ``svi.update`` on minibatches drawn inside the scan, ``total_tasks`` scaling), built by the
  library's own ``activa_ppl.training.svi_chunks``; compile time is
  reported separately, then ``--repeats`` chunks of ``--steps-per-chunk`` steps are timed;
* prediction: ``FittedActiva.predict`` on one ``(N, d)`` dataset (latency) and
  ``FittedActiva.predict_batch`` on ``--predict-batch`` queries (throughput), with randomly
  initialised parameters (``svi.init``; speed does not depend on the parameter values).

Usage::

    python benchmarks/bench_core.py                          # small + paper, Gauss 2
    python benchmarks/bench_core.py --shape gauss8 --presets small
    python benchmarks/bench_core.py --quick                  # smoke test (tiny preset)
    python benchmarks/bench_core.py --json bench.json        # also write the numbers

Timings on a shared CPU box vary by about ±30 % run to run: compare runs side by side.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import sys
import time

import jax
import numpy as np

import activa_ppl
from activa_ppl import simulate
from activa_ppl.config import ActivaConfig, TrainConfig
from activa_ppl.fitted import FittedActiva
from activa_ppl.model import Activa
from activa_ppl.training import svi_chunks, task_arrays

SHAPES = {  # name -> (N samples per dataset, d variables), as in the paper's Gauss 2 / Gauss 8
    "gauss2": (100, 2),
    "gauss8": (80, 8),
}
TRAIN_TASKS = 512  # size of the simulated training set the minibatches are drawn from


# --------------------------------------------------------------------------- machine details
def machine_info() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    import flax
    import numpyro
    import optax

    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores_logical": os.cpu_count(),
        "cores_usable": usable,
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "jaxlib": getattr(jax.lib, "__version__", None) or _jaxlib_version(),
        "numpyro": numpyro.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "activa_ppl": getattr(activa_ppl, "__version__", "?"),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "env": {k: os.environ.get(k, "") for k in ("XLA_FLAGS", "GLIBC_TUNABLES", "LD_PRELOAD")},
    }


def _jaxlib_version() -> str:
    try:
        import jaxlib

        return jaxlib.__version__
    except Exception:  # pragma: no cover
        return "?"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def block(tree):
    for leaf in jax.tree_util.tree_leaves(tree):
        if hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()
    return tree


# --------------------------------------------------------------------------- one preset
def bench_preset(preset: str, shape: str, args) -> dict:
    n, d = SHAPES[shape]
    cfg = ActivaConfig.preset(preset)
    activa = Activa(cfg)
    tcfg = TrainConfig(batch_size=args.batch_size, eval_every=args.steps_per_chunk, seed=args.seed)

    # Simulated data of the right shape (values do not change the speed).
    num_scms = max(2, -(-args.train_tasks // d) * 10 // 8 + 1)  # 80 % train split
    data = simulate.linear_dataset(num_scms=num_scms, num_vars=d, noise="gauss", num_samples=n,
                                   seed=args.seed)
    train_arrays = task_arrays(data.tasks("train"))
    test = data.tasks(None)
    num_tasks = int(train_arrays[0].shape[0])
    batch_size = min(tcfg.batch_size, num_tasks)

    # --- the compiled chunk of activa_ppl.training.train -------------------------------------
    chunks = svi_chunks(activa, tcfg, num_tasks)
    svi, run_chunk = chunks.svi, chunks.run
    state = chunks.init(*train_arrays)
    init_params = svi.get_params(state)
    num_params = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(init_params)))

    t0 = time.perf_counter()
    compiled = run_chunk.lower(args.steps_per_chunk, state, *train_arrays).compile()
    compile_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    state, losses = block(compiled(state, *train_arrays))  # warm-up chunk (first execution)
    warmup_s = time.perf_counter() - t0
    if not np.all(np.isfinite(np.asarray(losses))):
        raise FloatingPointError(f"{preset}: non-finite loss during the benchmark")
    chunk_s = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        state, losses = block(compiled(state, *train_arrays))
        chunk_s.append(time.perf_counter() - t0)
    step_s = [c / args.steps_per_chunk for c in chunk_s]
    med_step = statistics.median(step_s)

    # --- prediction with the randomly initialised parameters ----------------------------------
    fitted = FittedActiva(activa=activa, params=init_params)
    obs = np.asarray(test.observational[0])  # (N, d)
    target = int(np.argmax(test.targets[0]))
    t0 = time.perf_counter()
    block(fitted.predict(obs, target=target, seed=0))  # compiles for Q = 1
    predict_first_s = time.perf_counter() - t0
    for i in range(2):
        block(fitted.predict(obs, target=target, seed=i + 1))
    lat = []
    for i in range(args.predict_calls):
        t0 = time.perf_counter()
        block(fitted.predict(obs, target=target, seed=i))
        lat.append(time.perf_counter() - t0)

    q = args.predict_batch
    pick = np.arange(q) % len(test.scm)
    b_obs, b_tgt, b_idx = (test.observational[pick], test.targets[pick],
                           test.intervention_index[pick].astype(np.int32))
    t0 = time.perf_counter()
    block(fitted.predict_batch(b_obs, b_tgt, b_idx, seed=0))  # compiles for Q = predict_batch
    batch_first_s = time.perf_counter() - t0
    batch_s = []
    for i in range(args.batch_repeats):
        t0 = time.perf_counter()
        block(fitted.predict_batch(b_obs, b_tgt, b_idx, seed=i + 1))
        batch_s.append(time.perf_counter() - t0)
    med_batch = statistics.median(batch_s)

    return {
        "preset": preset,
        "shape": shape,
        "N": n,
        "d": d,
        "num_params": num_params,
        "train": {
            "batch_size": batch_size,
            "train_tasks": num_tasks,
            "num_particles": cfg.num_particles,
            "steps_per_chunk": args.steps_per_chunk,
            "repeats": args.repeats,
            "compile_s": compile_s,
            "warmup_chunk_s": warmup_s,
            "chunk_s": chunk_s,
            "median_step_ms": 1e3 * med_step,
            "tasks_per_s": batch_size / med_step,
            "tasks_per_s_min": batch_size / max(step_s),
            "tasks_per_s_max": batch_size / min(step_s),
        },
        "predict": {
            "num_latents": cfg.num_predictive_latents,
            "first_call_s": predict_first_s,
            "calls": args.predict_calls,
            "latency_ms_median": 1e3 * statistics.median(lat),
            "latency_ms_min": 1e3 * min(lat),
            "latency_ms_max": 1e3 * max(lat),
        },
        "predict_batch": {
            "queries": q,
            "first_call_s": batch_first_s,
            "repeats": args.batch_repeats,
            "call_s": batch_s,
            "median_call_s": med_batch,
            "queries_per_s": q / med_batch,
        },
        "peak_rss_mb_so_far": peak_rss_mb(),
    }


# --------------------------------------------------------------------------- output
def format_report(info: dict, settings: dict, results: list[dict]) -> str:
    lines = ["activa_ppl core benchmark", "=" * 25]
    for key in ("date", "cpu", "platform", "python", "jax_backend"):
        lines.append(f"{key:<14} {info[key]}")
    lines.append(f"{'cores':<14} {info['cores_logical']} logical, {info['cores_usable']} usable")
    lines.append(f"{'load avg':<14} {' '.join(str(x) for x in info['load_avg_1_5_15'])} (1/5/15 min, at start)")
    lines.append(f"{'versions':<14} jax {info['jax']}, jaxlib {info['jaxlib']}, numpyro {info['numpyro']}, "
                 f"flax {info['flax']}, optax {info['optax']}, activa_ppl {info['activa_ppl']}")
    env = ", ".join(f"{k}={v!r}" for k, v in info["env"].items())
    lines.append(f"{'env':<14} {env}")
    lines.append(f"{'settings':<14} " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    lines.append("")

    def table(head, rows, left=2):
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
        fmt = lambda cells: "  ".join(  # noqa: E731
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return [fmt(head), "  ".join("-" * w for w in widths), *(fmt(row) for row in rows)]

    train_rows, pred_rows = [], []
    for r in results:
        t, p, b = r["train"], r["predict"], r["predict_batch"]
        shape = f"{r['shape']} (N={r['N']}, d={r['d']})"
        train_rows.append([
            r["preset"], shape, f"{r['num_params']:,}", str(t["batch_size"]),
            str(t["num_particles"]), f"{t['compile_s']:.1f}", f"{t['median_step_ms']:.1f}",
            f"{t['tasks_per_s']:.0f}", f"{t['tasks_per_s_min']:.0f}-{t['tasks_per_s_max']:.0f}",
            f"{r['peak_rss_mb_so_far']:.0f}",
        ])
        pred_rows.append([
            r["preset"], shape, str(p["num_latents"]), f"{p['first_call_s']:.2f}",
            f"{p['latency_ms_median']:.2f}", f"{p['latency_ms_min']:.2f}-{p['latency_ms_max']:.2f}",
            str(b["queries"]), f"{b['first_call_s']:.2f}", f"{1e3 * b['median_call_s']:.0f}",
            f"{b['queries_per_s']:.0f}",
        ])
    lines.append("Training (compiled lax.scan chunk of svi.update, as in activa_ppl.train)")
    lines += table(["preset", "shape", "params", "batch", "particles", "compile s", "ms/step",
                    "tasks/s", "tasks/s min-max", "peak RSS MB"], train_rows)
    lines.append("")
    lines.append("Prediction (random init params; predict = 1 query, predict_batch = Q queries)")
    lines += table(["preset", "shape", "S", "1st call s", "predict ms", "min-max ms", "Q",
                    "batch 1st s", "batch ms", "queries/s"], pred_rows)
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default=None,
                   help="comma-separated ActivaConfig presets (default small,paper; tiny with --quick)")
    p.add_argument("--shape", choices=sorted(SHAPES), default="gauss2",
                   help="dataset shape: gauss2 (N=100, d=2) or gauss8 (N=80, d=8)")
    p.add_argument("--batch-size", type=int, default=32, help="tasks per SVI step (default 32)")
    p.add_argument("--steps-per-chunk", type=int, default=None,
                   help="SVI steps per compiled chunk (default 20; 2 with --quick)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed training chunks, after one warm-up chunk (default 3; 1 with --quick)")
    p.add_argument("--predict-calls", type=int, default=None,
                   help="timed single-query predict calls (default 30; 3 with --quick)")
    p.add_argument("--predict-batch", type=int, default=None,
                   help="queries per predict_batch call (default 256; 8 with --quick)")
    p.add_argument("--batch-repeats", type=int, default=None,
                   help="timed predict_batch calls (default 5; 1 with --quick)")
    p.add_argument("--train-tasks", type=int, default=TRAIN_TASKS,
                   help=f"size of the simulated training set (default {TRAIN_TASKS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    p.add_argument("--json", metavar="PATH", default=None, help="also write all numbers as JSON")
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {"presets": "tiny" if quick else "small,paper",
                "steps_per_chunk": 2 if quick else 20, "repeats": 1 if quick else 3,
                "predict_calls": 3 if quick else 30, "predict_batch": 8 if quick else 256,
                "batch_repeats": 1 if quick else 5}
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if quick:
        args.batch_size = min(args.batch_size, 4)
        args.train_tasks = min(args.train_tasks, 16)
    for k in ("batch_size", "steps_per_chunk", "repeats", "predict_calls", "predict_batch",
              "batch_repeats", "train_tasks"):
        if getattr(args, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1")
    args.presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    for name in args.presets:
        try:
            ActivaConfig.preset(name)
        except ValueError as e:
            p.error(str(e))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    info = machine_info()
    settings = {
        "shape": args.shape, "batch_size": args.batch_size, "steps_per_chunk": args.steps_per_chunk,
        "repeats": args.repeats, "predict_calls": args.predict_calls,
        "predict_batch": args.predict_batch, "batch_repeats": args.batch_repeats,
        "train_tasks": args.train_tasks, "seed": args.seed, "quick": args.quick,
    }
    results = []
    start = time.perf_counter()
    for preset in args.presets:
        print(f"[bench] {preset} @ {args.shape} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        results.append(bench_preset(preset, args.shape, args))
        print(f"[bench] {preset} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    total_s = time.perf_counter() - start
    print(format_report(info, settings, results))
    print(f"\ntotal benchmark time {total_s:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "settings": settings, "results": results,
                       "total_s": total_s, "argv": sys.argv[1:]}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
