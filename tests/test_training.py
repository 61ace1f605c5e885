"""Tests of activa_ppl.training.train on a small Gauss-2 set with the tiny preset: learning,
metrics.jsonl, best-parameter tracking, determinism, and resuming after a real SIGKILL.

Every ``train`` call compiles its chunk function afresh (~10-25 s on 2 cores), so the module
makes exactly four training runs (uninterrupted, resumed, same seed, other seed) plus one
child process that is killed; the killed child runs while the uninterrupted run trains here.
Behind ``-m slow``, two fresh interpreters train and predict at once, for determinism across
interpreters.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest

import activa_ppl as ap
from activa_ppl.checkpoint import CheckpointError, load_arrays
from activa_ppl.config import TrainConfig
from activa_ppl.training import CHECKPOINT_NAME, METRICS_NAME, task_arrays, validation_nll

DATA_KW = dict(num_scms=200, num_vars=2, num_samples=30, seed=0)
CONFIG = TrainConfig(num_steps=200, eval_every=50, batch_size=32, seed=0, num_validation_tasks=40)
KILL_AT = 100  # the child is SIGKILLed once its checkpoint reaches this step
CHILD_TIMEOUT_S = 480

# The child trains with the very same configuration, in its own interpreter. Once it has written
# the checkpoint of step >= KILL_AT it stalls (inside the checkpoint writer, after the file is in
# place and before metrics.jsonl is appended), so that the parent's SIGKILL reliably lands in the
# middle of the run instead of racing against a run that may already have finished.
CHILD_SCRIPT = """
import os, sys, time
os.environ["JAX_PLATFORMS"] = "cpu"
import activa_ppl as ap
import activa_ppl.loop as loop
from activa_ppl.config import TrainConfig

real_save = loop.save_arrays

def save_then_stall(path, arrays, meta=None):
    digest = real_save(path, arrays, meta)
    if meta["step"] >= {kill_at}:
        print("STALLING at step", meta["step"], flush=True)
        time.sleep(600)  # the parent SIGKILLs us here
        os._exit(3)
    return digest

loop.save_arrays = save_then_stall
data = ap.simulate.linear_dataset(**{data_kw!r})
config = TrainConfig(**{config!r})
ap.train(ap.Activa(ap.ActivaConfig.preset("tiny")), data, config=config, workdir=sys.argv[1],
         progress=False)
