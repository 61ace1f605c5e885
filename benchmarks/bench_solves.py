#!/usr/bin/env python
"""The training step with the likelihood's factorization and solves in elementwise ops (as
shipped) against the same step on LAPACK custom calls (the computation before the fix of the
training hang, docs/reliability.md).

Both are the library's own compiled training chunk (:func:`activa_ppl.training.svi_chunks`) of
the recommended recipe (``ActivaConfig.recommended``, ``TrainConfig.recommended``) at a
benchmark shape; the LAPACK one is built with :func:`activa_ppl.model.decoded_distribution`
replaced, for this process only, by NumPyro's ``MultivariateNormal`` over
``jnp.linalg.cholesky`` (a batched ``potrf`` and ``trsm``). The two chunks run interleaved
from the same initial state (so both see the same load); the report gives the median seconds
per step of each, their ratio, and the relative difference of the first step's loss.

Usage::

    python benchmarks/bench_solves.py                     # the Gauss 8 shape, batch 32
    python benchmarks/bench_solves.py --shape gauss2 --shape sergio --repeats 7
    python benchmarks/bench_solves.py --preset tiny --shape gauss2 --repeats 1 --steps 1   # smoke test
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from bench_lib.cells import SHAPES, TRAIN_TASKS, dataset  # same folder: run as a script
from bench_lib.machine import machine_info


def _lapack_decoded_distribution(logits, locs, covariances):
    """p_γ(V | z) on LAPACK: what :func:`activa_ppl.model.decoded_distribution` was."""
    import jax.numpy as jnp
    import numpyro.distributions as dist

    components = dist.MultivariateNormal(locs, scale_tril=jnp.linalg.cholesky(covariances))
    return dist.MixtureSameFamily(dist.Categorical(logits=logits), components)


def _chunks(activa, config, arrays, lapack: bool):
    """The compiled chunk and its initial state, with the likelihood on LAPACK or not."""
    from activa_ppl import model, training

    shipped = model.decoded_distribution
    training._chunk_function.cache_clear()  # a fresh trace with the distribution of this variant
    try:
        if lapack:
            model.decoded_distribution = _lapack_decoded_distribution
        chunks = training.svi_chunks(activa, config, arrays[0].shape[0])
        state = chunks.init(*arrays)
        # Compile (and run once) inside the patch: the trace reads the module attribute.
        _, losses = chunks.run(1, state, *arrays)
        losses.block_until_ready()
    finally:
        model.decoded_distribution = shipped
    return chunks, state, float(losses[0])


def compare(shape: str, batch: int, steps: int, repeats: int, preset: str = "small") -> dict:
    """Seconds per step of both variants on ``shape`` (median over ``repeats`` interleaved
    chunks of ``steps`` steps) and the first step's relative loss difference."""
    import activa_ppl as ap
    from activa_ppl import training

    activa = ap.Activa(ap.ActivaConfig.recommended(preset, standardize=True,
                                                   intervention_values=(5.0,)))
    config = ap.TrainConfig.recommended(num_steps=1000, batch_size=batch, eval_every=steps)
    data = dataset(shape, TRAIN_TASKS, seed=0)
    arrays = training.task_arrays(data.tasks("train"))
    runs = {name: _chunks(activa, config, arrays, lapack=name == "lapack")
            for name in ("elementwise", "lapack")}
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (chunks, state, _) in runs.items():
            start = time.perf_counter()
            _, losses = chunks.run(steps, state, *arrays)
            losses.block_until_ready()
            times[name].append((time.perf_counter() - start) / steps)
    first = {name: loss for name, (_, _, loss) in runs.items()}
    med = {name: statistics.median(t) for name, t in times.items()}
    return {"shape": shape, "batch": batch, "steps": steps, "repeats": repeats,
            "s_per_step": med, "elementwise_over_lapack": med["elementwise"] / med["lapack"],
            "first_loss_rel_diff": abs(first["elementwise"] - first["lapack"]) / abs(first["lapack"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", action="append", choices=sorted(SHAPES),
                        help="benchmark shape (repeatable; default gauss8)")
    parser.add_argument("--batch", type=int, default=32, help="tasks per step (the recipe's 32)")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed chunk")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved chunks per variant")
    parser.add_argument("--preset", default="small", help="architecture preset (default: small, the zoo's)")
    args = parser.parse_args(argv)
    info = machine_info()
    print(f"# {info['cpu']}, {info['cores_usable']} usable cores, jax {info['jax']}, "
          f"load {info['load_avg_1_5_15']}, {info['date']}")
    print("| shape | batch | elementwise s/step | LAPACK s/step | elementwise / LAPACK | first loss rel. diff |")
    print("|---|---|---|---|---|---|")
    for shape in args.shape or ["gauss8"]:
        r = compare(shape, args.batch, args.steps, args.repeats, args.preset)
        print(f"| {shape} | {r['batch']} | {r['s_per_step']['elementwise']:.4f} | "
              f"{r['s_per_step']['lapack']:.4f} | {r['elementwise_over_lapack']:.2f} | "
              f"{r['first_loss_rel_diff']:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
