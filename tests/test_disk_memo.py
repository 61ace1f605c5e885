"""activa_ppl.disk_memo: start-up results remembered between ``activa`` commands, and only then."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from activa_ppl import disk_memo, fitted, model_info


@pytest.fixture
def memo(tmp_path):
    """The memo enabled in a fresh folder for one test, disabled again afterwards."""
    folder = disk_memo.enable(tmp_path)
    yield folder
    disk_memo.enable(None)


def test_disabled_by_default_computes_every_time():
    assert disk_memo.folder() is None
    calls = []
    for _ in range(2):
        assert disk_memo.memoized("t", {"a": 1}, lambda: calls.append(1) or 7) == 7
    assert len(calls) == 2


def test_remembered_per_key_and_recomputed_when_malformed(memo):
    calls = []
    compute = lambda: calls.append(1) or {"x": [1, 2]}  # noqa: E731
    assert disk_memo.memoized("t", {"a": 1}, compute) == {"x": [1, 2]}
    assert disk_memo.memoized("t", {"a": 1}, compute) == {"x": [1, 2]} and len(calls) == 1
    assert disk_memo.memoized("t", {"a": 2}, compute) == {"x": [1, 2]} and len(calls) == 2
    assert len(list(memo.glob("t-*.json"))) == 2
    for path in memo.glob("t-*.json"):
        path.write_text("{not json")
    assert disk_memo.memoized("t", {"a": 1}, compute) == {"x": [1, 2]} and len(calls) == 3  # rewritten
    assert disk_memo.memoized("t", {"a": 1}, compute) == {"x": [1, 2]} and len(calls) == 3
    assert not list(memo.glob("*.tmp"))


def test_param_shapes_round_trip(memo, tiny_activa):
    direct = jax.eval_shape(tiny_activa.init_params, jax.random.PRNGKey(0))
    first = fitted.expected_param_shapes(tiny_activa)  # computed and written
    second = fitted.expected_param_shapes(tiny_activa)  # read back
    assert list(memo.glob("param_shapes-*.json"))
    for got in (first, second):
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(direct)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(direct)):
            assert (a.shape, np.dtype(a.dtype)) == (b.shape, np.dtype(b.dtype))


def test_reconstructed_training_ranges_are_remembered(memo):
    info = {"dataset": {"generator": "linear", "noise": "gauss", "num_vars": 2, "num_scms": 50,
                        "num_samples": 20, "seed": 0, "intervention_value": 5.0}}
    first = model_info.training_ranges(info)
    assert list(memo.glob("training_ranges-*.json"))
    assert model_info.training_ranges(info) == first and first["num_vars"] == [2, 2]
