"""Tests for activa_ppl.metrics (paper Section 6.3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from activa_ppl.metrics import (
    MARGINAL_SET_NAMES,
    ate_mae,
    average_treatment_effect,
    energy_distance,
    evaluate_prediction,
    marginal_sets,
    negative_log_likelihood,
)
from activa_ppl.mixture import GaussianMixture


def energy_distance_loop(x, y):
    """Direct float64 double loop over all pairs (V-statistic)."""

    def mean_dist(a, b):
        total = 0.0
        for ai in a:
            for bj in b:
                total += np.sqrt(np.sum((ai - bj) ** 2))
        return total / (len(a) * len(b))

    return 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)


def test_marginal_sets_chain_with_isolated_node():
    # 0 -> 1 -> 2, 3 isolated, 4 -> 2
    adj = np.zeros((5, 5), dtype=int)
    adj[0, 1] = adj[1, 2] = adj[4, 2] = 1
    sets = marginal_sets(adj, np.array([False, True, False, False, False]))
    assert set(sets) == set(MARGINAL_SET_NAMES)
    np.testing.assert_array_equal(sets["all"], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(sets["all_but_target"], [0, 2, 3, 4])
    np.testing.assert_array_equal(sets["descendants"], [2])
    np.testing.assert_array_equal(sets["non_descendants"], [0, 3, 4])
    # sink target: no descendants, returned empty (not dropped)
    sink = marginal_sets(adj, np.array([False, False, True, False, False]))
    assert sink["descendants"].size == 0 and sink["descendants"].dtype.kind == "i"
    np.testing.assert_array_equal(sink["non_descendants"], [0, 1, 3, 4])
    # union of two targets; a target that is a descendant of another is excluded
    multi = marginal_sets(adj, np.array([True, True, False, False, False]))
    np.testing.assert_array_equal(multi["descendants"], [2])
    np.testing.assert_array_equal(multi["non_descendants"], [3, 4])
    with pytest.raises(ValueError):
        marginal_sets(adj, np.ones(4, bool))


def test_energy_distance_properties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = (rng.normal(size=(45, 3)) + 0.3).astype(np.float32)
    assert abs(float(energy_distance(x, x))) < 1e-6
    exy, eyx = float(energy_distance(x, y)), float(energy_distance(y, x))
    assert exy == pytest.approx(eyx, rel=1e-5)
    assert exy > 0
    assert float(energy_distance(x, x + 2.0)) > exy
    ref = energy_distance_loop(x.astype(np.float64), y.astype(np.float64))
    assert exy == pytest.approx(ref, rel=1e-4)
    # small batch size (several lax.map blocks, ragged last block) gives the same
    assert float(energy_distance(x, y, batch_size=7)) == pytest.approx(exy, rel=1e-5)


def test_energy_distance_x64_and_scipy_1d():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 2))
    y = rng.gamma(2.0, size=(25, 2))
    with jax.enable_x64(True):
        got = float(energy_distance(x, y))
        # scipy's 1-D energy_distance is the square root of the V-statistic
        a, b = rng.normal(size=40), rng.exponential(size=33)
        got_1d = float(energy_distance(a, b))
    assert got == pytest.approx(energy_distance_loop(x, y), rel=1e-10)
    assert got_1d == pytest.approx(stats.energy_distance(a, b) ** 2, rel=1e-10)


def test_nll_single_gaussian_matches_scipy():
    rng = np.random.default_rng(2)
    mean = np.array([0.5, -1.0, 2.0])
    a = rng.normal(size=(3, 3))
    cov = a @ a.T + np.eye(3)
    x = rng.normal(size=(50, 3)).astype(np.float32)
    mix = GaussianMixture.gaussian(mean, cov)
    ref = -stats.multivariate_normal(mean, cov).logpdf(x.astype(np.float64)).mean()
    assert float(negative_log_likelihood(mix, x)) == pytest.approx(ref, rel=1e-5)


def test_ate_of_known_linear_scm():
    # X0 ~ N(1, 1), X1 = 2 X0 + N(0, 1), X2 ~ N(-1, 1) independent.
    # do(X0 = 5): E[X] = (5, 10, -1); observational E[X] = (1, 2, -1).
    ate = average_treatment_effect(jnp.array([5.0, 10.0, -1.0]), jnp.array([1.0, 2.0, -1.0]))
    np.testing.assert_allclose(ate, [4.0, 8.0, 0.0])
    pred = jnp.array([4.0, 7.0, 0.5])
    assert float(ate_mae(pred, ate, [1])) == pytest.approx(1.0)
    assert float(ate_mae(pred, ate, [2])) == pytest.approx(0.5)
    assert float(ate_mae(pred, ate, np.array([False, True, True]))) == pytest.approx(0.75)
    assert float(ate_mae(pred, ate)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="empty"):
        ate_mae(pred, ate, [])


def _scm_samples(rng, n, do_x0=None):
    x0 = rng.normal(1.0, 1.0, n) if do_x0 is None else np.full(n, do_x0)
    x1 = 2.0 * x0 + rng.normal(size=n)
    x2 = rng.normal(-1.0, 1.0, n)
    return np.stack([x0, x1, x2], axis=1).astype(np.float32)


def test_evaluate_prediction_true_distribution():
    rng = np.random.default_rng(3)
    adj = np.zeros((3, 3))
    adj[0, 1] = 1
    target = np.array([True, False, False])
    obs = _scm_samples(rng, 2000)
    inter = _scm_samples(rng, 500, do_x0=5.0)
    # the true interventional distribution (target variance tiny)
    truth = GaussianMixture.gaussian(
        np.array([5.0, 10.0, -1.0]), np.diag([1e-6, 1.0, 1.0])
    )
    res = evaluate_prediction(truth, inter, obs, adj, target, seed=0)
    assert set(res) == set(MARGINAL_SET_NAMES)
    assert set(res["descendants"]) == {"nll", "energy", "ate_mae"}
    assert all(isinstance(v, float) for r in res.values() for v in r.values())
    gauss_1d_entropy = 0.5 * np.log(2 * np.pi * np.e)
    assert res["descendants"]["nll"] == pytest.approx(gauss_1d_entropy, abs=0.15)
    assert res["all_but_target"]["nll"] == pytest.approx(2 * gauss_1d_entropy, abs=0.2)
    assert res["descendants"]["energy"] < 0.05
    assert res["descendants"]["ate_mae"] < 0.2
    # a wrong prediction (ignores the causal effect) is worse on descendants only
    wrong = GaussianMixture.gaussian(np.array([5.0, 2.0, -1.0]), np.diag([1e-6, 5.0, 1.0]))
    bad = evaluate_prediction(wrong, inter, obs, adj, target, seed=0)
    assert bad["descendants"]["ate_mae"] == pytest.approx(8.0, abs=0.3)
    assert bad["descendants"]["energy"] > 1.0
    assert bad["descendants"]["nll"] > res["descendants"]["nll"] + 1.0
    assert bad["non_descendants"]["ate_mae"] == pytest.approx(res["non_descendants"]["ate_mae"])
    # empty sets are omitted; `sets` restricts the evaluation
    sink = evaluate_prediction(
        truth, inter, obs, adj, np.array([False, False, True]), seed=1,
        sets=["all_but_target", "descendants"],
    )
    assert set(sink) == {"all_but_target"}
    with pytest.raises(ValueError):
        evaluate_prediction(truth, inter, obs, adj, target, seed=0, sets=["bogus"])


def test_vectorized_metrics_match_the_per_task_ones():
    """evaluate_predictions (all tasks, masks) == evaluate_prediction (one task, index sets)."""
    from activa_ppl.predictors import linear_causal_predictor
    from activa_ppl.metrics import evaluate_predictions
    from activa_ppl.simulate import linear_dataset

    data = linear_dataset(num_scms=60, num_vars=4, noise="beta", num_samples=40, seed=2, edge_prob=0.5)
    tasks = data.tasks("test")
    mix = linear_causal_predictor()(tasks, data)
    # a two-component mixture makes the check cover the mixture marginal, not just a Gaussian
    mix = GaussianMixture(jnp.concatenate([mix.weights * 0.3, mix.weights * 0.7], -1),
                          jnp.concatenate([mix.locs, mix.locs + 0.5], -2),
                          jnp.concatenate([mix.covariances, mix.covariances * 2.0], -3))
    key = jax.random.PRNGKey(0)
    keys = jnp.stack([jax.random.fold_in(key, t) for t in range(len(tasks.scm))])
    vec = evaluate_predictions(mix, tasks.interventional, data.adjacency[tasks.scm], tasks.targets, keys,
                               chunk_size=7)  # several chunks, a padded last one
    checked = 0
    for t in range(len(tasks.scm)):
        ref = evaluate_prediction(mix[t], tasks.interventional[t], tasks.observational[t],
                                  data.adjacency[tasks.scm[t]], tasks.targets[t].astype(bool), keys[t])
        for j, name in enumerate(MARGINAL_SET_NAMES):
            if name not in ref:
                assert np.isnan(vec["nll"][t, j])
                continue
            for metric in ("nll", "energy", "ate_mae"):
                np.testing.assert_allclose(vec[metric][t, j], ref[name][metric], rtol=2e-4, atol=2e-5)
                checked += 1
    assert checked > 50
