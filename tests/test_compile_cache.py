"""The compiled SVI chunk is traced once per static configuration: a partial last chunk, a new
seed, or a second dataset of the same shapes reuse it (traces counted with JAX's monitoring
events, ``conftest.TraceCounter``)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import activa_ppl as ap
from activa_ppl import training
from activa_ppl.config import TrainConfig

# A learning rate no other test uses, so the cache entry is this module's own.
CONFIG = TrainConfig(num_steps=5, eval_every=2, batch_size=4, learning_rate=4.5e-4, num_validation_tasks=4, seed=1)


def _data(seed):
    return ap.simulate.linear_dataset(num_scms=20, num_vars=2, num_samples=10, seed=seed)


def test_chunk_is_traced_once_across_chunks_and_datasets(tiny_activa, tmp_path, trace_counter):
    training._chunk_function.cache_clear()
    with trace_counter("run_chunk") as traces:
        ap.train(tiny_activa, _data(0), config=CONFIG, workdir=tmp_path / "a", progress=False)
        steps = [json.loads(line)["step"] for line in (tmp_path / "a" / training.METRICS_NAME).read_text().splitlines()]
        assert steps == [2, 4, 5]  # the last chunk is partial
        assert traces.count == 1
        # Another dataset of the same shapes, another seed: no new trace.
        second = ap.train(tiny_activa, _data(1), config=CONFIG, seed=2, progress=False)
        assert traces.count == 1
        assert second.info["num_steps"] == 5
        # An equal but distinct Activa instance shares the compiled chunk too.
        ap.train(ap.Activa(ap.ActivaConfig.preset("tiny")), _data(2), config=CONFIG, num_steps=2, progress=False)
        assert traces.count == 1


def test_run_keeps_its_calling_convention(tiny_activa):
    """``run(length, state, *arrays)`` and the lowered, compiled ``compiled`` under it
    (benchmarks/bench_core.py) give ``length`` losses and the same result."""
    arrays = training.task_arrays(_data(0).tasks("train"))
    chunks = training.svi_chunks(tiny_activa, CONFIG, arrays[0].shape[0])
    state = chunks.init(*arrays)
    new, losses = chunks.run(2, state, *arrays)
    assert losses.shape == (2,) and int(new.optim_state[0]) == 2
    length = np.int32(2)
    executable = chunks.compiled.lower(state, length, chunks.batch_key, *arrays).compile()
    again, losses_again = executable(state, length, chunks.batch_key, *arrays)
    np.testing.assert_array_equal(np.asarray(losses_again)[:2], np.asarray(losses))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(new)))
    with pytest.raises(ValueError, match="1..2"):
        chunks.run(3, state, *arrays)
