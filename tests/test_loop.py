"""Tests of the training driver (activa_ppl.loop, through activa_ppl.train): the non-finite
policies (rolled back, stopped or retried at a halved learning rate, never written), and
corrupted, interrupted and unsafe checkpoints.

Most tests replace the compiled SVI chunk by cheap arithmetic on the real state (no compile);
behind ``-m slow``, a real divergence after a good checkpoint and a real retry. Resuming after
a real SIGKILL, and determinism, are in tests/test_training.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import activa_ppl as ap
from activa_ppl import loop, model_io, training
from activa_ppl.checkpoint import CheckpointError, atomic_write_bytes, load_arrays, save_arrays
from activa_ppl.config import TrainConfig
from activa_ppl.training import CHECKPOINT_NAME, METRICS_NAME, TrainingDiverged
from activa_ppl.validation import MAX_ABS_VALUE
from helpers import object_array, rewrite_npz


# ===================================================================== training: numerical faults ====
LR = 5e-4
FAKE_CONFIG = TrainConfig(num_steps=6, eval_every=2, batch_size=4, learning_rate=LR, num_validation_tasks=4,
                          seed=0)


@pytest.fixture(scope="module")
def small_data():
    return ap.simulate.linear_dataset(num_scms=20, num_vars=2, num_samples=10, seed=0)


def _install_fake_chunks(monkeypatch, fault=lambda step, lr: None):
    """Replace the compiled SVI chunk by cheap arithmetic on the real state (no compile).

    Each chunk moves every float leaf by ``-lr * length / 100`` (so the result depends on the
    learning rate) and counts steps; ``fault(step, lr)`` may return ``"loss"`` (NaN loss) or
    ``"params"`` (NaN parameters, finite loss). Returns the list of ``(step, lr)`` of every
    chunk run.
    """
    real = training.svi_chunks
    log = []

    def fake_svi_chunks(activa, config, num_tasks):
        chunks = real(activa, config, num_tasks)
        lr = config.learning_rate

        def run(length, state, *arrays):
            step = int(state.optim_state[0])
            log.append((step, lr))
            floats = lambda f: lambda x: f(x) if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa: E731
            new = jax.tree_util.tree_map(floats(lambda x: x - lr * length / 100), state)
            i, opt = new.optim_state
            losses = np.full(length, 100.0 / (1 + step), np.float32)
            kind = fault(step, lr)
            if kind == "loss":
                losses[-1] = np.nan
            elif kind == "params":
                opt = jax.tree_util.tree_map(floats(lambda x: x * np.nan), opt)
            return new._replace(optim_state=(i + length, opt)), jnp.asarray(losses)

        return chunks._replace(run=run)

    monkeypatch.setattr(training, "svi_chunks", fake_svi_chunks)
    return log


def _checkpoint_is_finite(path: Path) -> dict:
    arrays, meta = load_arrays(path)
    assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")
    return meta


def _metrics(workdir: Path) -> list[dict]:
    lines = (workdir / METRICS_NAME).read_text().splitlines()
    return [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl")) for line in lines]


def _same_params(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.mark.parametrize("kind", ["loss", "params", "valid_nll"])
def test_nonfinite_chunk_rolls_back_and_stops(tiny_activa, small_data, tmp_path, monkeypatch, kind):
    runs = _install_fake_chunks(monkeypatch, lambda step, lr: kind if step == 4 else None)
    if kind == "valid_nll":
        real_nll, calls = training.validation_nll, []

        def nll(*args):
            calls.append(1)
            return jnp.nan if len(calls) == 3 else real_nll(*args)

        monkeypatch.setattr(training, "validation_nll", nll)
    with pytest.raises(TrainingDiverged) as info:
        ap.train(tiny_activa, small_data, config=FAKE_CONFIG, workdir=tmp_path, progress=False)
    message = str(info.value)
    expected = {"loss": r"non-finite loss \(nan\) at step 6", "params": "non-finite parameters",
                "valid_nll": r"non-finite validation NLL \(nan\) after step 6"}[kind]
    assert re.search(expected, message), message
    assert "last good state is step 4" in message and "on_nonfinite='retry'" in message
    assert runs == [(0, LR), (2, LR), (4, LR)]
    # The last good checkpoint (step 4) is there, finite; the log stops at step 4; no temp files.
    meta = _checkpoint_is_finite(tmp_path / CHECKPOINT_NAME)
    assert meta["step"] == 4 and info.value.step == 4 and info.value.checkpoint == tmp_path / CHECKPOINT_NAME
    assert [r["step"] for r in _metrics(tmp_path)] == [2, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME, METRICS_NAME]
    # The exception carries the best parameters so far: those of the checkpoint, finite.
    fitted = info.value.fitted
    arrays, _ = load_arrays(tmp_path / CHECKPOINT_NAME)
    best = model_io.unflatten_params({k[5:]: v for k, v in arrays.items() if k.startswith("best/")})
    assert _same_params(fitted.params, best) and fitted.info["best_step"] == meta["best_step"]


def test_retry_halves_learning_rate_and_resumes_bit_identically(tiny_activa, small_data, tmp_path, monkeypatch,
                                                                 caplog):
    runs = _install_fake_chunks(monkeypatch, lambda step, lr: "loss" if step == 2 and lr == LR else None)
    with caplog.at_level(logging.WARNING, logger="activa_ppl.loop"):
        full = ap.train(tiny_activa, small_data, config=FAKE_CONFIG, workdir=tmp_path / "full", progress=False,
                        on_nonfinite="retry")
    assert runs == [(0, LR), (2, LR), (2, LR / 2), (4, LR / 2)]
    assert [r.getMessage() for r in caplog.records] == [
        "ACTIVA training: non-finite loss (nan) at step 4; rolled back to step 2 and retrying with learning "
        "rate 0.00025 (was 0.0005; retry 1 of 3)"]
    assert [r["learning_rate"] for r in _metrics(tmp_path / "full")] == [LR, LR / 2, LR / 2]
    assert full.info["nonfinite_retries"] == 1 and full.info["final_learning_rate"] == LR / 2
    meta = _checkpoint_is_finite(tmp_path / "full" / CHECKPOINT_NAME)
    assert meta["lr_scale"] == 0.5 and meta["retries"] == 1
    # Interrupted after the retry (a shorter run), then resumed: it continues at the halved rate.
    runs.clear()
    short = dataclasses.replace(FAKE_CONFIG, num_steps=4)
    ap.train(tiny_activa, small_data, config=short, workdir=tmp_path / "resumed", progress=False,
             on_nonfinite="retry")
    resumed = ap.train(tiny_activa, small_data, config=FAKE_CONFIG, workdir=tmp_path / "resumed", progress=False,
                       on_nonfinite="retry")
    assert runs == [(0, LR), (2, LR), (2, LR / 2), (4, LR / 2)]
    assert _same_params(resumed.params, full.params)
    a, meta_a = load_arrays(tmp_path / "full" / CHECKPOINT_NAME)
    b, meta_b = load_arrays(tmp_path / "resumed" / CHECKPOINT_NAME)
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    for key in ("step", "best_step", "best_nll", "lr_scale", "retries"):
        assert meta_a[key] == meta_b[key], key


def test_retry_gives_up_after_max_retries(tiny_activa, small_data, tmp_path, monkeypatch, caplog):
    runs = _install_fake_chunks(monkeypatch, lambda step, lr: "params" if step >= 2 else None)
    with caplog.at_level(logging.WARNING, logger="activa_ppl.loop"), pytest.raises(TrainingDiverged) as info:
        ap.train(tiny_activa, small_data, config=FAKE_CONFIG, workdir=tmp_path, progress=False,
                 on_nonfinite="retry", max_retries=2)
    assert runs == [(0, LR), (2, LR), (2, LR / 2), (2, LR / 4)]
    assert len(caplog.records) == 2
    assert "gave up after 2 retries with halved learning rates (last 0.000125)" in str(info.value)
    assert _checkpoint_is_finite(tmp_path / CHECKPOINT_NAME)["step"] == 2 and info.value.step == 2
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(info.value.fitted.params))


def test_train_policy_arguments_are_checked(tiny_activa, small_data):
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        ap.train(tiny_activa, small_data, num_steps=1, on_nonfinite="ignore", progress=False)
    with pytest.raises(ValueError, match="max_retries must be a non-negative integer"):
        ap.train(tiny_activa, small_data, num_steps=1, on_nonfinite="retry", max_retries=-1, progress=False)


def test_real_overflow_stops_without_writing_nan(tiny_activa, small_data, tmp_path):
    """Data at the accepted magnitude limit (1e15) overflows the float32 loss: a real fault."""
    scale = 0.99 * MAX_ABS_VALUE / max(np.abs(small_data.observational).max(),
                                       np.abs(small_data.interventional).max())
    huge = dataclasses.replace(small_data, observational=np.asarray(small_data.observational) * scale,
                               interventional=np.asarray(small_data.interventional) * scale)
    config = dataclasses.replace(FAKE_CONFIG, num_steps=4)
    with pytest.raises(TrainingDiverged, match=r"non-finite (loss|parameters).* step \d; stopped, last good "
                                               "state is step 0; no non-finite value was written") as info:
        ap.train(tiny_activa, huge, config=config, workdir=tmp_path, progress=False)
    assert info.value.step == 0 and info.value.checkpoint is None
    assert not (tmp_path / CHECKPOINT_NAME).exists() and not (tmp_path / METRICS_NAME).exists()
    fitted = info.value.fitted  # nothing completed: the initial parameters, finite
    assert fitted.info["best_step"] == -1
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(fitted.params))


# ======================================================== checkpoints: corrupt, interrupted, unsafe ====
@pytest.fixture
def finished_run(tiny_activa, small_data, tmp_path, monkeypatch):
    """A (fake-chunk) run of 4 steps with its checkpoint; returns (workdir, fitted, bytes)."""
    _install_fake_chunks(monkeypatch)
    config = dataclasses.replace(FAKE_CONFIG, num_steps=4)
    fitted = ap.train(tiny_activa, small_data, config=config, workdir=tmp_path, progress=False)
    return tmp_path, fitted, (tmp_path / CHECKPOINT_NAME).read_bytes(), config


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[: len(raw) // 2], "truncated or corrupted"),
    (lambda raw: raw[:-40], "truncated or corrupted"),
    (lambda raw: raw[:300] + bytes([raw[300] ^ 0x04]) + raw[301:], "corrupted|checksum"),
    (lambda raw: b"", "truncated or corrupted"),
])
def test_corrupted_checkpoint_refused_and_left_alone(tiny_activa, small_data, finished_run, damage, message):
    workdir, fitted, good, config = finished_run
    bad = damage(good)
    (workdir / CHECKPOINT_NAME).write_bytes(bad)
    with pytest.raises(CheckpointError, match=message):
        ap.train(tiny_activa, small_data, config=config, workdir=workdir, progress=False)
    assert (workdir / CHECKPOINT_NAME).read_bytes() == bad  # not overwritten, not deleted
    (workdir / CHECKPOINT_NAME).write_bytes(good)  # the good copy resumes (here: nothing left to do)
    again = ap.train(tiny_activa, small_data, config=config, workdir=workdir, progress=False)
    assert _same_params(again.params, fitted.params)


def test_checkpoint_with_nan_state_is_refused(tiny_activa, small_data, finished_run):
    workdir, _, _, config = finished_run
    arrays, meta = load_arrays(workdir / CHECKPOINT_NAME)
    first = sorted(k for k in arrays if k.startswith("state/") and arrays[k].dtype.kind == "f")[0]
    arrays[first] = np.full_like(arrays[first], np.nan)
    save_arrays(workdir / CHECKPOINT_NAME, arrays, meta)  # a valid checksum over NaN values
    with pytest.raises(CheckpointError, match="holds NaN/inf values; refusing to resume"):
        ap.train(tiny_activa, small_data, config=dataclasses.replace(config, num_steps=6), workdir=workdir,
                 progress=False)


def test_interrupted_checkpoint_write_keeps_the_previous_one(tiny_activa, small_data, tmp_path, monkeypatch):
    """A crash while the step-4 checkpoint is written leaves the step-2 one, whole; resuming
    from it ends where an uninterrupted run ends."""
    _install_fake_chunks(monkeypatch)
    real_save = loop.save_arrays

    def crash_during_write(path, arrays, meta=None):
        if meta["step"] == 4:
            def half(f):
                f.write(b"PK\x03\x04 half of a checkpoint")
                raise OSError("No space left on device (simulated)")
            atomic_write_bytes(path, half)
        return real_save(path, arrays, meta)

    monkeypatch.setattr(loop, "save_arrays", crash_during_write)
    with pytest.raises(OSError, match="No space left"):
        ap.train(tiny_activa, small_data, config=FAKE_CONFIG, workdir=tmp_path / "a", progress=False)
    assert _checkpoint_is_finite(tmp_path / "a" / CHECKPOINT_NAME)["step"] == 2
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [CHECKPOINT_NAME, METRICS_NAME]
    monkeypatch.setattr(loop, "save_arrays", real_save)
    resumed = ap.train(tiny_activa, small_data, config=FAKE_CONFIG, workdir=tmp_path / "a", progress=False)
    straight = ap.train(tiny_activa, small_data, config=FAKE_CONFIG, workdir=tmp_path / "b", progress=False)
    assert _same_params(resumed.params, straight.params)
    assert [r["step"] for r in _metrics(tmp_path / "a")] == [2, 4, 6]


def test_pickle_payload_in_training_checkpoint_refused(tiny_activa, small_data, finished_run):
    workdir, _, _, config = finished_run
    marker = workdir / "PWNED"
    arrays, meta = load_arrays(workdir / CHECKPOINT_NAME)
    header = {"format": "activa_ppl.arrays", "format_version": 1, "sha256": "0" * 64, "meta": meta}
    arrays["state/0000"] = object_array(marker)
    arrays["__meta__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    rewrite_npz(workdir / CHECKPOINT_NAME, arrays)
    with pytest.raises(CheckpointError, match="pickled objects are never loaded"):
        ap.train(tiny_activa, small_data, config=config, workdir=workdir, progress=False)
    assert not marker.exists()


# ================================================================== resume: same data, same arrays ====
def test_resume_on_other_data_is_refused_naming_both(tiny_activa, small_data, finished_run):
    """train(A, workdir=W) then train(B, workdir=W): refused, the message naming both datasets'
    checksums; A's parameters are never returned labelled as trained on B."""
    workdir, _, good, config = finished_run
    other = ap.simulate.linear_dataset(num_scms=20, num_vars=2, num_samples=10, seed=1)
    with pytest.raises(CheckpointError, match="other data") as info:
        ap.train(tiny_activa, other, config=config, workdir=workdir, progress=False)
    digest_a = load_arrays(workdir / CHECKPOINT_NAME)[1]["data_sha256"]
    assert digest_a[:16] in str(info.value) and "'seed': 1" in str(info.value)
    assert (workdir / CHECKPOINT_NAME).read_bytes() == good


