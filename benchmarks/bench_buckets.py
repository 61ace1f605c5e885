#!/usr/bin/env python
"""Sample-axis shape buckets at prediction: compiles saved against the cost of padding.

A user predicting on datasets of many sizes N pays one compile per distinct N with exact
shapes (``FittedActiva.predict(..., bucket=False)``); with buckets (the default) every N in a
bucket (:func:`activa_ppl.fitted.sample_bucket`) shares one compiled function, and each call
pays for the padded rows instead. Each setting runs in a fresh process.

    python benchmarks/bench_buckets.py                  # zoo model gauss2 and a paper-preset d=8 model
    python benchmarks/bench_buckets.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from bench_lib.machine import machine_info, print_result, run_worker, write_json  # same folder: run as a script

SIZES = (37, 45, 52, 60, 70, 80, 90, 100, 110, 120)  # a user's datasets, N rows each


def worker(spec: dict) -> dict:
    import jax
    import numpy as np

    import activa_ppl as ap
    from activa_ppl.fitted import FittedActiva, sample_bucket

    if spec["model"] == "paper-d8":
        activa = ap.Activa(ap.ActivaConfig.preset("paper"))
        fitted = FittedActiva(activa=activa, params=activa.init_params(jax.random.PRNGKey(0), num_vars=8))
        d = 8
    else:
        fitted = ap.load_pretrained(spec["model"])
        d = fitted.info["dataset"]["num_vars"]
    rng = np.random.default_rng(0)
    bucket = spec["bucket"]
    fitted.predict(rng.normal(size=(20, d)).astype(np.float32), target=0, bucket=bucket)  # warm-up
    first = []
    for n in spec["sizes"]:
        obs = rng.normal(size=(n, d)).astype(np.float32)
        t0 = time.perf_counter()
        mix = fitted.predict(obs, target=0, seed=1, bucket=bucket)
        np.asarray(mix.locs)
        first.append(time.perf_counter() - t0)
    steady = {}
    for n in spec["steady_sizes"]:
        obs = rng.normal(size=(n, d)).astype(np.float32)
        fitted.predict(obs, target=0, bucket=bucket)
        times = []
        for i in range(spec["calls"]):
            t0 = time.perf_counter()
            np.asarray(fitted.predict(obs, target=0, seed=i, bucket=bucket).locs)
            times.append(time.perf_counter() - t0)
        steady[str(n)] = 1e3 * statistics.median(times)
    buckets = sorted({sample_bucket(n) if bucket else n for n in spec["sizes"]})
    return {**spec, "first_calls_s": first, "first_total_s": sum(first), "compiled_sizes": buckets,
            "steady_ms": steady}


def run(spec: dict) -> dict:
    """One setting in a fresh process (its own compile cache)."""
    return run_worker(__file__, ["--worker", json.dumps(spec)], label=f"{spec['model']} bucket={spec['bucket']}")


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--worker":
        print_result(worker(json.loads(sys.argv[2])))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=20, help="timed calls per N for the per-call cost")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    info = machine_info()
    rows = []
    for model, steady in (("gauss2", (100,)), ("paper-d8", (80, 100))):
        for bucket in (False, True):
            print(f"[bench_buckets] {model} bucket={bucket} ...", file=sys.stderr, flush=True)
            rows.append(run({"model": model, "bucket": bucket, "sizes": list(SIZES),
                             "steady_sizes": list(steady), "calls": args.calls}))
    print(f"sample-axis buckets at prediction; {info['cpu']}, {info['cores_usable']} cores, "
          f"load {info['load_avg_1_5_15']}, jax {info['jax']}")
    print(f"one predict per N in {list(SIZES)} after a warm-up at N = 20 (fresh process per row)")
    print(f"{'model':9s} {'buckets':7s} {'compiles':>8s} {'first calls s':>13s}  per call ms (steady, median)")
    for r in rows:
        steady = ", ".join(f"N={n}: {ms:.2f}" for n, ms in r["steady_ms"].items())
        print(f"{r['model']:9s} {str(r['bucket']):7s} {len(r['compiled_sizes']):8d} "
              f"{r['first_total_s']:13.1f}  {steady}")
    write_json(args.json, {"machine": info, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
