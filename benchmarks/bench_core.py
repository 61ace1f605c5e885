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
    python benchmarks/bench_core.py --json bench.json      # also write every number

Timings on a shared CPU box vary by about +-30 % run to run: compare runs side by side.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

SHAPES = {  # name -> (N samples per dataset, d variables)
    "gauss2": (100, 2),   # the paper's Gauss 2 sets
    "gauss8": (80, 8),    # the paper's Gauss 8 sets
    "sergio": (30, 8),    # the paper's SERGIO sets (30 cells, 8 genes)
}
TRAIN_TASKS = 512  # size of the simulated training set the minibatches are drawn from
GOALS = {"train_frac_paper": 0.60, "train_frac_small": 0.40, "predict_ms": 20.0, "batch_vs_dowhy": 1000.0}
RESULT_TAG = "BENCH_RESULT "
EST_FRACTION = 0.1  # assumed fraction of the matmul peak when sizing chunks from a step's FLOPs


# --------------------------------------------------------------------------- machine details
def machine_info() -> dict:
    import jax

    import activa_ppl

    cpu, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu == "unknown":
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
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
        "simd": [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags],
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
    import jax

    for leaf in jax.tree_util.tree_leaves(tree):
        if hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()
    return tree


def _flops(cost, key: str = "flops") -> float | None:
    """``flops`` (or another ``key``, e.g. ``"bytes accessed"``) of a jax cost analysis (a dict,
    or a list of dicts in older jax)."""
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not isinstance(cost, dict):
        return None
    value = cost.get(key)
    return float(value) if value is not None and value > 0 else None


def _timed_repeats(fn, target_s: float, min_reps: int, max_reps: int) -> list[float]:
    """Call ``fn`` (which blocks) until ``target_s`` seconds are spent or ``max_reps`` calls."""
    times, start = [], time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < target_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


# --------------------------------------------------------------------------- matmul peak
def matmul_peak(sizes, chain: int = 8, target_s: float = 1.0) -> dict:
    """Best float32 matmul rate of this machine (GFLOP/s), all cores, through XLA.

    For each size n a jitted chain of ``chain`` (n, n) @ (n, n) products (2 n^3 FLOPs each,
    checked against XLA's cost analysis) is timed; the best call over ``target_s`` seconds
    counts. Returns the best rate and the per-size rates.
    """
    import jax
    import jax.numpy as jnp

    per_size = {}
    for n in sizes:
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
        b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32) / math.sqrt(n)

        def f(a, b):
            for _ in range(chain):
                a = a @ b
            return a

        compiled = jax.jit(f).lower(a, b).compile()
        flops = 2.0 * n**3 * chain
        xla = _flops(compiled.cost_analysis())
        block(compiled(a, b))
        times = _timed_repeats(lambda: block(compiled(a, b)), target_s, 3, 1000)
        per_size[str(n)] = {"gflops": flops / min(times) / 1e9, "xla_flops_ratio": (xla / flops) if xla else None}
    best = max(per_size.values(), key=lambda r: r["gflops"])
    return {"gflops": best["gflops"], "sizes": per_size, "chain": chain}


