"""One cell's MACE-TNP measurements, in a process of its own: its compiled AdamW chunk (the
loop of ``train_mace_tnp``), then ``FittedMaceTnp.predict`` and ``predict_batch``."""

from __future__ import annotations

import dataclasses
import statistics
import time

import numpy as np

from bench_lib.cells import SHAPES, dataset, param_count
from bench_lib.machine import block, peak_rss_mb, timed_repeats, xla_cost
from bench_lib.train_timing import choose_chunk, time_training


def worker_mace(spec: dict) -> dict:
    """The ``mace`` entry of a cell of the report (see ``bench_core.py``)."""
    import jax

    from activa_ppl.baselines.mace_tnp import FittedMaceTnp, MaceTnpConfig, MaceTnpTrainConfig
    from activa_ppl.baselines.mace_tnp.training import _chunk_function, _task_arrays, init_state

    preset, shape, quick = spec["preset"], spec["shape"], spec["quick"]
    n, d = SHAPES[shape]
    cfg = MaceTnpConfig.preset(preset, d)
    data = dataset(shape, spec["train_tasks"], spec["seed"])
    obs, inter, targets, _ = _task_arrays(data.tasks("train"), data)
    num_tasks = int(obs.shape[0])
    batch_size = min(spec["batch_size"], num_tasks)
    probe_config = MaceTnpTrainConfig(batch_size=batch_size, eval_every=1, seed=spec["seed"])
    state = init_state(cfg, probe_config, n)
    batch_key = jax.random.fold_in(jax.random.PRNGKey(probe_config.seed), 1)  # as train_mace_tnp
    arrays = (obs, inter, targets)

    # One step's FLOPs: the lowered chunk (XLA counts its loop body once), no compile.
    probe = _chunk_function(cfg, probe_config, num_tasks)
    step_flops = xla_cost(probe.lower(state, np.int32(1), batch_key, *arrays).cost_analysis())
    chunk_len = choose_chunk(step_flops, spec)
    run = _chunk_function(cfg, dataclasses.replace(probe_config, eval_every=chunk_len), num_tasks)
    state, train = time_training(run, state, (np.int32(chunk_len), batch_key, *arrays), chunk_len=chunk_len,
                                 batch_size=batch_size, step_flops=step_flops, step_source="lowered chunk",
                                 target_s=spec["target_s"])

    fitted = FittedMaceTnp(config=cfg, params=state.params)
    test = data.tasks(None)
    values = np.asarray(data.intervention_values[test.scm, test.query], np.float32)
    o, tgt = np.asarray(test.observational[0]), int(np.argmax(test.targets[0]))
    block(fitted.predict(o, target=tgt, value=float(values[0])))
    lat = timed_repeats(lambda: block(fitted.predict(o, target=tgt, value=float(values[0]))),
                        0.5 if quick else 1.5, 3, spec["predict_calls"])
    q = spec["predict_batch"]
    pick = np.arange(q) % len(test.scm)
    b = (test.observational[pick], test.targets[pick], values[pick])
    t0 = time.perf_counter()
    block(fitted.predict_batch(*b))
    batch_first_s = time.perf_counter() - t0
    batch_s = timed_repeats(lambda: block(fitted.predict_batch(*b)), spec["target_s"] / 2, 2,
                            spec["batch_repeats"])
    med_batch = statistics.median(batch_s)
    return {
        "model": "mace_tnp", "preset": preset, "shape": shape, "N": n, "d": d,
        "num_params": param_count(state.params), "train": train,
        "predict": {"latency_ms_median": 1e3 * statistics.median(lat), "calls": len(lat)},
        "predict_batch": {"queries": q, "first_call_s": batch_first_s, "call_s": batch_s,
                          "median_call_s": med_batch, "queries_per_s": q / med_batch},
        "peak_rss_mb_end": peak_rss_mb(),
    }