def test_resume_with_other_configuration_names_the_fields(tiny_activa, small_data, finished_run):
    workdir, _, _, config = finished_run
    with pytest.raises(CheckpointError, match="train_config.batch_size: checkpoint 4, this run 8"):
        ap.train(tiny_activa, small_data, config=dataclasses.replace(config, batch_size=8), workdir=workdir,
                 progress=False)


@pytest.mark.parametrize("damage", ["reshaped", "missing", "retyped", "extra"])
def test_checkpoint_arrays_must_fit_the_parameter_tree(tiny_activa, small_data, finished_run, damage):
    """A checkpoint with a valid checksum but wrong-shaped, missing, retyped or extra ``best/``
    arrays is refused before training could write an unloadable model."""
    workdir, _, _, config = finished_run
    arrays, meta = load_arrays(workdir / CHECKPOINT_NAME)
    name = sorted(k for k in arrays if k.startswith("best/"))[0]
    if damage == "reshaped":
        arrays[name] = np.zeros(arrays[name].shape + (2,), arrays[name].dtype)
    elif damage == "missing":
        del arrays[name]
    elif damage == "retyped":
        arrays[name] = arrays[name].astype(np.float64)
    else:
        arrays["best/evil/kernel"] = np.zeros(3, np.float32)
    save_arrays(workdir / CHECKPOINT_NAME, arrays, meta)
    with pytest.raises(CheckpointError, match="do not fit"):
        ap.train(tiny_activa, small_data, config=dataclasses.replace(config, num_steps=6), workdir=workdir,
                 progress=False)


