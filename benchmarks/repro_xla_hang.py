#!/usr/bin/env python
"""Reproduce the intermittent XLA hang of evaluations, and compare XLA settings (reliability page).

Scores random 8-variable mixtures of ACTIVA's size (200 components, 80 held-out samples, 1024
tasks in chunks of 128) with :func:`activa_ppl.metrics.evaluate_predictions`, ``--reps``
times, in a fresh process per trial and setting, and reports per trial whether it finished
within ``--timeout-s``. Settings alternate trial by trial so machine load hits both alike.

Usage::

    python benchmarks/repro_xla_hang.py --trials 3          # default XLA vs YNN fusions off
    python benchmarks/repro_xla_hang.py --settings default --trials 1 --reps 20

On the project's 2-core machine (2026-11-30), with the scoring's batched ``jnp.linalg.cholesky``
(a LAPACK call that blocks an XLA pool thread on work it queued to the same pool), JAX 0.10.2's
defaults finished 0 of 9 trials (0% CPU, every XLA worker parked) and
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=`` 4 of 5. Since scoring factors with
``activa_ppl.mixture_math.cholesky`` (no LAPACK call), the defaults finished 2 of 2
(docs/reliability.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

#: name -> XLA_FLAGS of a trial.
SETTINGS = {"default": "", "ynn-off": "--xla_cpu_experimental_ynn_fusion_type=",
            "eigen-off": "--xla_cpu_multi_thread_eigen=false", "no-thunks": "--xla_cpu_use_thunk_runtime=false"}


def worker(reps: int) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from activa_ppl.metrics import evaluate_predictions
    from activa_ppl.mixture import GaussianMixture

    num_tasks, k, d, n = 1024, 200, 8, 80
    rng = np.random.default_rng(0)
    a = rng.normal(size=(num_tasks, k, d, d)).astype(np.float32) * 0.3
    mix = GaussianMixture(jnp.asarray(rng.dirichlet(np.ones(k), size=num_tasks).astype(np.float32)),
                          jnp.asarray(rng.normal(size=(num_tasks, k, d)).astype(np.float32)),
                          jnp.asarray(a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(d, dtype=np.float32)))
    held_out = rng.normal(size=(num_tasks, n, d)).astype(np.float32)
    adjacency = (rng.random((num_tasks, d, d)) < 0.3) * np.triu(np.ones((d, d)), 1)
    targets = np.zeros((num_tasks, d), bool)
    targets[np.arange(num_tasks), rng.integers(0, d, num_tasks)] = True
    keys = jax.vmap(lambda t: jax.random.fold_in(jax.random.PRNGKey(0), t))(jnp.arange(num_tasks))
    for rep in range(reps):
        evaluate_predictions(mix, held_out, adjacency, targets, keys, chunk_size=128)
        print(f"scored {rep + 1}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", default="default,ynn-off",
                   help=f"comma-separated, from {', '.join(SETTINGS)} (default: %(default)s)")
    p.add_argument("--trials", type=int, default=3, help="trials per setting (default 3)")
    p.add_argument("--reps", type=int, default=8, help="scorings of the 1024 tasks per trial (default 8)")
    p.add_argument("--timeout-s", type=float, default=150.0, help="a trial that takes longer hung (default 150)")
    p.add_argument("--json", help="write the trials here")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    names = args.settings.split(",")
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        p.error(f"unknown settings {unknown}; choose from {', '.join(SETTINGS)}")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                         env.get("PYTHONPATH", "")])
    trials = []
    for trial in range(args.trials):
        for name in names:
            t0 = time.perf_counter()
            try:
                proc = subprocess.run([sys.executable, __file__, "--worker", str(args.reps)], capture_output=True,
                                      text=True, timeout=args.timeout_s, env={**env, "XLA_FLAGS": SETTINGS[name]})
                result = "finished" if proc.returncode == 0 else f"failed ({proc.stderr.strip()[-200:]})"
            except subprocess.TimeoutExpired as e:
                out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
                result = f"hung after {out.count('scored')} of {args.reps} scorings"
            seconds = round(time.perf_counter() - t0, 1)
            trials.append({"setting": name, "xla_flags": SETTINGS[name], "trial": trial, "result": result,
                           "seconds": seconds, "load": os.getloadavg()[0]})
            print(f"{name:10s} trial {trial}: {result} ({seconds} s, load {trials[-1]['load']:.1f})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"trials": trials, "reps": args.reps, "timeout_s": args.timeout_s}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
