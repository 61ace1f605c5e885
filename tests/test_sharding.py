"""Data-parallel training (``TrainConfig(data_parallel=True)``) on 4 virtual CPU devices.

The pytest process has one device, and ``XLA_FLAGS`` must be set before jax is imported, so the
runs happen in a child interpreter with ``--xla_force_host_platform_device_count=4``: the same
short training (tiny preset, 3 chunks, the last one partial) once on one device and once with
the minibatch sharded over the 4 devices. The trajectories agree to float tolerance, not
bitwise: the sharded run sums the per-task terms in another order, and Adam's normalised first
steps magnify the differences of near-zero gradient entries to ~learning-rate-sized parameter
differences. The first step's loss, computed from identical parameters, agrees to 1e-5.
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
        out["mesh"] = {"axis_names": list(chunks.mesh.axis_names), "size": int(chunks.mesh.size)}
        leaf = jax.tree_util.tree_leaves(new.optim_state)[-1]
        out["state_devices"] = len(leaf.sharding.device_set)
        out["state_replicated"] = bool(leaf.sharding.is_fully_replicated)
        out["batch_constraints"] = [l.strip() for l in chunks.run.lower(1, state, *arrays).as_text().splitlines()
                                    if "sharding_constraint" in l]
try:
    training.svi_chunks(activa, TrainConfig(batch_size=6, data_parallel=True), 100)
except ValueError as e:
    out["indivisible"] = str(e)
out["traces"] = training._CHUNK_TRACES[0]
json.dump(out, open(os.path.join(sys.argv[1], "out.json"), "w"))
"""


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dp")
    repo_root = str(Path(ap.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": repo_root, "XLA_FLAGS": ""}
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


def test_sharded_losses_match_single_device(child):
    one, four = child["dp0"]["metrics"], child["dp1"]["metrics"]
    assert [r["step"] for r in one] == [r["step"] for r in four] == [2, 4, 5]
    np.testing.assert_allclose(child["dp1"]["first_loss"], child["dp0"]["first_loss"], rtol=1e-5)
    for key in ("train_loss_per_sample", "valid_nll"):
        np.testing.assert_allclose([r[key] for r in four], [r[key] for r in one], rtol=2e-2, err_msg=key)


def test_each_configuration_compiles_once(child):
    # One compile for the single-device chunk, one for the sharded one: partial chunks and the
    # extra svi_chunks calls reuse them.
    assert child["traces"] == 2


def test_batch_size_must_divide_over_devices(child):
    assert "must be divisible by 4" in child["indivisible"]


def test_data_parallel_is_a_bool():
    with pytest.raises(ValueError, match="data_parallel must be a bool"):
        TrainConfig(data_parallel="yes")