@pytest.mark.parametrize("key, value", [("num_state_leaves", None), ("step", None), ("best_nll", None),
                                        ("step", "4"), ("num_state_leaves", 2.5), ("best_nll", [1]),
                                        ("lr_scale", 0), ("retries", -1)])
def test_checkpoint_metadata_of_the_wrong_type_is_refused(tiny_activa, small_data, finished_run, key, value):
    """Missing counters or counters of the wrong type: a CheckpointError naming the field, never a
    KeyError or TypeError."""
    workdir, _, _, config = finished_run
    arrays, meta = load_arrays(workdir / CHECKPOINT_NAME)
    if value is None:
        del meta[key]
    else:
        meta[key] = value
    save_arrays(workdir / CHECKPOINT_NAME, arrays, meta)
    with pytest.raises(CheckpointError, match=f"metadata field {key!r}"):
        ap.train(tiny_activa, small_data, config=dataclasses.replace(config, num_steps=6), workdir=workdir,
                 progress=False)


@pytest.mark.parametrize("change, message", [
    (dict(eval_every=2 * 10**9), "eval_every: at most 1000000"),
    (dict(num_steps=2**40), "num_steps: at most"),
    (dict(seed=2**70), "seed: expected an integer in 0..2\\*\\*63-1"),
    (dict(seed=-1), "seed: expected an integer in 0..2\\*\\*63-1"),
])
def test_run_sizes_checked_before_allocating(tiny_activa, small_data, change, message):
    with pytest.raises(ValueError, match=message):
        ap.train(tiny_activa, small_data, **change, progress=False)