print("FINISHED WITHOUT BEING KILLED", flush=True)
"""


def _start_child(workdir: Path, log_path: Path) -> subprocess.Popen:
    script = CHILD_SCRIPT.format(kill_at=KILL_AT, data_kw=DATA_KW, config=CONFIG.to_dict())
    repo_root = str(Path(ap.__file__).resolve().parents[1])
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(p for p in (repo_root, os.environ.get("PYTHONPATH")) if p))
    log = open(log_path, "wb")
    try:
        return subprocess.Popen([sys.executable, "-c", script, str(workdir)], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()  # the child holds its own descriptor


def _kill_at_checkpoint(proc: subprocess.Popen, ckpt: Path, log_path: Path) -> dict:
    """Poll ``ckpt`` until it records step >= KILL_AT, then SIGKILL the child; return its meta."""
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training child exited on its own (rc {proc.returncode}):\n"
                        f"{log_path.read_text()[-3000:]}")
        if ckpt.exists():
            _, meta = load_arrays(ckpt)  # atomic replacement: always a complete file
            if meta["step"] >= KILL_AT:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
                assert proc.returncode == -signal.SIGKILL
                return meta
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    pytest.fail(f"no checkpoint of step >= {KILL_AT} after {CHILD_TIMEOUT_S} s:\n"
                f"{log_path.read_text()[-3000:]}")


def _metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / METRICS_NAME).read_text().splitlines()]


def _leaves_equal(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def data():
    return ap.simulate.linear_dataset(**DATA_KW)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_activa, data):
    """The uninterrupted run, and the same run SIGKILLed at step KILL_AT and resumed."""
    root = tmp_path_factory.mktemp("train")
    full_dir, killed_dir, log_path = root / "full", root / "killed", root / "child.log"
    proc = _start_child(killed_dir, log_path)
    try:
        full = ap.train(tiny_activa, data, config=CONFIG, workdir=full_dir, progress=False)
        kill_meta = _kill_at_checkpoint(proc, killed_dir / CHECKPOINT_NAME, log_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    metrics_at_kill = _metrics(killed_dir) if (killed_dir / METRICS_NAME).exists() else []
    resumed = ap.train(tiny_activa, data, config=CONFIG, workdir=killed_dir, progress=False)
    return SimpleNamespace(full=full, full_dir=full_dir, resumed=resumed, killed_dir=killed_dir,
                           kill_meta=kill_meta, metrics_at_kill=metrics_at_kill)


# ------------------------------------------------------------------------- learning ----
def test_validation_nll_decreases(runs):
    records = _metrics(runs.full_dir)
    assert [r["step"] for r in records] == [50, 100, 150, 200]
    nll = [r["valid_nll"] for r in records]
    assert all(np.isfinite(nll))
    assert nll[-1] < nll[0]
    assert min(nll) < nll[0]
    assert runs.full.info["best_valid_nll"] < nll[0]


def test_metrics_jsonl_records(runs):
    records = _metrics(runs.full_dir)
    keys = {"step", "train_loss_per_sample", "valid_nll", "best_valid_nll", "best_step", "elapsed_s"}
    running_min, best_step = np.inf, -1
    for r in records:
        assert keys <= set(r)
        assert np.isfinite(r["train_loss_per_sample"])
        if r["valid_nll"] < running_min:
            running_min, best_step = r["valid_nll"], r["step"]
        assert r["best_valid_nll"] == running_min
        assert r["best_step"] == best_step


def test_best_params_have_lowest_valid_nll(runs, tiny_activa, data):
    records = _metrics(runs.full_dir)
    best = min(records, key=lambda r: r["valid_nll"])
    info = runs.full.info
    assert info["best_step"] == best["step"] and info["best_valid_nll"] == best["valid_nll"]
    assert info["num_steps"] == CONFIG.num_steps
    # The checkpoint's best/ arrays are the returned params.
    arrays, meta = load_arrays(runs.full_dir / CHECKPOINT_NAME)
    assert meta["best_step"] == best["step"]
    flat = {k[len("best/"):]: v for k, v in arrays.items() if k.startswith("best/")}
    from flax import traverse_util
    ours = traverse_util.flatten_dict(runs.full.params, sep="/")
    assert set(flat) == set(ours)
    assert all(np.array_equal(flat[k], np.asarray(ours[k])) for k in flat)
    # Recompute the validation NLL of the returned params exactly as train does.
    valid = data.tasks("valid")
    num_valid = min(CONFIG.num_validation_tasks, len(valid.scm))
    pick = np.random.default_rng(CONFIG.seed).permutation(len(valid.scm))[:num_valid]
    arrs = tuple(a[pick] for a in task_arrays(valid))
    valid_key = jax.random.split(jax.random.PRNGKey(CONFIG.seed), 3)[1]
    nll = float(validation_nll(tiny_activa, runs.full.params, valid_key, *arrs[:3],
                               tiny_activa.config.num_validation_latents, arrs[3]))
    np.testing.assert_allclose(nll, best["valid_nll"], rtol=1e-6)


def test_finished_run_is_returned_without_retraining(runs, tiny_activa, data):
    again = ap.train(tiny_activa, data, config=CONFIG, workdir=runs.full_dir, progress=False)
    assert _leaves_equal(again.params, runs.full.params)
    assert again.info["best_step"] == runs.full.info["best_step"]
    assert len(_metrics(runs.full_dir)) == 4


# --------------------------------------------------------------------------- resuming ----
def _assert_same_checkpoint(dir_a: Path, dir_b: Path):
    arrays_a, meta_a = load_arrays(dir_a / CHECKPOINT_NAME)
    arrays_b, meta_b = load_arrays(dir_b / CHECKPOINT_NAME)
    assert set(arrays_a) == set(arrays_b)
    different = [k for k in arrays_a if not np.array_equal(arrays_a[k], arrays_b[k])]
    assert not different, f"{len(different)} arrays differ, e.g. {different[:5]}"
    for key in ("step", "best_step", "best_nll", "num_state_leaves", "train_config"):
        assert meta_a[key] == meta_b[key], key


def test_child_was_killed_mid_run(runs):
    assert KILL_AT <= runs.kill_meta["step"] < CONFIG.num_steps


def test_resume_after_sigkill_is_bit_identical(runs):
    # Optimizer state, PRNG state and best params in the final checkpoints: every array equal.
    _assert_same_checkpoint(runs.full_dir, runs.killed_dir)
    assert _leaves_equal(runs.resumed.params, runs.full.params)
    assert runs.resumed.info["best_step"] == runs.full.info["best_step"]
    assert runs.resumed.info["best_valid_nll"] == runs.full.info["best_valid_nll"]
    # Logged metrics agree wherever both runs logged a step.
    full = {r["step"]: r for r in _metrics(runs.full_dir)}
    for r in _metrics(runs.killed_dir):
        assert r["valid_nll"] == full[r["step"]]["valid_nll"]
        assert r["train_loss_per_sample"] == full[r["step"]]["train_loss_per_sample"]


def test_resume_keeps_every_metrics_line(runs):
    assert [r["step"] for r in _metrics(runs.killed_dir)] == [50, 100, 150, 200]


def test_resume_with_other_config_is_refused(runs, tiny_activa, data):
    other = dataclasses.replace(CONFIG, learning_rate=1e-3)
    before = (runs.full_dir / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(CheckpointError, match="different configuration"):
        ap.train(tiny_activa, data, config=other, workdir=runs.full_dir, progress=False)
    assert (runs.full_dir / CHECKPOINT_NAME).read_bytes() == before


# ------------------------------------------------------------------------ determinism ----
def test_same_seed_is_bit_identical(runs, tiny_activa, data, tmp_path):
    again = ap.train(tiny_activa, data, config=CONFIG, workdir=tmp_path, progress=False)
    assert _leaves_equal(again.params, runs.full.params)
    _assert_same_checkpoint(runs.full_dir, tmp_path)


def test_other_seed_differs(runs, tiny_activa, data):
    other = ap.train(tiny_activa, data, config=dataclasses.replace(CONFIG, seed=1),
                     progress=False)
    a = jax.tree_util.tree_leaves(other.params)
    b = jax.tree_util.tree_leaves(runs.full.params)
    assert sum(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b)) > len(a) // 2
    assert other.info["best_valid_nll"] != runs.full.info["best_valid_nll"]


# ------------------------------------------------------------------------- bad input ----
def test_train_rejects_more_interventions_than_the_model(tiny_activa, data):
    assert tiny_activa.config.num_interventions == 1
    wider = dataclasses.replace(data, num_interventions=2)
    with pytest.raises(ValueError, match="num_interventions"):
        ap.train(tiny_activa, wider, num_steps=1, progress=False)


def test_train_needs_a_validation_split(tiny_activa):
    data = ap.simulate.linear_dataset(num_scms=10, num_vars=2, num_samples=5, seed=0,
                                      split_fractions=(1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="valid"):
        ap.train(tiny_activa, data, num_steps=1, progress=False)


@pytest.mark.parametrize("field,value", [("num_steps", 0), ("eval_every", -1), ("batch_size", 1.5),
                                         ("learning_rate", 0.0), ("clip_norm", -1.0)])
def test_train_config_invalid_fields(tiny_activa, data, field, value):
    with pytest.raises(ValueError, match=field):
        ap.train(tiny_activa, data, progress=False, **{field: value})


DETERMINISM_SCRIPT = """
import os, sys
os.environ["JAX_PLATFORMS"] = "cpu"
import numpy as np
import activa_ppl as ap
data = ap.simulate.linear_dataset(num_scms=30, num_vars=2, num_samples=10, seed=0)
fitted = ap.train(ap.Activa(ap.ActivaConfig.preset("tiny")), data, num_steps=6, eval_every=3, batch_size=4,
                  num_validation_tasks=4, seed=5, progress=False)
fitted.save(sys.argv[1])
mix = fitted.predict(data.observational[0], target=0, seed=9)
np.savez(sys.argv[2], weights=np.asarray(mix.weights), locs=np.asarray(mix.locs),
         covariances=np.asarray(mix.covariances), samples=np.asarray(mix.sample(50, 1)))
"""


@pytest.mark.slow
def test_same_seed_is_bit_identical_across_interpreters(tmp_path):
    """Two fresh interpreters (different hash seeds): identical parameter files and predictions."""
    repo_root = str(Path(ap.__file__).resolve().parents[1])
    procs = []
    for i in range(2):
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONHASHSEED=str(i + 1), PYTHONPATH=repo_root)
        procs.append(subprocess.Popen([sys.executable, "-c", DETERMINISM_SCRIPT, str(tmp_path / f"model{i}"),
                                       str(tmp_path / f"pred{i}.npz")], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT))
    for proc in procs:
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out.decode()[-3000:]
    params = [next((tmp_path / f"model{i}").glob("params-*.npz")).read_bytes() for i in range(2)]
    assert params[0] == params[1]
    with np.load(tmp_path / "pred0.npz") as a, np.load(tmp_path / "pred1.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
