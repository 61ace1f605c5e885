#!/usr/bin/env python
"""Where the time of one ACTIVA training step goes, kernel by kernel, on XLA's CPU backend.

Compiles one ``svi.update`` of the library's training loss (:func:`activa_ppl.training.svi_chunks`'s
SVI, shared observational embedding) on a minibatch of the benchmark shapes, runs it under
``jax.profiler`` (XLA's CPU runtime records one trace event per executed kernel), and sums the
kernels' durations by what they compute, read from the HLO metadata of the compiled step
(the Flax module path of the op each kernel came from):

* ``sample attention`` / ``variable attention``: the attention layers of the dataset
  embeddings over the N samples (the ``(…, heads, N, N)`` attention matrix) and over the d
  variables; ``decoder attention``;
* ``feed-forward``: the two-layer MLPs of every block;
* ``layer norm``, ``residual, layout``: the normalisations, residual additions and the
  transposes between the variable and sample layouts;
* ``other``: heads, the likelihood, the ELBO, Adam;

each split into forward and backward (an op under a ``transpose(...)`` of the JVP). It also
prints the heaviest single kernels with their output shapes and XLA's FLOPs and bytes of the
whole step. Kernel durations overlap when XLA runs independent kernels on both cores, so the
shares are of summed kernel time, not of wall time; run it on an idle machine.

Usage::

    python benchmarks/profile_step.py                          # small preset, Gauss 2 and Gauss 8
    python benchmarks/profile_step.py --preset paper --shapes gauss8 --attention softmax
    python benchmarks/profile_step.py --json profile.json
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time

from bench_lib.cells import SHAPES, dataset  # same folder: run as a script
from bench_lib.machine import machine_info, write_json, xla_cost

#: (label, test on the op's module path): the first that matches names a kernel's part.
_PARTS = (
    ("feed-forward", lambda path: "FeedForward" in path),
    ("layer norm", lambda path: "LayerNorm" in path),
)


def _part(op_name: str) -> str:
    """What a kernel computes, from its HLO ``op_name`` (the traced module path)."""
    path = re.sub(r"^jit\([^)]*\)/", "", op_name)
    block = re.search(r"AttentionBlock_(\d+)", path)
    if "MultiHeadDotProductAttention" in path:
        if "Decoder" in path:
            return "decoder attention"
        # DatasetEmbedding: blocks alternate over variables (even) and over samples (odd)
        return "sample attention" if block and int(block.group(1)) % 2 else "variable attention"
    for label, test in _PARTS:
        if test(path):
            return label
    if "DatasetEmbedding" in path or "Decoder" in path:
        return "residual, layout"
    return "other"


def _kernel_metadata(hlo_text: str) -> dict[str, tuple[str, str]]:
    """HLO instruction name -> (output shape, op_name) of the compiled step."""
    pattern = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+) .*?op_name=\"([^\"]+)\"", re.M)
    return {m.group(1): (m.group(2), m.group(3)) for m in pattern.finditer(hlo_text)}


def _trace_events(logdir: str) -> list[dict]:
    (path,) = glob.glob(os.path.join(logdir, "plugins", "profile", "*", "perfetto_trace.json.gz"))
    with gzip.open(path) as f:
        events = json.load(f)
    return events["traceEvents"] if isinstance(events, dict) else events


def profile(preset: str, shape: str, attention: str, batch_size: int, steps: int, seed: int) -> dict:
    """One cell's profile (see the module docstring)."""
    import jax

    from activa_ppl.config import ActivaConfig, TrainConfig
    from activa_ppl.model import Activa
    from activa_ppl.training import svi_chunks, task_arrays

    activa = Activa(ActivaConfig.preset(preset, attention=attention))
    arrays = task_arrays(dataset(shape, max(batch_size, 64), seed).tasks("train"))
    num_tasks = int(arrays[0].shape[0])
    chunks = svi_chunks(activa, TrainConfig(batch_size=batch_size, eval_every=1, seed=seed), num_tasks)
    state = chunks.init(*arrays)
    batch = tuple(a[:batch_size] for a in arrays)
    step = jax.jit(lambda s, *b: chunks.svi.update(s, *b, total_tasks=num_tasks))
    compiled = step.lower(state, *batch).compile()
    cost = compiled.cost_analysis()
    meta = _kernel_metadata(compiled.as_text())
    jax.block_until_ready(compiled(state, *batch))  # warm-up
    wall = []
    for _ in range(steps):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(state, *batch))
        wall.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as logdir:
        jax.profiler.start_trace(logdir, create_perfetto_trace=True)
        for _ in range(steps):
            jax.block_until_ready(compiled(state, *batch))
        jax.profiler.stop_trace()
        events = _trace_events(logdir)
    parts, kernels, shapes = collections.Counter(), collections.Counter(), {}
    for e in events:
        if e.get("ph") != "X" or e.get("name") not in meta:
            continue
        out_shape, op_name = meta[e["name"]]
        direction = "backward" if "transpose(" in op_name else "forward"
        parts[(_part(op_name), direction)] += e["dur"] / steps / 1e3  # ms per step
        kernels[e["name"]] += e["dur"] / steps / 1e3
        shapes[e["name"]] = (out_shape, op_name)
    total = sum(parts.values())
    return {
        "preset": preset, "shape": shape, "attention": attention, "batch_size": batch_size,
        "steps": steps, "wall_ms_median": 1e3 * statistics.median(wall), "kernel_ms_total": total,
        "gflop": xla_cost(cost) / 1e9 if xla_cost(cost) else None,
        "gbytes_accessed": xla_cost(cost, "bytes accessed") / 1e9 if xla_cost(cost, "bytes accessed") else None,
        "parts": [{"part": p, "direction": d, "ms": ms, "share": ms / total}
                  for (p, d), ms in sorted(parts.items(), key=lambda kv: -kv[1])],
        "top_kernels": [{"kernel": k, "ms": ms, "shape": shapes[k][0], "op": shapes[k][1][-100:]}
                        for k, ms in kernels.most_common(12)],
    }


