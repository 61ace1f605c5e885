"""One cell's ACTIVA measurements, in a process of its own: training with the compiled chunk
of :func:`activa_ppl.train` (built by ``activa_ppl.training.svi_chunks``), then
``FittedActiva.predict`` and ``predict_batch`` with the parameters it reached."""

from __future__ import annotations

import statistics
import time

import numpy as np

from bench_lib.cells import SHAPES, dataset, param_count
from bench_lib.machine import block, peak_rss_mb, timed_repeats, xla_cost
from bench_lib.train_timing import choose_chunk, time_training


def worker_activa(spec: dict) -> dict:
    """The ``activa`` entry of a cell of the report (see ``bench_core.py``)."""
    from activa_ppl.config import ActivaConfig
    from activa_ppl.model import Activa

    preset, shape = spec["preset"], spec["shape"]
    n, d = SHAPES[shape]
    activa = Activa(ActivaConfig.preset(preset, attention=spec.get("attention", "deferred")))
    data = dataset(shape, spec["train_tasks"], spec["seed"])
    params, num_params, train = _train(activa, data, spec)
    if not spec.get("shared_embedding", True):  # the old training path: prediction is the same code
        return {"model": "activa", "preset": preset, "shape": shape, "N": n, "d": d,
                "num_params": num_params, "shared_embedding": False, "attention": activa.config.attention,
                "train": train}
    predict, predict_batch = _predict(activa, params, data, spec)
    return {
        "model": "activa", "preset": preset, "shape": shape, "N": n, "d": d, "num_params": num_params,
        "train": train, "predict": predict, "predict_batch": predict_batch, "peak_rss_mb_end": peak_rss_mb(),
    }


# --------------------------------------------------------------------------- training
def _train(activa, data, spec: dict):
    """``(params after the timed chunks, parameter count, training summary)``."""
    import jax

    from activa_ppl.config import TrainConfig
    from activa_ppl.training import replicate, svi_chunks, task_arrays

    arrays = task_arrays(data.tasks("train"))
    num_tasks = int(arrays[0].shape[0])
    batch_size = min(spec["batch_size"], num_tasks)

    def chunks_of(length: int):  # the compiled loop of train(eval_every=length)
        config = TrainConfig(batch_size=batch_size, eval_every=length, seed=spec["seed"])
        return svi_chunks(activa, config, num_tasks, shared_embedding=spec.get("shared_embedding", True))

    probe = chunks_of(1)
    state = probe.init(*arrays)
    num_params = param_count(probe.svi.get_params(state))

    # FLOPs of one SVI step: a single svi.update on one minibatch, lowered (no compile).
    batch = tuple(a[:batch_size] for a in arrays)
    step = jax.jit(lambda s, *b: probe.svi.update(s, *b, total_tasks=num_tasks))
    step_flops = xla_cost(step.lower(state, *batch).cost_analysis())
    chunk_len = choose_chunk(step_flops, spec)

    chunks = chunks_of(chunk_len)
    state = chunks.init(*arrays)  # equal to the probe's state; init also readies this chunk's SVI
    length = replicate(np.int32(chunk_len), chunks.mesh)
    extra = {"num_particles": activa.config.num_particles, "train_tasks": num_tasks,
             "gflop_per_step_lowered": (step_flops or 0) / 1e9,
             "shared_embedding": spec.get("shared_embedding", True)}
    state, train = time_training(chunks.compiled, state, (length, chunks.batch_key, *arrays),
                                 chunk_len=chunk_len, batch_size=batch_size, step_flops=step_flops,
                                 step_source="lowered svi.update", target_s=spec["target_s"], extra=extra)
    return chunks.svi.get_params(state), num_params, train


# --------------------------------------------------------------------------- prediction
def _predict(activa, params, data, spec: dict) -> tuple[dict, dict]:
    """The ``predict`` (one query) and ``predict_batch`` (Q queries) entries of the result."""
    import jax

    from activa_ppl.fitted import FittedActiva
    from activa_ppl.model import predictive_arrays

    fitted = FittedActiva(activa=activa, params=params)
    # The compiled forward pass alone, on device arrays with a prebuilt key.
    forward = jax.jit(predictive_arrays, static_argnums=(0, 6))
    test = data.tasks(None)
    return _predict_one(fitted, forward, test, spec), _predict_many(fitted, forward, test, spec)


