"""Data-parallel training (``TrainConfig(data_parallel=True)``) on 4 virtual CPU devices.

The pytest process has one device, and ``XLA_FLAGS`` must be set before jax is imported, so the
runs happen in a child interpreter with ``--xla_force_host_platform_device_count=4``: the same
short training (tiny preset, 3 chunks, the last one partial) once on one device and once with
the minibatch sharded over the 4 devices.

What must agree, and how closely: the sharded step computes the same objective, so from
identical parameters the loss **and its gradient** on one minibatch agree to float32 rounding
(the per-task terms are summed in another order), and so do the parameters after one plain SGD
step. Trajectories after several Adam steps are *not* compared: Adam's first updates are
sign-like (``g / (|g| + eps)``), so rounding-level differences in near-zero gradient entries
become learning-rate-sized parameter differences, by an amount that depends on the CPU's
instruction set (a 2 % tolerance held on AVX-512 AMD and failed on AVX-512 Intel).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import activa_ppl as ap
from activa_ppl.config import TrainConfig

CHILD = r"""
import json, os, sys
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
import jax
import numpy as np
import activa_ppl as ap
traces = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: traces.append(1) if event == "/jax/core/compile/jaxpr_trace_duration"
    and kw.get("fun_name") == "run_chunk" else None)
from activa_ppl import training
from activa_ppl.config import TrainConfig

out = {"device_count": jax.device_count()}
data = ap.simulate.linear_dataset(num_scms=20, num_vars=2, num_samples=10, seed=0)
activa = ap.Activa(ap.ActivaConfig.preset("tiny"))
for dp in (False, True):
    config = TrainConfig(num_steps=5, eval_every=2, batch_size=8, num_validation_tasks=8, seed=3,
                         data_parallel=dp)
    workdir = os.path.join(sys.argv[1], f"dp{int(dp)}")
    fitted = ap.train(activa, data, config=config, workdir=workdir, progress=False)
    out[f"dp{int(dp)}"] = {"metrics": [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))],
                           "devices": fitted.info.get("data_parallel_devices")}
    # One more step from the initial state, with the cached compiled chunk (no new compile).
    arrays = training.task_arrays(data.tasks("train"))
    chunks = training.svi_chunks(activa, config, arrays[0].shape[0])
    state = chunks.init(*arrays)
    arrays = training.replicate(arrays, chunks.mesh)
    new, losses = chunks.run(1, state, *arrays)
    out[f"dp{int(dp)}"]["first_loss"] = float(losses[0])
    if dp:
        # Loss and gradient of one fixed minibatch, from the same parameters and latent key,
        # with the batch unsharded and sharded over "data" (parameters replicated); then one
        # plain SGD step from each.
        model, guide = activa.scaled()
        elbo, total = activa.elbo(), arrays[0].shape[0]
        params = chunks.svi.get_params(state)
        batch = tuple(np.asarray(a)[:8] for a in arrays)
        loss_and_grad = jax.jit(jax.value_and_grad(
            lambda p, *b: elbo.loss(jax.random.PRNGKey(7), p, model, guide, *b, total_tasks=total)))
        one = loss_and_grad(jax.tree_util.tree_map(np.asarray, params), *batch)
        sharded = jax.sharding.NamedSharding(chunks.mesh, jax.sharding.PartitionSpec("data"))
        four = loss_and_grad(training.replicate(params, chunks.mesh),
                             *(jax.device_put(b, sharded) for b in batch))
        out["grad_batch_devices"] = len(jax.device_put(batch[0], sharded).sharding.device_set)
        # Step size: 1e-3 over the largest gradient entry of the single-device run.
        lr = 1e-3 / max(float(np.abs(np.asarray(g)).max()) for g in jax.tree_util.tree_leaves(one[1]))
        sgd = lambda p, g: jax.tree_util.tree_map(lambda x, y: np.asarray(x) - lr * np.asarray(y), p, g)
        for name, (loss, grad) in (("one", one), ("four", four)):
            out[f"objective_{name}"] = {
                "loss": float(loss),
                "grad": [np.asarray(g).ravel().tolist() for g in jax.tree_util.tree_leaves(grad)],
                "sgd": [np.asarray(p).ravel().tolist()
                        for p in jax.tree_util.tree_leaves(sgd(params, grad))]}
        out["mesh"] = {"axis_names": list(chunks.mesh.axis_names), "size": int(chunks.mesh.size)}
        leaf = jax.tree_util.tree_leaves(new.optim_state)[-1]
        out["state_devices"] = len(leaf.sharding.device_set)
        out["state_replicated"] = bool(leaf.sharding.is_fully_replicated)
        out["batch_constraints"] = [l.strip() for l in chunks.compiled.lower(state, training.replicate(np.int32(1), chunks.mesh), chunks.batch_key, *arrays).as_text().splitlines()
                                    if "sharding_constraint" in l]