def format_profile(result: dict) -> str:
    lines = [f"{result['preset']} @ {result['shape']} (attention={result['attention']}, batch "
             f"{result['batch_size']}): step {result['wall_ms_median']:.1f} ms wall (median of "
             f"{result['steps']}), kernels {result['kernel_ms_total']:.1f} ms summed; XLA: "
             f"{result['gflop']:.2f} GFLOP, {result['gbytes_accessed']:.2f} GB accessed "
             f"({result['gflop'] / result['gbytes_accessed']:.1f} FLOP/byte)",
             f"  {'part':20s} {'direction':9s} {'ms/step':>8s} {'share':>6s}"]
    for row in result["parts"]:
        if row["share"] >= 0.005:
            lines.append(f"  {row['part']:20s} {row['direction']:9s} {row['ms']:8.1f} {100 * row['share']:5.1f}%")
    lines.append("  heaviest kernels (ms/step, output shape, op):")
    for k in result["top_kernels"]:
        lines.append(f"    {k['ms']:6.2f}  {k['shape']:28s} …{k['op'][-70:]}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--shapes", default="gauss2,gauss8", help=f"comma-separated, of {sorted(SHAPES)}")
    p.add_argument("--attention", default="deferred", choices=("deferred", "softmax"))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="profiled (and separately timed) steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the profiles as JSON")
    args = p.parse_args(argv)
    shapes = [s for s in args.shapes.split(",") if s]
    for s in shapes:
        if s not in SHAPES:
            p.error(f"unknown shape {s!r}; choose from {sorted(SHAPES)}")
    if args.batch_size < 1 or args.steps < 1:
        p.error("--batch-size and --steps must be >= 1")
    info = machine_info()
    print(f"{info['cpu']}, {info['cores_usable']} usable cores, load {info['load_avg_1_5_15']}, "
          f"jax {info['jax']}, GLIBC_TUNABLES='{os.environ.get('GLIBC_TUNABLES', '')}', {info['date']}")
    results = []
    for shape in shapes:
        result = profile(args.preset, shape, args.attention, args.batch_size, args.steps, args.seed)
        print(format_profile(result), flush=True)
        results.append(result)
    write_json(args.json, {"machine": info, "argv": sys.argv[1:] if argv is None else argv, "profiles": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
