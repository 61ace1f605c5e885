#!/usr/bin/env python
"""One attention layer, forward and backward, in both formulations of ``ActivaConfig.attention``.

Flax's ``nn.MultiHeadDotProductAttention`` (``"softmax"``, the computation before issue 17)
against :class:`activa_ppl.networks.MultiHeadAttention` (``"deferred"``, the default), on the
inputs the dataset embeddings of the benchmark shapes give their attention layers: over the
N samples (``(B, d, N, e)``, attention matrix ``(B, d, heads, N, N)``) and over the d variables
(``(B, N, d, e)``). Each is ``jax.value_and_grad`` of a nonlinear readout with respect to the
parameters and the input, compiled once; the two run interleaved (so both see the same load),
and the report gives the median time of each and their ratio, with the largest difference of
their outputs and gradients (relative to the largest entry).

Usage::

    python benchmarks/bench_attention.py                       # small preset (e = 32, 4 heads), batch 32
    python benchmarks/bench_attention.py --embed-dim 64        # the paper preset's width
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from bench_lib.cells import SHAPES  # same folder: run as a script
from bench_lib.machine import machine_info


def _layer_grad(module, x):
    import jax
    import jax.numpy as jnp

    params = module.init(jax.random.PRNGKey(1), x, x)

    def loss(p, inputs):
        return jnp.sum(jnp.sin(module.apply(p, inputs, inputs)))

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), params


def compare(shape: str, axis: str, batch: int, embed_dim: int, heads: int, repeats: int) -> dict:
    """Both formulations on the attention input of ``shape`` over ``axis`` (samples / variables)."""
    import flax.linen as nn
    import jax
    import numpy as np

    from activa_ppl.networks import MultiHeadAttention

    n, d = SHAPES[shape]
    dims = (batch, d, n, embed_dim) if axis == "samples" else (batch, n, d, embed_dim)
    x = jax.random.normal(jax.random.PRNGKey(0), dims)
    flax_fn, params = _layer_grad(nn.MultiHeadDotProductAttention(num_heads=heads), x)
    ours_fn, _ = _layer_grad(MultiHeadAttention(num_heads=heads), x)
    ref, out = jax.block_until_ready(flax_fn(params, x)), jax.block_until_ready(ours_fn(params, x))
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / (np.max(np.abs(np.asarray(b))) + 1e-30))
               for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(ref))
               if np.max(np.abs(np.asarray(b))) > 1e-3)  # an attention key bias's gradient is 0 up to rounding
    times = {"softmax": [], "deferred": []}
    for _ in range(repeats):
        for name, fn in (("softmax", flax_fn), ("deferred", ours_fn)):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(params, x))
            times[name].append(time.perf_counter() - t0)
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    return {"shape": shape, "axis": axis, "input": list(dims), "heads": heads, "softmax_ms": med["softmax"],
            "deferred_ms": med["deferred"], "speedup": med["softmax"] / med["deferred"], "max_rel_diff": diff}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--embed-dim", type=int, default=32)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--shapes", default=",".join(SHAPES))
    args = p.parse_args(argv)
    if args.embed_dim % args.heads:
        p.error("--embed-dim must be divisible by --heads")
    info = machine_info()
    print(f"{info['cpu']}, {info['cores_usable']} usable cores, load {info['load_avg_1_5_15']}, jax {info['jax']}, "
          f"{info['date']}; batch {args.batch_size}, e = {args.embed_dim}, {args.heads} heads, fwd + bwd")
    print(f"{'shape':7s} {'over':9s} {'input':18s} {'softmax ms':>10s} {'deferred ms':>11s} {'speed-up':>8s} {'max rel diff':>12s}")
    for shape in [s for s in args.shapes.split(",") if s]:
        for axis in ("samples", "variables"):
            r = compare(shape, axis, args.batch_size, args.embed_dim, args.heads, args.repeats)
            print(f"{shape:7s} {axis:9s} {'x'.join(map(str, r['input'])):18s} {r['softmax_ms']:10.2f} "
                  f"{r['deferred_ms']:11.2f} {r['speedup']:8.2f} {r['max_rel_diff']:12.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