# ================================================================================ slow tier ====
@pytest.mark.slow
def test_real_divergence_after_a_good_checkpoint(tiny_activa, small_data, tmp_path):
    """A real run checkpoints step 2; resumed on data at the magnitude limit it overflows:
    stopped, the step-2 checkpoint untouched; under "retry" it gives up after the retries."""
    config = dataclasses.replace(FAKE_CONFIG, num_steps=2)
    ap.train(tiny_activa, small_data, config=config, workdir=tmp_path, progress=False)
    good = (tmp_path / CHECKPOINT_NAME).read_bytes()
    scale = 0.99 * MAX_ABS_VALUE / max(np.abs(small_data.observational).max(),
                                       np.abs(small_data.interventional).max())
    huge = dataclasses.replace(small_data, observational=np.asarray(small_data.observational) * scale,
                               interventional=np.asarray(small_data.interventional) * scale)
    with pytest.raises(TrainingDiverged, match="last good state is step 2"):
        ap.train(tiny_activa, huge, config=FAKE_CONFIG, workdir=tmp_path, progress=False)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == good
    with pytest.raises(TrainingDiverged, match="gave up after 1 retry"):
        ap.train(tiny_activa, huge, config=FAKE_CONFIG, workdir=tmp_path, progress=False,
                 on_nonfinite="retry", max_retries=1)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == good


@pytest.mark.slow
def test_real_retry_recovers(tiny_activa, small_data, tmp_path, monkeypatch):
    """The real compiled chunk, with its result poisoned once at the original learning rate:
    the retry recompiles at half the rate and the run finishes with finite parameters."""
    real = training.svi_chunks

    def poisoned(activa, config, num_tasks):
        chunks = real(activa, config, num_tasks)
        if config.learning_rate != LR:
            return chunks

        def run(length, state, *arrays):
            new, losses = chunks.run(length, state, *arrays)
            return (new, losses.at[-1].set(jnp.nan)) if int(state.optim_state[0]) == 2 else (new, losses)

        return chunks._replace(run=run)

    monkeypatch.setattr(training, "svi_chunks", poisoned)
    fitted = ap.train(tiny_activa, small_data, config=FAKE_CONFIG, workdir=tmp_path, progress=False,
                      on_nonfinite="retry")
    assert fitted.info["nonfinite_retries"] == 1 and fitted.info["num_steps"] == 6
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(fitted.params))
    assert [r["learning_rate"] for r in _metrics(tmp_path)] == [LR, LR / 2, LR / 2]