def _predict_one(fitted, forward, test, spec: dict) -> dict:
    """Latency of ``FittedActiva.predict`` and where it goes: input checks, forward, mixture."""
    import jax.numpy as jnp

    from activa_ppl.mixture import GaussianMixture, as_prng_key
    from activa_ppl.validation import as_observations, resolve_targets

    obs = np.asarray(test.observational[0])
    target = int(np.argmax(test.targets[0]))
    t0 = time.perf_counter()
    block(fitted.predict(obs, target=target, seed=0))  # compiles for Q = 1
    first_s = time.perf_counter() - t0
    for i in range(2):
        block(fitted.predict(obs, target=target, seed=i + 1))
    lat = []
    for i in range(spec["predict_calls"]):
        t0 = time.perf_counter()
        block(fitted.predict(obs, target=target, seed=i))
        lat.append(time.perf_counter() - t0)

    S = fitted.config.num_predictive_latents
    array, names = as_observations(obs, "obs")
    mask = resolve_targets(target, names, "target")
    key = as_prng_key(0)
    o1, t1, i1 = jnp.asarray(array[None]), jnp.asarray(mask[None]), jnp.asarray(np.array([0], np.int32))
    fwd = lambda: block(forward(fitted.activa, fitted.params, key, o1, t1, i1, S))  # noqa: E731
    w, m, c = (x[0] for x in fwd())  # predict drops the query axis inside its compiled call

    def wrap():  # the mixture as predict builds it: value checks, variable names
        block(GaussianMixture(weights=w, locs=m, covariances=c, variable_names=names))

    def checks():
        _, nm = as_observations(obs, "obs")
        resolve_targets(target, nm, "target")

    parts = {}
    for name, fn in (("forward", fwd), ("mixture", wrap), ("input_checks", checks)):
        fn()
        parts[name] = 1e3 * statistics.median(timed_repeats(fn, 0.3 if spec["quick"] else 1.0, 5, 2000))
    return {
        "num_latents": S, "first_call_s": first_s, "calls": len(lat),
        "latency_ms_median": 1e3 * statistics.median(lat), "latency_ms_min": 1e3 * min(lat),
        "latency_ms_max": 1e3 * max(lat),
        "forward_ms": parts["forward"], "mixture_ms": parts["mixture"], "input_checks_ms": parts["input_checks"],
    }


def _predict_many(fitted, forward, test, spec: dict) -> dict:
    """Throughput of ``FittedActiva.predict_batch``, its forward pass alone and its FLOPs."""
    import jax.numpy as jnp

    from activa_ppl.mixture import as_prng_key

    q, S, key = spec["predict_batch"], fitted.config.num_predictive_latents, as_prng_key(0)
    pick = np.arange(q) % len(test.scm)
    b_obs, b_tgt, b_idx = (test.observational[pick], test.targets[pick],
                           test.intervention_index[pick].astype(np.int32))
    t0 = time.perf_counter()
    block(fitted.predict_batch(b_obs, b_tgt, b_idx, seed=0))  # compiles for Q = predict_batch
    first_s = time.perf_counter() - t0
    args = (fitted.activa, fitted.params, key, jnp.asarray(b_obs), jnp.asarray(b_tgt, jnp.float32),
            jnp.asarray(b_idx), S)
    batch_fwd = lambda: block(forward(*args))  # noqa: E731
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
    fwd_med = statistics.median(fwd_s)
    try:
        flops = xla_cost(forward.lower(*args).cost_analysis())
    except Exception:  # pragma: no cover
        flops = None
    med = statistics.median(batch_s)
    return {
        "queries": q, "first_call_s": first_s, "call_s": batch_s, "median_call_s": med,
        "queries_per_s": q / med, "forward_s": fwd_med,
        "gflop_per_call_lowered": flops / 1e9 if flops else None,
        "gflops": flops / fwd_med / 1e9 if flops else None,
    }
