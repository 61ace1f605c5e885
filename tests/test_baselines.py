"""Tests for activa_ppl.baselines (paper Section 6.2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from activa_ppl.baselines import (
    DEFAULT_TARGET_VARIANCE,
    gaussian_conditional,
    gaussian_conditional_batch,
    intervention_vector,
    linear_causal,
    linear_causal_batch,
)
from activa_ppl.mixture import GaussianMixture

W = 2.0
NOISE_SD = 0.5
CHAIN_ADJ = np.array([[0, 1], [0, 0]])  # X0 -> X1


@pytest.fixture(scope="module")
def chain_obs():
    """X0 ~ N(0, 1), X1 = W X0 + N(0, NOISE_SD^2), 20k samples."""
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=20_000)
    x1 = W * x0 + NOISE_SD * rng.normal(size=20_000)
    return np.stack([x0, x1], axis=1).astype(np.float32)


def test_linear_causal_chain_do_cause(chain_obs):
    pred = linear_causal(chain_obs, CHAIN_ADJ, np.array([True, False]), 5.0)
    assert isinstance(pred, GaussianMixture)
    assert pred.batch_shape == () and pred.num_components == 1 and pred.num_vars == 2
    mean, cov = np.asarray(pred.mean), np.asarray(pred.covariance)
    assert mean[0] == 5.0
    assert mean[1] == pytest.approx(5 * W, abs=0.05)
    assert cov[1, 1] == pytest.approx(NOISE_SD**2, rel=0.05)
    assert cov[0, 0] == pytest.approx(DEFAULT_TARGET_VARIANCE, rel=1e-3)
    assert cov[0, 1] == 0.0 and cov[1, 0] == 0.0


def test_do_effect_vs_spurious_conditional_effect(chain_obs):
    target = np.array([False, True])
    causal = linear_causal(chain_obs, CHAIN_ADJ, target, 5.0)
    cond = gaussian_conditional(chain_obs, target, 5.0)
    # do(X1 = 5) leaves X0 at its observational distribution N(0, 1) ...
    assert float(causal.mean[0]) == pytest.approx(0.0, abs=0.03)
    assert float(causal.covariance[0, 0]) == pytest.approx(1.0, rel=0.05)
    # ... while conditioning on X1 = 5 shifts it: E[X0 | X1 = 5] = 5 W / (W^2 + s^2)
    expected = 5 * W / (W**2 + NOISE_SD**2)
    assert float(cond.mean[0]) == pytest.approx(expected, rel=0.03)
    assert float(cond.covariance[0, 0]) == pytest.approx(
        1 - W**2 / (W**2 + NOISE_SD**2), rel=0.05
    )
    assert float(cond.mean[1]) == 5.0 and float(causal.mean[1]) == 5.0


def test_gaussian_conditional_bivariate_closed_form():
    rng = np.random.default_rng(1)
    cov_true = np.array([[2.0, 0.8], [0.8, 1.0]])
    x = rng.multivariate_normal([1.0, -1.0], cov_true, size=500)
    mu = x.mean(0)
    s = np.cov(x.T, ddof=1)
    v = 0.7
    pred = gaussian_conditional(x.astype(np.float32), np.array([False, True]), v)
    cond_mean = mu[0] + s[0, 1] / s[1, 1] * (v - mu[1])
    cond_var = s[0, 0] - s[0, 1] ** 2 / s[1, 1]
    assert float(pred.locs[0, 0]) == pytest.approx(cond_mean, rel=1e-4, abs=1e-5)
    assert float(pred.covariances[0, 0, 0]) == pytest.approx(cond_var, rel=1e-4)
    assert float(pred.locs[0, 1]) == pytest.approx(v)
    # MLE covariance option
    mle = gaussian_conditional(x.astype(np.float32), np.array([False, True]), v, ddof=0)
    assert float(mle.covariances[0, 0, 0]) == pytest.approx(cond_var * 499 / 500, rel=1e-4)


def test_gaussian_conditional_two_targets_matches_numpy():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(4, 4))
    x = rng.multivariate_normal(np.arange(4.0), a @ a.T + np.eye(4), size=300)
    mask = np.array([True, False, True, False])
    values = np.array([1.5, -0.5])  # one value per target (variables 0 and 2)
    with jax.enable_x64(True):
        pred = gaussian_conditional(x, mask, values)
        mean, cov = np.asarray(pred.mean), np.asarray(pred.covariance)
    mu, s = x.mean(0), np.cov(x.T)
    t, r = np.flatnonzero(mask), np.flatnonzero(~mask)
    gain = s[np.ix_(r, t)] @ np.linalg.inv(s[np.ix_(t, t)])
    np.testing.assert_allclose(mean[r], mu[r] + gain @ (values - mu[t]), rtol=1e-10)
    np.testing.assert_allclose(
        cov[np.ix_(r, r)], s[np.ix_(r, r)] - gain @ s[np.ix_(t, r)], rtol=1e-10
    )
    np.testing.assert_array_equal(mean[t], values)
    np.testing.assert_array_equal(cov[np.ix_(t, r)], 0.0)
    np.testing.assert_allclose(cov[np.ix_(t, t)], DEFAULT_TARGET_VARIANCE * np.eye(2))


def _random_dag_scm(rng, d, n):
    adj = np.triu(rng.random((d, d)) < 0.6, k=1).astype(int)
    weights = adj * rng.uniform(0.5, 1.5, size=(d, d)) * rng.choice([-1, 1], size=(d, d))
    intercepts = rng.normal(size=d)
    noise_sd = rng.uniform(0.5, 1.0, size=d)
    x = np.zeros((n, d))
    for j in range(d):
        x[:, j] = intercepts[j] + x @ weights[:, j] + noise_sd[j] * rng.normal(size=n)
    return adj, weights, intercepts, noise_sd, x


def test_linear_causal_matches_numpy_ols_and_surgery():
    rng = np.random.default_rng(3)
    d = 5
    adj, _, _, _, x = _random_dag_scm(rng, d, 400)
    mask = np.zeros(d, bool)
    mask[1] = True
    with jax.enable_x64(True):
        pred = linear_causal(x, adj, mask, 3.0)
        mean, cov = np.asarray(pred.mean), np.asarray(pred.covariance)
    # reference: numpy lstsq per variable, surgery, explicit inverse
    b = np.zeros((d, d))
    c = np.zeros(d)
    var = np.zeros(d)
    for j in range(d):
        pa = np.flatnonzero(adj[:, j])
        design = np.column_stack([np.ones(len(x)), x[:, pa]])
        coef, *_ = np.linalg.lstsq(design, x[:, j], rcond=None)
        c[j], b[j, pa] = coef[0], coef[1:]
        resid = x[:, j] - design @ coef
        var[j] = resid @ resid / (len(x) - len(pa) - 1)
    b[1], c[1], var[1] = 0.0, 3.0, 0.0
    a = np.linalg.inv(np.eye(d) - b)
    ref_mean, ref_cov = a @ c, a @ np.diag(var) @ a.T
    ref_cov[1, :] = ref_cov[:, 1] = 0.0
    ref_cov[1, 1] = DEFAULT_TARGET_VARIANCE
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-9, atol=1e-9)


def test_linear_causal_recovers_true_interventional_moments():
    rng = np.random.default_rng(4)
    d = 4
    adj, weights, intercepts, noise_sd, x = _random_dag_scm(rng, d, 50_000)
    mask = np.array([True, False, False, False])
    pred = linear_causal(x.astype(np.float32), adj, mask, 2.0)
    b = weights.T.copy()
    b[0] = 0.0
    c = intercepts.copy()
    c[0] = 2.0
    a = np.linalg.inv(np.eye(d) - b)
    np.testing.assert_allclose(pred.mean[1:], (a @ c)[1:], atol=0.05)
    true_cov = a @ np.diag(np.r_[0.0, noise_sd[1:] ** 2]) @ a.T
    np.testing.assert_allclose(pred.covariance[1:, 1:], true_cov[1:, 1:], rtol=0.05, atol=0.03)


def test_intervention_vector_forms():
    mask = np.array([False, True, True])
    np.testing.assert_allclose(intervention_vector(5.0, mask, 3), [5, 5, 5])
    np.testing.assert_allclose(intervention_vector([1.0, 2.0], mask, 3), [0, 1, 2])
    np.testing.assert_allclose(intervention_vector([7.0, 1.0, 2.0], mask, 3), [7, 1, 2])
    with pytest.raises(ValueError):
        intervention_vector([1.0, 2.0, 3.0, 4.0], mask, 3)


def test_batch_wrappers_match_single(chain_obs):
    rng = np.random.default_rng(5)
    obs = np.stack([chain_obs[:1000], chain_obs[1000:2000], chain_obs[2000:3000]])
    masks = np.array([[True, False], [False, True], [True, False]])
    values = np.array([5.0, -1.0, 0.0])
    gc = gaussian_conditional_batch(obs, masks, values)
    lc = linear_causal_batch(obs, CHAIN_ADJ, masks, values)
    assert gc.batch_shape == (3,) and lc.batch_shape == (3,)
    for i in range(3):
        single_gc = gaussian_conditional(obs[i], masks[i], values[i])
        single_lc = linear_causal(obs[i], CHAIN_ADJ, masks[i], values[i])
        np.testing.assert_allclose(gc[i].locs, single_gc.locs, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(gc[i].covariances, single_gc.covariances, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(lc[i].locs, single_lc.locs, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(lc[i].covariances, single_lc.covariances, rtol=1e-4, atol=1e-6)
    # ragged list input (looped) gives the same as the stacked vmap
    ragged = linear_causal_batch(list(obs), np.stack([CHAIN_ADJ] * 3), masks, values)
    np.testing.assert_allclose(ragged.locs, lc.locs, rtol=1e-5, atol=1e-5)
    # the batched predictions are valid mixtures usable downstream
    x = jnp.asarray(rng.normal(size=(4, 3, 2)), dtype=jnp.float32)
    assert jnp.all(jnp.isfinite(lc.log_prob(x)))
    assert lc.sample(2, 0).shape == (2, 3, 2)


def test_input_validation():
    with pytest.raises(ValueError, match="obs"):
        gaussian_conditional(np.zeros(5), np.array([True]), 1.0)
    with pytest.raises(ValueError, match="target_mask"):
        gaussian_conditional(np.zeros((5, 2)), np.array([True]), 1.0)
    with pytest.raises(ValueError, match="adjacency"):
        linear_causal(np.zeros((5, 2)), np.zeros((3, 3)), np.array([True, False]), 1.0)


def test_linear_causal_refuses_a_cyclic_graph():
    """Linear Causal propagates moments through (I - B)^-1 = I + B + ... + B^(d-1), exact for a
    DAG only: a cyclic adjacency is refused."""
    import numpy as np

    from activa_ppl.baselines.classical import linear_causal

    cyclic = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], np.float32)
    obs = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="cycle"):
        linear_causal(obs, cyclic, np.array([True, False, False]), 5.0)