# --------------------------------------------------------------------------- data
def _dataset(shape: str, train_tasks: int, seed: int):
    """A linear-Gaussian dataset of the shape's (N, d): only shapes matter for the speed
    (the SERGIO shape uses simulated linear data of SERGIO's size; no SERGIO simulation)."""
    from activa_ppl import simulate

    n, d = SHAPES[shape]
    num_scms = max(4, -(-train_tasks // d) * 10 // 8 + 1)  # 80 % train split
    return simulate.linear_dataset(num_scms=num_scms, num_vars=d, noise="gauss", num_samples=n, seed=seed)


def _param_count(tree) -> int:
    import jax

    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def mace_param_count(preset: str, d: int) -> int:
    import jax

    from activa_ppl.baselines.mace_tnp import MaceTnpConfig, init_params

    cfg = MaceTnpConfig.preset(preset, d)
    return _param_count(jax.eval_shape(lambda k: init_params(cfg, k), jax.random.PRNGKey(0)))


def closest_mace_preset(activa_params: int, d: int) -> tuple[str, int]:
    """The MACE-TNP preset whose parameter count is closest (in ratio) to ``activa_params``."""
    counts = {name: mace_param_count(name, d) for name in ("tiny", "small", "paper")}
    name = min(counts, key=lambda k: abs(math.log(counts[k] / activa_params)))
    return name, counts[name]


# --------------------------------------------------------------------------- training timing
def _time_chunks(run_compiled, state, arrays, chunk_len: int, target_s: float, max_chunks: int):
    """One warm-up chunk, then chunks until ``target_s``; returns (state, warm-up s, chunk times)."""
    t0 = time.perf_counter()
    state, losses = block(run_compiled(state, *arrays))
    warmup_s = time.perf_counter() - t0
    if not np.all(np.isfinite(np.asarray(losses))):
        raise FloatingPointError("non-finite loss during the benchmark")
    holder = [state]

    def one():
        holder[0], _ = block(run_compiled(holder[0], *arrays))

    times = _timed_repeats(one, target_s, 3, max_chunks)
    return holder[0], warmup_s, times


def _choose_chunk(est_step_s: float, fixed: int | None, quick: bool) -> int:
    if fixed:
        return fixed
    if quick:
        return 2
    return int(min(50, max(1, round(0.5 / max(est_step_s, 1e-4)))))  # ~0.5 s per chunk


def _train_summary(batch_size, chunk_len, compile_s, warmup_s, chunk_s, flops_step, flops_source, rss):
    step_s = [c / chunk_len for c in chunk_s]
    med = statistics.median(step_s)
    return {
        "batch_size": batch_size, "steps_per_chunk": chunk_len, "timed_chunks": len(chunk_s),
        "timed_steps": chunk_len * len(chunk_s), "compile_s": compile_s, "warmup_chunk_s": warmup_s,
        "chunk_s": chunk_s, "median_step_ms": 1e3 * med, "tasks_per_s": batch_size / med,
        "tasks_per_s_min": batch_size / max(step_s), "tasks_per_s_max": batch_size / min(step_s),
        "gflop_per_step": flops_step / 1e9 if flops_step else None, "flops_source": flops_source,
        "gflops": flops_step / med / 1e9 if flops_step else None, "peak_rss_mb": rss,
    }


# --------------------------------------------------------------------------- ACTIVA worker
def worker_activa(spec: dict) -> dict:
    import jax
    import jax.numpy as jnp

    from activa_ppl.config import ActivaConfig, TrainConfig
    from activa_ppl.fitted import FittedActiva
    from activa_ppl.mixture import GaussianMixture, as_prng_key
    from activa_ppl.model import Activa, _predictive_arrays_jit
    from activa_ppl.training import svi_chunks, task_arrays
    from activa_ppl.validation import as_observations, resolve_targets

    preset, shape, quick = spec["preset"], spec["shape"], spec["quick"]
    n, d = SHAPES[shape]
    cfg = ActivaConfig.preset(preset)
    activa = Activa(cfg)
    data = _dataset(shape, spec["train_tasks"], spec["seed"])
    train_arrays = task_arrays(data.tasks("train"))
    num_tasks = int(train_arrays[0].shape[0])
    batch_size = min(spec["batch_size"], num_tasks)
    max_len = spec["steps_per_chunk"] or 50
    tcfg = TrainConfig(batch_size=batch_size, eval_every=max_len, seed=spec["seed"])

    chunks = svi_chunks(activa, tcfg, num_tasks)
    state = chunks.init(*train_arrays)
    params = chunks.svi.get_params(state)
    num_params = _param_count(params)

    # FLOPs of one SVI step: a single svi.update on one minibatch, lowered (no compile).
    batch = tuple(a[:batch_size] for a in train_arrays)
    step = jax.jit(lambda s, *b: chunks.svi.update(s, *b, total_tasks=num_tasks))
    lowered_step_flops = _flops(step.lower(state, *batch).cost_analysis())
    est_step_s = (lowered_step_flops or 1e9) / (EST_FRACTION * spec["peak_gflops"] * 1e9)
    chunk_len = min(_choose_chunk(est_step_s, spec["steps_per_chunk"], quick), max_len)

    # --- the compiled chunk of activa_ppl.train -------------------------------------------------
    t0 = time.perf_counter()
    compiled = chunks.run.lower(chunk_len, state, *train_arrays).compile()
    compile_s = time.perf_counter() - t0
    flops_step, source = lowered_step_flops, "lowered svi.update"
    executable = getattr(compiled, "compiled", compiled)  # the jax Compiled behind a wrapper
    try:
        chunk_cost = executable.cost_analysis()
    except Exception:  # pragma: no cover - depends on the jax version
        chunk_cost = None
    chunk_flops, chunk_bytes = _flops(chunk_cost), _flops(chunk_cost, "bytes accessed")
    if chunk_flops:
        # XLA counts a loop body once: the chunk's count is one step's. Should a future XLA
        # multiply by the trip count, divide it back.
        if lowered_step_flops and chunk_flops > 1.5 * lowered_step_flops and chunk_len > 1:
            chunk_flops /= chunk_len
        flops_step, source = chunk_flops, "compiled chunk"
    state, warmup_s, chunk_s = _time_chunks(compiled, state, train_arrays, chunk_len,
                                            spec["target_s"], 200)
    train = _train_summary(batch_size, chunk_len, compile_s, warmup_s, chunk_s, flops_step, source,
                           peak_rss_mb())
    train.update(num_particles=cfg.num_particles, train_tasks=num_tasks,
                 gflop_per_step_lowered=(lowered_step_flops or 0) / 1e9,
                 flop_per_byte=chunk_flops / chunk_bytes if chunk_flops and chunk_bytes else None)

    # --- prediction (random initial parameters) -------------------------------------------------
    params = chunks.svi.get_params(state)
    fitted = FittedActiva(activa=activa, params=params)
    test = data.tasks(None)
    obs = np.asarray(test.observational[0])
    target = int(np.argmax(test.targets[0]))
    t0 = time.perf_counter()
    block(fitted.predict(obs, target=target, seed=0))  # compiles for Q = 1
    predict_first_s = time.perf_counter() - t0
    for i in range(2):
        block(fitted.predict(obs, target=target, seed=i + 1))
    lat = []
    for i in range(spec["predict_calls"]):
        t0 = time.perf_counter()
        block(fitted.predict(obs, target=target, seed=i))
        lat.append(time.perf_counter() - t0)

    # Where one query's time goes: input checks, the compiled forward pass, the mixture.
    S = cfg.num_predictive_latents
    array, names = as_observations(obs, "obs")
    mask = resolve_targets(target, names, "target")
    key = as_prng_key(0)
    o1, t1, i1 = jnp.asarray(array[None]), jnp.asarray(mask[None]), jnp.asarray(np.array([0], np.int32))
    forward = lambda: block(_predictive_arrays_jit(activa, params, key, o1, t1, i1, S))  # noqa: E731
    w, m, c = forward()

    def wrap():
        mix = GaussianMixture(weights=w, locs=m, covariances=c)
        block(mix[0].with_names(names))

    def checks():
        a, nm = as_observations(obs, "obs")
        resolve_targets(target, nm, "target")

    parts = {}
    for name, fn in (("forward", forward), ("mixture", wrap), ("input_checks", checks)):
        fn()
        parts[name] = 1e3 * statistics.median(_timed_repeats(fn, 0.3 if quick else 1.0, 5, 2000))

    q = spec["predict_batch"]
    pick = np.arange(q) % len(test.scm)
    b_obs, b_tgt, b_idx = (test.observational[pick], test.targets[pick],
                           test.intervention_index[pick].astype(np.int32))
    t0 = time.perf_counter()
    block(fitted.predict_batch(b_obs, b_tgt, b_idx, seed=0))  # compiles for Q = predict_batch
    batch_first_s = time.perf_counter() - t0
    ob, tb, ib = jnp.asarray(b_obs), jnp.asarray(b_tgt, jnp.float32), jnp.asarray(b_idx)
    batch_fwd = lambda: block(_predictive_arrays_jit(activa, params, key, ob, tb, ib, S))  # noqa: E731
    batch_fwd()
    # The full call and the forward pass alone, interleaved (so that both see the same load).
    batch_call = lambda: block(fitted.predict_batch(b_obs, b_tgt, b_idx, seed=1))  # noqa: E731
    batch_s, fwd_s, start = [], [], time.perf_counter()
    while len(batch_s) < spec["batch_repeats"] and (
            len(batch_s) < 2 or time.perf_counter() - start < spec["target_s"] / 2):
        for fn, out in ((batch_call, batch_s), (batch_fwd, fwd_s)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    batch_fwd_s = statistics.median(fwd_s)
    try:
        batch_flops = _flops(_predictive_arrays_jit.lower(activa, params, key, ob, tb, ib, S).cost_analysis())
    except Exception:  # pragma: no cover
        batch_flops = None
    med_batch = statistics.median(batch_s)
    return {
        "model": "activa", "preset": preset, "shape": shape, "N": n, "d": d, "num_params": num_params,
        "train": train,
        "predict": {
            "num_latents": S, "first_call_s": predict_first_s, "calls": len(lat),
            "latency_ms_median": 1e3 * statistics.median(lat), "latency_ms_min": 1e3 * min(lat),
            "latency_ms_max": 1e3 * max(lat),
            "forward_ms": parts["forward"], "mixture_ms": parts["mixture"],
            "input_checks_ms": parts["input_checks"],
        },
        "predict_batch": {
            "queries": q, "first_call_s": batch_first_s, "call_s": batch_s, "median_call_s": med_batch,
            "queries_per_s": q / med_batch, "forward_s": batch_fwd_s,
            "gflop_per_call_lowered": batch_flops / 1e9 if batch_flops else None,
            "gflops": batch_flops / batch_fwd_s / 1e9 if batch_flops else None,
        },
        "peak_rss_mb_end": peak_rss_mb(),
    }


# --------------------------------------------------------------------------- MACE-TNP worker
def worker_mace(spec: dict) -> dict:
    import jax
    import jax.numpy as jnp

    from activa_ppl.baselines import mace_tnp as mt

    preset, shape, quick = spec["preset"], spec["shape"], spec["quick"]
    n, d = SHAPES[shape]
    cfg = mt.MaceTnpConfig.preset(preset, d)
    data = _dataset(shape, spec["train_tasks"], spec["seed"])
    train_tasks = data.tasks("train")
    obs, inter, targets, _ = mt._task_arrays(train_tasks, data)
    num_tasks = int(obs.shape[0])
    batch_size = min(spec["batch_size"], num_tasks)
    tcfg = mt.MaceTnpTrainConfig(batch_size=batch_size, seed=spec["seed"])
    optimizer, run = mt._chunk_runner(cfg, tcfg, num_tasks)
    params = mt.init_params(cfg, jax.random.PRNGKey(spec["seed"]), num_samples=n)
    state = mt.MaceTnpTrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
    arrays = (obs, inter, targets)

    lowered1 = run.lower(1, state, *arrays)
    lowered_flops = _flops(lowered1.cost_analysis())
    est_step_s = (lowered_flops or 1e9) / (EST_FRACTION * spec["peak_gflops"] * 1e9)
    chunk_len = _choose_chunk(est_step_s, spec["steps_per_chunk"], quick)
    t0 = time.perf_counter()
    compiled = run.lower(chunk_len, state, *arrays).compile()
    compile_s = time.perf_counter() - t0
    flops_step, source = lowered_flops, "lowered chunk"
    chunk_cost = compiled.cost_analysis()
    chunk_flops, chunk_bytes = _flops(chunk_cost), _flops(chunk_cost, "bytes accessed")
    if chunk_flops:
        if lowered_flops and chunk_flops > 1.5 * lowered_flops and chunk_len > 1:
            chunk_flops /= chunk_len
        flops_step, source = chunk_flops, "compiled chunk"
    state, warmup_s, chunk_s = _time_chunks(compiled, state, arrays, chunk_len, spec["target_s"], 200)
    train = _train_summary(batch_size, chunk_len, compile_s, warmup_s, chunk_s, flops_step, source,
                           peak_rss_mb())
    train["flop_per_byte"] = chunk_flops / chunk_bytes if chunk_flops and chunk_bytes else None

    fitted = mt.FittedMaceTnp(config=cfg, params=state.params)
    test = data.tasks(None)
    values = np.asarray(data.intervention_values[test.scm, test.query], np.float32)
    o, tgt = np.asarray(test.observational[0]), int(np.argmax(test.targets[0]))
    block(fitted.predict(o, target=tgt, value=float(values[0])))
    lat = _timed_repeats(lambda: block(fitted.predict(o, target=tgt, value=float(values[0]))),
                         0.5 if quick else 1.5, 3, spec["predict_calls"])
    q = spec["predict_batch"]
    pick = np.arange(q) % len(test.scm)
    b = (test.observational[pick], test.targets[pick], values[pick])
    t0 = time.perf_counter()
    block(fitted.predict_batch(*b))
    batch_first_s = time.perf_counter() - t0
    batch_s = _timed_repeats(lambda: block(fitted.predict_batch(*b)), spec["target_s"] / 2, 2,
                             spec["batch_repeats"])
    med_batch = statistics.median(batch_s)
    return {
        "model": "mace_tnp", "preset": preset, "shape": shape, "N": n, "d": d,
        "num_params": _param_count(state.params), "train": train,
        "predict": {"latency_ms_median": 1e3 * statistics.median(lat), "calls": len(lat)},
        "predict_batch": {"queries": q, "first_call_s": batch_first_s, "call_s": batch_s,
                          "median_call_s": med_batch, "queries_per_s": q / med_batch},
        "peak_rss_mb_end": peak_rss_mb(),
    }


# --------------------------------------------------------------------------- DoWhy
def bench_dowhy(shape: str, num_datasets: int, seed: int, route: str = "linear") -> dict:
    """Per dataset: fit a gcm.StructuralCausalModel on the true graph (linear additive-noise
    mechanisms, Gaussian noise and roots) and draw N interventional samples for one query.

    ``route="linear"`` hand-picks linear mechanisms: the cheapest DoWhy route for these linear
    SCMs, so the ratio against ACTIVA is conservative. ``route="auto"`` is what a user who does
    not know the mechanisms would do: ``gcm.auto.assign_causal_mechanisms`` (default quality,
    model selection among regressors) on the true graph, then fit and sample.
    """
    import logging
    import warnings

    import networkx as nx
    import pandas as pd
    from dowhy import gcm
    from scipy import stats

    logging.getLogger("dowhy").setLevel(logging.ERROR)
    try:
        gcm.config.disable_progress_bars()
    except AttributeError:  # pragma: no cover
        pass
    from activa_ppl import simulate

    n, d = SHAPES[shape]
    data = simulate.linear_dataset(num_scms=num_datasets, num_vars=d, noise="gauss", num_samples=n,
                                   seed=seed + 1, edge_prob=0.5)
    value = float(data.metadata["intervention_value"])
    state = np.random.get_state()
    np.random.seed(seed)
    fit_s, sample_s = [], []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for s in range(num_datasets + 1):  # the first one is an untimed warm-up
                k = s % num_datasets
                t0 = time.perf_counter()
                graph = nx.DiGraph()
                graph.add_nodes_from(range(d))
                graph.add_edges_from((a, b) for a in range(d) for b in range(d) if data.adjacency[k, a, b])
                model = gcm.StructuralCausalModel(graph)
                frame = pd.DataFrame(data.observational[k].astype(float), columns=range(d))
                for j in (range(d) if route == "linear" else ()):
                    if list(graph.predecessors(j)):
                        model.set_causal_mechanism(j, gcm.AdditiveNoiseModel(
                            gcm.ml.create_linear_regressor(), noise_model=gcm.ScipyDistribution(stats.norm)))
                    else:
                        model.set_causal_mechanism(j, gcm.ScipyDistribution(stats.norm))
                if route == "auto":
                    gcm.auto.assign_causal_mechanisms(model, frame)
                gcm.fit(model, frame)
                t1 = time.perf_counter()
                target = s % d
                gcm.interventional_samples(model, {target: lambda x: value}, num_samples_to_draw=n)
                t2 = time.perf_counter()
                if s:
                    fit_s.append(t1 - t0)
                    sample_s.append(t2 - t1)
    finally:
        np.random.set_state(state)
    per_query = [a + b for a, b in zip(fit_s, sample_s)]
    return {
        "shape": shape, "route": route, "N": n, "d": d, "datasets": num_datasets, "samples_per_query": n,
        "fit_ms_median": 1e3 * statistics.median(fit_s), "sample_ms_median": 1e3 * statistics.median(sample_s),
        "query_ms_median": 1e3 * statistics.median(per_query),
        "queries_per_s": 1 / statistics.median(per_query),
    }


# --------------------------------------------------------------------------- subprocesses
#: glibc's allocator with huge pages: XLA's CPU backend allocates its temporaries every step, and
#: glibc returning them to the OS costs page faults (shared/notes: 10–25 % faster steps).
ALLOCATOR_ENV = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def run_worker(kind: str, spec: dict, env: dict | None = None) -> dict:
    """Run one worker in a fresh Python process (peak RSS attributable to it alone).

    ``env``: extra environment variables of the worker (e.g. :data:`ALLOCATOR_ENV`)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, json.dumps(spec)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True,
                          env=None if env is None else {**os.environ, **env})
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise RuntimeError(f"benchmark worker {kind} {spec.get('preset')}@{spec.get('shape')} failed "
                       f"(exit {proc.returncode}); its stderr is above")


# --------------------------------------------------------------------------- output
def _table(head, rows, left=2):
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return [fmt(head), "  ".join("-" * w for w in widths), *(fmt(row) for row in rows)]


def _ratio(x) -> str:
    return "n/a" if x is None else f"{x:.0f}" if x >= 10 else f"{x:.2f}"


def _f(x, spec=".0f", none="n/a"):
    return none if x is None else format(x, spec)


def goal_rows(report: dict) -> list[dict]:
    """The goals as rows ``{goal, preset, shape, measured, target, met}``."""
    rows = []
    dowhy = {r["shape"]: r for r in report.get("dowhy", []) if r.get("route", "linear") == "linear"}
    auto = {r["shape"]: r for r in report.get("dowhy", []) if r.get("route") == "auto"}
    for cell in report["cells"]:
        a = cell["activa"]
        preset, shape = a["preset"], a["shape"]
        frac = cell.get("train_peak_fraction")
        goal = {"paper": GOALS["train_frac_paper"], "small": GOALS["train_frac_small"]}.get(preset)
        if goal is not None and frac is not None:
            rows.append({"goal": "training step >= matmul peak fraction", "preset": preset, "shape": shape,
                         "measured": f"{100 * frac:.1f} %", "target": f">= {100 * goal:.0f} %",
                         "met": frac >= goal})
        lat = a["predict"]["latency_ms_median"]
        rows.append({"goal": "single-query predict latency", "preset": preset, "shape": shape,
                     "measured": f"{lat:.2f} ms", "target": f"< {GOALS['predict_ms']:.0f} ms",
                     "met": lat < GOALS["predict_ms"]})
        if shape in dowhy:
            ratio = a["predict_batch"]["queries_per_s"] / dowhy[shape]["queries_per_s"]
            rows.append({"goal": "batched predict / DoWhy (linear)", "preset": preset, "shape": shape,
                         "measured": f"{_ratio(ratio)}x", "target": f">= {GOALS['batch_vs_dowhy']:.0f}x",
                         "met": ratio >= GOALS["batch_vs_dowhy"]})
        if shape in auto:
            ratio = a["predict_batch"]["queries_per_s"] / auto[shape]["queries_per_s"]
            rows.append({"goal": "batched predict / DoWhy (auto)", "preset": preset, "shape": shape,
                         "measured": f"{_ratio(ratio)}x", "target": f">= {GOALS['batch_vs_dowhy']:.0f}x",
                         "met": ratio >= GOALS["batch_vs_dowhy"]})
    return rows


def format_report(report: dict) -> str:
    info, settings = report["machine"], report["settings"]
    lines = ["activa_ppl core benchmark", "=" * 25]
    for key in ("date", "cpu", "platform", "python", "jax_backend"):
        lines.append(f"{key:<14} {info[key]}")
    lines.append(f"{'cores':<14} {info['cores_logical']} logical, {info['cores_usable']} usable; "
                 f"SIMD {' '.join(info['simd']) or 'n/a'}")
    lines.append(f"{'load avg':<14} {' '.join(str(x) for x in info['load_avg_1_5_15'])} (1/5/15 min, at start); "
                 f"{' '.join(str(x) for x in report['load_avg_end'])} at the end")
    lines.append(f"{'versions':<14} jax {info['jax']}, jaxlib {info['jaxlib']}, numpy {info['numpy']}, "
                 f"numpyro {info['numpyro']}, flax {info['flax']}, optax {info['optax']}, "
                 f"activa_ppl {info['activa_ppl']}")
    env = ", ".join(f"{k}={v!r}" for k, v in info["env"].items())
    lines.append(f"{'env':<14} {env}")
    lines.append(f"{'settings':<14} " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    mm = report["matmul_peak"]
    sizes = ", ".join(f"n={k}: {v['gflops']:.1f}" for k, v in mm["start"]["sizes"].items())
    lines.append(f"{'matmul peak':<14} {mm['gflops']:.1f} GFLOP/s float32 (best of start {mm['start']['gflops']:.1f} "
                 f"and end {mm['end']['gflops']:.1f}; at start per size {sizes})")
    lines.append("")

    rows = []
    for cell in report["cells"]:
        for key in ("activa", "mace"):
            r = cell.get(key)
            if r is None:
                continue
            t = r["train"]
            frac = t["gflops"] / mm["gflops"] if t.get("gflops") else None
            rows.append([
                "ACTIVA" if key == "activa" else "MACE-TNP", r["preset"], f"{r['shape']} (N={r['N']}, d={r['d']})",
                f"{r['num_params']:,}", str(t["batch_size"]), f"{t['compile_s']:.1f}",
                f"{t['steps_per_chunk']}x{t['timed_chunks']}", f"{t['median_step_ms']:.1f}",
                f"{t['tasks_per_s']:.0f}", f"{t['tasks_per_s_min']:.0f}-{t['tasks_per_s_max']:.0f}",
                _f(t.get("gflop_per_step"), ".3f"), _f(t.get("gflops"), ".1f"),
                _f(None if frac is None else 100 * frac, ".1f"), _f(t.get("flop_per_byte"), ".1f"),
                f"{t['peak_rss_mb']:.0f}",
            ])
    lines.append("Training (compiled chunk of svi.update as in activa_ppl.train; MACE-TNP: its AdamW chunk)")
    lines += _table(["model", "preset", "shape", "params", "batch", "compile s", "steps", "ms/step",
                     "tasks/s", "min-max", "GFLOP/step", "GFLOP/s", "% peak", "FLOP/byte", "train RSS MB"], rows, left=3)
    lines.append("")

    dowhy = {r["shape"]: r for r in report.get("dowhy", []) if r.get("route", "linear") == "linear"}
    rows = []
    for cell in report["cells"]:
        a, mc = cell["activa"], cell.get("mace")
        p, b = a["predict"], a["predict_batch"]
        dw = dowhy.get(a["shape"])
        rows.append([
            a["preset"], f"{a['shape']} (N={a['N']}, d={a['d']})", str(p["num_latents"]),
            f"{p['latency_ms_median']:.2f}", f"{p['forward_ms']:.2f}",
            f"{p['latency_ms_median'] - p['forward_ms']:.2f}", str(b["queries"]),
            f"{1e3 * b['median_call_s']:.0f}", f"{1e3 * b['forward_s']:.0f}", f"{b['queries_per_s']:.0f}",
            _f(dw and dw["queries_per_s"], ".1f"),
            _ratio(dw and b["queries_per_s"] / dw["queries_per_s"]),
            _f(mc and mc["predict_batch"]["queries_per_s"], ".0f"),
            _f(mc and b["queries_per_s"] / mc["predict_batch"]["queries_per_s"], ".2f"),
        ])
    lines.append("Prediction (random init params; predict = 1 query, predict_batch = Q queries)")
    lines += _table(["preset", "shape", "S", "predict ms", "fwd ms", "python ms", "Q", "batch ms",
                     "batch fwd ms", "queries/s", "DoWhy q/s", "x DoWhy", "MACE q/s", "x MACE"], rows)
    lines.append("")

    rows = []
    for cell in report["cells"]:
        a, mc = cell["activa"], cell.get("mace")
        if mc is None:
            continue
        rows.append([a["preset"], f"{a['shape']} (N={a['N']}, d={a['d']})", mc["preset"],
                     f"{a['num_params']:,}", f"{mc['num_params']:,}", f"{a['train']['tasks_per_s']:.0f}",
                     f"{mc['train']['tasks_per_s']:.0f}", f"{a['train']['tasks_per_s'] / mc['train']['tasks_per_s']:.2f}",
                     f"{a['predict_batch']['queries_per_s']:.0f}", f"{mc['predict_batch']['queries_per_s']:.0f}",
                     f"{a['predict']['latency_ms_median']:.2f}", f"{mc['predict']['latency_ms_median']:.2f}"])
    if rows:
        lines.append("ACTIVA vs MACE-TNP at equal size (MACE-TNP preset of the closest parameter count)")
        lines += _table(["preset", "shape", "MACE preset", "ACTIVA params", "MACE params", "ACTIVA tasks/s",
                         "MACE tasks/s", "train x", "ACTIVA q/s", "MACE q/s", "ACTIVA ms", "MACE ms"], rows)
        lines.append("")

    if dowhy:
        rows = [[r["shape"], r.get("route", "linear"), str(r["datasets"]), str(r["samples_per_query"]),
                 f"{r['fit_ms_median']:.1f}",
                 f"{r['sample_ms_median']:.1f}", f"{r['query_ms_median']:.1f}", f"{r['queries_per_s']:.1f}"]
                for r in report["dowhy"]]
        lines.append("DoWhy gcm per dataset (true graph; linear: hand-picked linear additive-noise mechanisms, "
                     "auto: gcm.auto.assign_causal_mechanisms; fit + interventional_samples)")
        lines += _table(["shape", "route", "datasets", "samples", "fit ms", "sample ms", "query ms", "queries/s"],
                        rows, left=2)
        lines.append("")

    rows = []
    for cell in report["cells"]:
        a = cell["activa"]
        p, b = a["predict"], a["predict_batch"]
        per_query = b["gflop_per_call_lowered"] / b["queries"] if b.get("gflop_per_call_lowered") else None
        at_peak = mm["gflops"] / per_query if per_query else None  # queries/s at the matmul peak
        dw = dowhy.get(a["shape"])
        rows.append([a["preset"], a["shape"], f"{p['latency_ms_median']:.2f}", f"{p['input_checks_ms']:.3f}",
                     f"{p['forward_ms']:.3f}", f"{p['mixture_ms']:.3f}",
                     f"{100 * p['forward_ms'] / p['latency_ms_median']:.0f}",
                     f"{100 * b['forward_s'] / b['median_call_s']:.0f}", _f(b.get("gflops"), ".1f"),
                     _f(per_query and 1e3 * per_query, ".1f"), _f(at_peak, ".0f"),
                     _ratio(at_peak and dw and at_peak / dw["queries_per_s"])])
    lines.append("Where prediction time goes (medians; predict = checks + forward + mixture + dispatch; "
                 "q/s @ peak: batched queries/s if the forward pass ran at the matmul peak)")
    lines += _table(["preset", "shape", "predict ms", "checks ms", "forward ms", "mixture ms", "fwd % (1)",
                     "fwd % (Q)", "batch GFLOP/s", "MFLOP/query", "q/s @ peak", "x DoWhy @ peak"], rows)
    lines.append("")

    alloc = report.get("allocator")
    if alloc:
        base, tuned = report["cells"][0], alloc["activa"]
        a0 = base["activa"]
        env = " ".join(f"{k}={v}" for k, v in alloc["env"].items())
        lines.append(f"Allocator, side by side ({a0['preset']} @ {a0['shape']}): default "
                     f"{a0['train']['tasks_per_s']:.0f} tasks/s ({100 * base.get('train_peak_fraction', 0):.1f} % peak); "
                     f"{env}: {tuned['train']['tasks_per_s']:.0f} tasks/s ({100 * alloc['train_peak_fraction']:.1f} % peak), "
                     f"x{tuned['train']['tasks_per_s'] / a0['train']['tasks_per_s']:.2f}")
        lines.append("")

    lines.append("Goals")
    g = [[r["goal"], r["preset"], r["shape"], r["measured"], r["target"], "met" if r["met"] else "GAP"]
         for r in report["goals"]]
    lines += _table(["goal", "preset", "shape", "measured", "target", "status"], g, left=3)
    rss = [c["activa"]["train"]["peak_rss_mb"] for c in report["cells"]
           if c["activa"]["preset"] == "paper" and c["activa"]["shape"] == "gauss8"]
    if rss:
        lines.append(f"peak RSS of paper-preset training at the Gauss 8 shape (its own process): {rss[0]:.0f} MB")
    return "\n".join(lines)


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


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:  # a subprocess of run_worker
        kind, spec = argv[1], json.loads(argv[2])
        result = {"activa": worker_activa, "mace": worker_mace}[kind](spec)
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0
    args = parse_args(argv)
    start = time.perf_counter()
    info = machine_info()
    settings = {
        "presets": ",".join(args.presets), "shapes": ",".join(args.shapes), "batch_size": args.batch_size,
        "steps_per_chunk": args.steps_per_chunk or "auto", "target_s": args.target_s,
        "predict_calls": args.predict_calls, "predict_batch": args.predict_batch,
        "batch_repeats": args.batch_repeats, "dowhy_datasets": args.dowhy_datasets,
        "train_tasks": args.train_tasks, "seed": args.seed, "quick": args.quick,
    }
    sizes = (256, 512) if args.quick else (256, 512, 1024, 2048)
    log = lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    log("matmul peak ...")
    peak_start = matmul_peak(sizes, target_s=0.3 if args.quick else 1.0)
    cells = []
    for shape in args.shapes:
        d = SHAPES[shape][1]
        for preset in args.presets:
            spec = {"preset": preset, "shape": shape, "quick": args.quick, "seed": args.seed,
                    "batch_size": args.batch_size, "train_tasks": args.train_tasks,
                    "steps_per_chunk": args.steps_per_chunk, "target_s": args.target_s,
                    "predict_calls": args.predict_calls, "predict_batch": args.predict_batch,
                    "batch_repeats": args.batch_repeats, "peak_gflops": peak_start["gflops"]}
            t0 = time.perf_counter()
            log(f"ACTIVA {preset} @ {shape} ...")
            cell = {"spec": spec, "activa": run_worker("activa", spec)}
            if not args.no_mace:
                mace_preset, _ = closest_mace_preset(cell["activa"]["num_params"], d)
                log(f"MACE-TNP {mace_preset} @ {shape} ...")
                cell["mace"] = run_worker("mace", {**spec, "preset": mace_preset})
            log(f"{preset} @ {shape} done in {time.perf_counter() - t0:.0f} s")
            cells.append(cell)
    allocator = None
    if not args.quick and cells and not os.environ.get("GLIBC_TUNABLES"):
        # The same first cell again, side by side, with glibc's huge-page allocator.
        spec = cells[0]["spec"]
        log(f"ACTIVA {spec['preset']} @ {spec['shape']} with {ALLOCATOR_ENV} ...")
        allocator = {"env": ALLOCATOR_ENV, "activa": run_worker("activa", spec, env=ALLOCATOR_ENV)}
    dowhy = []
    if not args.no_dowhy:
        for shape in args.shapes:
            log(f"DoWhy @ {shape} ...")
            dowhy.append(bench_dowhy(shape, args.dowhy_datasets, args.seed, route="linear"))
            dowhy.append(bench_dowhy(shape, max(1, args.dowhy_datasets // 2), args.seed, route="auto"))
    log("matmul peak (again) ...")
    peak_end = matmul_peak(sizes, target_s=0.3 if args.quick else 1.0)
    peak = max(peak_start["gflops"], peak_end["gflops"])
    if allocator is not None:
        allocator["train_peak_fraction"] = allocator["activa"]["train"]["gflops"] / peak
    for cell in cells:
        for key in ("activa", "mace"):
            if key in cell and cell[key]["train"].get("gflops"):
                cell[f"{'train' if key == 'activa' else 'mace_train'}_peak_fraction"] = \
                    cell[key]["train"]["gflops"] / peak
    report = {"machine": info, "settings": settings,
              "matmul_peak": {"gflops": peak, "start": peak_start, "end": peak_end},
              "cells": cells, "allocator": allocator, "dowhy": dowhy, "load_avg_end": [round(x, 2) for x in os.getloadavg()],
              "argv": argv}
    report["goals"] = goal_rows(report)
    report["total_s"] = time.perf_counter() - start
    print(format_report(report))
    print(f"\ntotal benchmark time {report['total_s']:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
