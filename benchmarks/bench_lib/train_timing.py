"""Timing a compiled training chunk of the library, ACTIVA's and MACE-TNP's alike.

Both models train through :func:`activa_ppl.loop.chunk_function`: a jitted
``run(state, length, batch_key, *arrays) -> (state, losses (eval_every,))`` whose step count
``length`` is traced. Here it is lowered and compiled once for the chunk's arguments, its FLOPs
per step come from XLA's cost analysis of the compiled chunk (a loop body is counted once, so
the chunk's count is one step's), and it runs one warm-up chunk and then timed chunks.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from bench_lib.machine import block, peak_rss_mb, timed_repeats, xla_cost

EST_FRACTION = 0.1  # assumed fraction of the matmul peak when sizing chunks from a step's FLOPs
MAX_CHUNKS = 200  # most timed chunks per model and cell


def choose_chunk(step_flops: float | None, spec: dict) -> int:
    """Steps per chunk: ``spec["steps_per_chunk"]`` if set, 2 for ``--quick``, else about 0.5 s
    of steps at :data:`EST_FRACTION` of the matmul peak (at most 50)."""
    if spec["steps_per_chunk"]:
        return spec["steps_per_chunk"]
    if spec["quick"]:
        return 2
    est_step_s = (step_flops or 1e9) / (EST_FRACTION * spec["peak_gflops"] * 1e9)
    return int(min(50, max(1, round(0.5 / max(est_step_s, 1e-4)))))


def time_training(chunk_fn, state, args: tuple, *, chunk_len: int, batch_size: int,
                  step_flops: float | None, step_source: str, target_s: float,
                  extra: dict | None = None):
    """Compile ``chunk_fn(state, *args)`` (``args = (length, batch_key, *arrays)`` with
    ``length == chunk_len``), then time one warm-up chunk and chunks for ``target_s`` seconds.

    ``step_flops``: one step's FLOPs from a cheaper count (``step_source`` names it), used when
    the compiled chunk has no cost analysis and to detect an XLA that counts every loop trip.
    ``extra``: more entries of the summary. Returns ``(state, summary)``.
    """
    t0 = time.perf_counter()
    executable = chunk_fn.lower(state, *args).compile()
    compile_s = time.perf_counter() - t0
    try:
        chunk_cost = executable.cost_analysis()
    except Exception:  # pragma: no cover - depends on the jax version
        chunk_cost = None
    chunk_flops, chunk_bytes = xla_cost(chunk_cost), xla_cost(chunk_cost, "bytes accessed")
    flops_step, source = step_flops, step_source
    if chunk_flops:
        # XLA counts a loop body once: the chunk's count is one step's. Should a future XLA
        # multiply by the trip count, divide it back.
        if step_flops and chunk_flops > 1.5 * step_flops and chunk_len > 1:
            chunk_flops /= chunk_len
        flops_step, source = chunk_flops, "compiled chunk"

    t0 = time.perf_counter()
    state, losses = block(executable(state, *args))
    warmup_s = time.perf_counter() - t0
    if not np.all(np.isfinite(np.asarray(losses)[:chunk_len])):
        raise FloatingPointError("non-finite loss during the benchmark")
    holder = [state]

    def one():
        holder[0], _ = block(executable(holder[0], *args))

    chunk_s = timed_repeats(one, target_s, 3, MAX_CHUNKS)
    summary = _summary(batch_size, chunk_len, compile_s, warmup_s, chunk_s, flops_step, source)
    # the warm-up chunk's losses: from the same state and minibatches in every code path of a model
    summary["first_chunk_losses"] = [float(x) for x in np.asarray(losses)[:chunk_len]]
    summary.update(extra or {})
    summary["flop_per_byte"] = chunk_flops / chunk_bytes if chunk_flops and chunk_bytes else None
    return holder[0], summary


def _summary(batch_size, chunk_len, compile_s, warmup_s, chunk_s, flops_step, flops_source) -> dict:
    step_s = [c / chunk_len for c in chunk_s]
    med = statistics.median(step_s)
    return {
        "batch_size": batch_size, "steps_per_chunk": chunk_len, "timed_chunks": len(chunk_s),
        "timed_steps": chunk_len * len(chunk_s), "compile_s": compile_s, "warmup_chunk_s": warmup_s,
        "chunk_s": chunk_s, "median_step_ms": 1e3 * med, "tasks_per_s": batch_size / med,
        "tasks_per_s_min": batch_size / max(step_s), "tasks_per_s_max": batch_size / min(step_s),
        "gflop_per_step": flops_step / 1e9 if flops_step else None, "flops_source": flops_source,
        "gflops": flops_step / med / 1e9 if flops_step else None, "peak_rss_mb": peak_rss_mb(),
    }
