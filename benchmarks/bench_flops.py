#!/usr/bin/env python
"""Where the FLOPs of one ACTIVA training step go: XLA's cost analysis of the compiled step
against a hand count of its parts (load-independent, so it can run on a busy machine).

For each preset and shape it compiles, on one minibatch of ``--batch-size`` tasks:

* ``step``: one ``svi.update`` of the library's training step (``total_tasks`` scaling, the
  preset's ``num_particles``), with the observational embedding computed in model and guide
  (``shared_embedding=False``, the path before issue 17) and once, shared
  (:class:`activa_ppl.elbo.SharedEmbeddingELBO`, the default of ``svi_chunks``);
* ``parts``: each network's forward pass plus its backward pass (a VJP with respect to its
  parameters and its floating inputs), at the shapes it sees in a step: the two dataset
  embeddings and the prior and posterior heads on the minibatch, the decoder on
  ``num_particles`` latent draws of it.

``hand count`` sums the parts with the observational embedding counted once and twice, so the
step's own count tells how many times XLA computes it.

Usage::

    python benchmarks/bench_flops.py                                # small + paper, all shapes
    python benchmarks/bench_flops.py --presets small --shapes gauss2 --json flops.json
"""

from __future__ import annotations

import argparse
import json
import sys

from bench_lib.cells import SHAPES  # same folder: run as a script
from bench_lib.machine import xla_cost


def _compiled_flops(fn, *args) -> float:
    import jax

    return xla_cost(jax.jit(fn).lower(*args).compile().cost_analysis()) or 0.0


def _fwd_bwd(activa, params, name: str, *inputs) -> float:
    """FLOPs of module ``name``'s forward pass and its VJP (parameters and inputs)."""
    import jax
    import jax.numpy as jnp

    def f(p, *xs):
        out, pull = jax.vjp(lambda p_, *x_: activa.modules[name].apply({"params": p_}, *x_), p, *xs)
        cot = jax.tree_util.tree_map(jnp.ones_like, out)
        return pull(cot)

    return _compiled_flops(f, params[f"{name}$params"], *inputs)


def measure(preset: str, shape: str, batch_size: int, seed: int = 0) -> dict:
    """The step's FLOPs (both paths) and the hand count of its parts, in FLOPs."""
    import jax
    import jax.numpy as jnp

    from activa_ppl.config import ActivaConfig, TrainConfig
    from activa_ppl.model import Activa
    from activa_ppl.training import make_optimizer, task_arrays
    from bench_lib.cells import dataset

    cfg = ActivaConfig.preset(preset)
    activa = Activa(cfg)
    n, d = SHAPES[shape]
    arrays = task_arrays(dataset(shape, max(64, batch_size), seed).tasks("train"))
    batch = tuple(a[:batch_size] for a in arrays)
    total = int(arrays[0].shape[0])
    steps = {}
    for shared in (False, True):
        svi = activa.svi(make_optimizer(TrainConfig()), shared_embedding=shared)
        state = svi.init(jax.random.PRNGKey(seed), *batch, total_tasks=total)
        steps["shared" if shared else "separate"] = _compiled_flops(
            lambda s, *b: svi.update(s, *b, total_tasks=total), state, *batch)
    params = activa.init_params(jax.random.PRNGKey(seed), d, n)
    b, e, p = batch_size, cfg.embed_dim, cfg.num_particles
    rep = jnp.zeros((b, n, d, cfg.num_interventions + int(cfg.standardize)))
    data = jnp.zeros((b, n, d))
    h = jnp.zeros((b, d, e))
    parts = {
        "obs_embedding": _fwd_bwd(activa, params, "obs_embedding", data, rep),
        "int_embedding": _fwd_bwd(activa, params, "int_embedding", data, rep),
        "prior": _fwd_bwd(activa, params, "prior", h),
        "posterior": _fwd_bwd(activa, params, "posterior", h, h),
        "decoder": _fwd_bwd(activa, params, "decoder", jnp.zeros((p, b, d)),
                            *((h,) if cfg.decoder_context else ())),
    }
    forward_obs = _compiled_flops(lambda pr, x, r: activa.apply(pr, "obs_embedding", x, r), params, data, rep)
    rest = sum(v for k, v in parts.items() if k != "obs_embedding")
    return {
        "preset": preset, "shape": shape, "N": n, "d": d, "batch_size": b, "num_particles": p,
        "step_separate": steps["separate"], "step_shared": steps["shared"],
        "parts_fwd_bwd": parts, "obs_embedding_forward": forward_obs,
        "hand_count_obs_once": rest + parts["obs_embedding"],
        "hand_count_obs_twice": rest + 2 * parts["obs_embedding"],
    }


def _row(r: dict) -> str:
    g = 1e9
    return (f"{r['preset']:<6}  {r['shape']:<7} {r['step_separate'] / g:9.3f} {r['step_shared'] / g:9.3f}  "
            f"{r['hand_count_obs_once'] / g:9.3f} {r['hand_count_obs_twice'] / g:9.3f}  "
            f"{r['parts_fwd_bwd']['obs_embedding'] / g:8.3f} {r['parts_fwd_bwd']['int_embedding'] / g:8.3f} "
            f"{r['parts_fwd_bwd']['decoder'] / g:8.3f}  {r['step_separate'] / r['step_shared']:5.2f}x")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="small,paper")
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--json", metavar="PATH", default=None)
    args = p.parse_args(argv)
    rows = [measure(pr, sh, args.batch_size) for sh in args.shapes.split(",") for pr in args.presets.split(",")]
    print("GFLOP per training step (XLA cost analysis of the compiled step) and hand count of its parts")
    print("preset  shape    step old  step new  hand 1×obs hand 2×obs  obs f+b  int f+b  dec f+b  old/new")
    for r in rows:
        print(_row(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