try:
    training.svi_chunks(activa, TrainConfig(batch_size=6, data_parallel=True), 100)
except ValueError as e:
    out["indivisible"] = str(e)
out["traces"] = len(traces)
json.dump(out, open(os.path.join(sys.argv[1], "out.json"), "w"))
"""


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dp")
    repo_root = str(Path(ap.__file__).resolve().parents[1])
    # Keep the caller's XLA_FLAGS (e.g. --xla_cpu_max_isa=AVX2), less any device count.
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                     if not f.startswith("--xla_force_host_platform_device_count"))
    env = {**os.environ, "PYTHONPATH": repo_root, "XLA_FLAGS": flags}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(folder)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((folder / "out.json").read_text())


def test_sharded_run_uses_four_devices(child):
    assert child["device_count"] == 4
    assert child["mesh"] == {"axis_names": ["data"], "size": 4}
    assert child["dp1"]["devices"] == 4 and child["dp0"]["devices"] is None
    # Parameters and optimizer state: replicated over the 4 devices.
    assert child["state_devices"] == 4 and child["state_replicated"]
    # Every minibatch array (observational, targets, index, interventional) is split on "data".
    constraints = child["batch_constraints"]
    assert len(constraints) == 4 and all('[{"data"}' in c and "tensor<8" in c for c in constraints), constraints


def test_sharded_training_runs_the_same_steps(child):
    one, four = child["dp0"]["metrics"], child["dp1"]["metrics"]
    assert [r["step"] for r in one] == [r["step"] for r in four] == [2, 4, 5]
    # Both runs are finite; their values after Adam steps are not compared (module docstring).
    assert all(np.isfinite(r[k]) for r in one + four for k in ("train_loss_per_sample", "valid_nll"))
    # The library's own compiled step, from identical parameters: the same first loss. At
    # initialisation that loss (about 5e5) is a sum of quadratic forms under covariances floored
    # at 1e-4, so float32 rounding of the per-task terms (computed by differently vectorised
    # programs for 8 and for 2 tasks a device) is amplified to about 1e-5 of it (1.26e-5
    # measured on AMD EPYC): rtol 1e-4. A wrong objective is off by far more: one of the 8
    # tasks dropped or counted twice moves it by about 1/8 on average.
    np.testing.assert_allclose(child["dp1"]["first_loss"], child["dp0"]["first_loss"], rtol=1e-4)


def test_sharded_objective_and_gradient_match_single_device(child):
    one, four = child["objective_one"], child["objective_four"]
    assert child["grad_batch_devices"] == 4
    np.testing.assert_allclose(four["loss"], one["loss"], rtol=1e-5)
    # Gradients: float32 rounding of sums over the 8 tasks in another order. The absolute floor
    # is relative to the largest entry of the whole gradient: some leaves are zero in exact
    # arithmetic (the attention key biases, since softmax ignores a per-query constant) and hold
    # rounding noise ~1e-9 of the largest entry, with no meaningful relative error.
    assert len(four["grad"]) == len(one["grad"]) > 10
    scale = max(np.abs(np.asarray(g)).max() for g in one["grad"])
    for g4, g1 in zip(four["grad"], one["grad"]):
        np.testing.assert_allclose(np.asarray(g4), np.asarray(g1), rtol=1e-4, atol=1e-6 * scale)
    # One plain SGD step (largest entry moves by 1e-3) from identical parameters.
    for p4, p1 in zip(four["sgd"], one["sgd"]):
        np.testing.assert_allclose(np.asarray(p4), np.asarray(p1), rtol=0, atol=1e-6)


def test_each_configuration_compiles_once(child):
    # One compile for the single-device chunk, one for the sharded one: partial chunks and the
    # extra svi_chunks calls reuse them.
    assert child["traces"] == 2


def test_batch_size_must_divide_over_devices(child):
    assert "must be divisible by 4" in child["indivisible"]


def test_data_parallel_is_a_bool():
    with pytest.raises(ValueError, match="data_parallel must be a bool"):
        TrainConfig(data_parallel="yes")
