"""``ActivaConfig(energy_weight=λ)``: the energy score of the prior-predictive mixture as a
training term (:func:`activa_ppl.mixture_math.mixture_energy_score`,
:func:`activa_ppl.distributions.predictive_energy_score`).

The estimator must be unbiased (checked against the closed-form CRPS of a Gaussian, and against
a float64 Monte-Carlo reference for a 2-d mixture), the model's factor must be −λ · N · ES of
the stratified mixture in z-scores (checked through the decoder's own z-score output), the term
must train the prior, and ``λ = 0`` must leave the model and the files as they were.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
import pytest
from scipy.stats import norm

import activa_ppl as ap
from activa_ppl.mixture_math import cholesky, mixture_energy_score
from activa_ppl.model import Activa, _standardization, stratified_predictive
from tests.test_hybrid_objective import (  # the tiny standardized tasks
    N_INT, T, _params, _tasks, _trace, check_method_is_the_models_factor, check_per_step_adds_the_term_once)


def _config(weight, **overrides):
    return ap.ActivaConfig.preset("tiny", standardize=True, intervention_values=(5.0,), decoder_context=True,
                                  energy_weight=weight, **overrides)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _factor(activa_config, params, seed, obs, targets, index, v):
    """The ``energy`` site's log factor per task ``(T,)``."""
    site = _trace(Activa(activa_config), params, seed, obs, targets, index, v)["energy"]
    return site["fn"].log_prob(site["value"])


def _scored_mixture(activa, params, seed, obs, targets, index, v):
    """What the model's ``energy`` factor scores at ``seed``, rebuilt by hand: the stratified
    prior-predictive mixture from the decoder's own z-score output ``(log weights, locs, scale
    tril)``, the samples z-scored by the observational statistics, and the component-draw key
    (the model draws z first)."""
    cfg = activa.config
    (mean, std), _ = _standardization(cfg, jnp.asarray(obs), jnp.asarray(targets), jnp.asarray(index))
    h = activa.observational_embedding(params, obs, targets, index)
    prior_logits, prior_locs = activa.apply(params, "prior", h)
    key = numpyro.handlers.seed(lambda: (numpyro.prng_key(), numpyro.prng_key()), seed)()[1]  # z first
    key_z, key_x = jax.random.split(key)
    log_w, locs, covs = (a[:, 0] for a in stratified_predictive(
        lambda z: activa.apply(params, "decoder", z, h), prior_logits, prior_locs, cfg.prior_variance, key_z))
    v_z = (v - np.asarray(mean)[:, None]) / np.asarray(std)[:, None]
    return log_w, locs, cholesky(covs), v_z, key_x


def _mean_over_keys(fn, reps, seed=0):
    values = np.asarray(jax.jit(jax.vmap(fn))(jax.random.split(jax.random.PRNGKey(seed), reps)), np.float64)
    return values.mean(), values.std() / math.sqrt(reps)


def test_one_gaussian_scores_its_closed_form_crps():
    """In one dimension the energy score is the CRPS; for N(μ, σ²) at y it is
    σ [z (2Φ(z) − 1) + 2φ(z) − 1/√π], z = (y − μ)/σ (Gneiting & Raftery 2007)."""
    mu, sigma = 0.3, 1.7
    y = np.array([[-2.0], [0.5], [4.0]], np.float32)  # N = 3 samples, d = 1
    z = (y[:, 0] - mu) / sigma
    crps = sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / math.sqrt(math.pi))
    locs, tril = jnp.array([[mu]]), jnp.array([[[sigma]]])
    mean, se = _mean_over_keys(lambda k: mixture_energy_score(jnp.zeros(1), locs, tril, y, k), 20000)
    assert abs(mean - crps.mean()) < 4 * se, (mean, crps.mean(), se)


def test_mixture_score_matches_a_monte_carlo_reference():
    """A 2-d, two-component mixture: the estimate's mean equals (1/N) Σ_n E‖X − y_n‖ − ½E‖X − X′‖
    computed in float64 from 400,000 ancestral samples."""
    weights = np.array([0.3, 0.7])
    locs = np.array([[0.0, 0.0], [3.0, 1.0]])
    covariances = np.array([[[1.0, 0.4], [0.4, 0.8]], [[0.5, 0.0], [0.0, 2.0]]])
    y = np.random.default_rng(1).normal(size=(6, 2)) + 1.0
    mean, se = _mean_over_keys(lambda k: mixture_energy_score(
        jnp.log(jnp.asarray(weights, jnp.float32)), jnp.asarray(locs, jnp.float32),
        cholesky(jnp.asarray(covariances, jnp.float32)), jnp.asarray(y, jnp.float32), k), 20000)

    rng = np.random.default_rng(2)
    tril = np.linalg.cholesky(covariances)

    def draws(m):
        k = rng.choice(2, size=m, p=weights)
        return locs[k] + np.einsum("mab,mb->ma", tril[k], rng.standard_normal((m, 2)))

    x, x2 = draws(400_000), draws(400_000)
    to_y = np.mean([np.linalg.norm(x - yn, axis=1).mean() for yn in y])
    reference = to_y - 0.5 * np.linalg.norm(x - x2, axis=1).mean()
    reference_se = 0.01  # the reference's own Monte-Carlo error is a few thousandths
    assert abs(mean - reference) < 4 * se + reference_se, (mean, reference, se)


def test_score_is_lowest_at_the_true_distribution():
    """Propriety on an example: samples of N(0, 1) score better under N(0, 1) than under a
    shifted, a narrower or a wider Gaussian."""
    y = jax.random.normal(jax.random.PRNGKey(5), (400, 1))

    def score(mu, sigma):
        return _mean_over_keys(lambda k: mixture_energy_score(
            jnp.zeros(1), jnp.array([[mu]]), jnp.array([[[sigma]]]), y, k), 4000)[0]

    truth = score(0.0, 1.0)
    for mu, sigma in ((0.5, 1.0), (0.0, 0.4), (0.0, 2.5)):
        assert score(mu, sigma) > truth + 0.02, (mu, sigma)


def test_factor_is_minus_lambda_n_times_the_stratified_score_in_z_scores(rng):
    """The model's ``energy`` factor equals −λ · N · ES of the stratified prior-predictive mixture,
    with the mixture taken from the decoder's own z-score output (not mapped to data units and
    back) and the samples z-scored by the observational statistics, at the key the model used."""
    weight = 0.7
    activa = Activa(_config(weight))
    params = _params(activa)
    obs, targets, index, v = _tasks(rng)
    factor = np.asarray(_factor(activa.config, params, 3, obs, targets, index, v))  # (T,)
    assert factor.shape == (T,)

    log_w, locs, tril, v_z, key_x = _scored_mixture(activa, params, 3, obs, targets, index, v)
    expected = -weight * N_INT * np.asarray(mixture_energy_score(log_w, locs, tril, v_z, key_x))
    np.testing.assert_allclose(factor, expected, rtol=1e-4, atol=1e-4)
    assert np.all(expected < 0)


def test_term_trains_the_prior_and_not_the_guide(rng):
    """The factor's gradient is finite, reaches the prior and leaves the guide's encoder at 0."""
    activa = Activa(_config(1.0))
    params = _params(activa, key=2)
    obs, targets, index, v = _tasks(rng)
    grads = jax.jit(jax.grad(lambda p: _factor(activa.config, p, 5, obs, targets, index, v).sum()))(params)
    leaves = {name: jax.tree_util.tree_leaves(grads[f"{name}$params"]) for name in ("prior", "posterior")}
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grads))
    assert sum(float(jnp.sum(g ** 2)) for g in leaves["prior"]) > 0
    assert all(float(jnp.abs(g).max()) == 0 for g in leaves["posterior"])


def test_one_training_step_is_finite(rng):
    """One SVI step with the term (the training estimator, 2 particles) has a finite loss and
    finite parameters."""
    activa = Activa(_config(1.0, num_particles=2))
    obs, targets, index, v = _tasks(rng)
    svi = activa.svi(optax.adam(1e-3), shared_embedding=True)
    state = svi.init(jax.random.PRNGKey(0), obs, targets, index, v)
    state, loss = jax.jit(svi.update)(state, obs, targets, index, v)
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(np.asarray(p))) for p in jax.tree_util.tree_leaves(svi.get_params(state)))


def test_weight_zero_adds_no_site_and_files_are_unchanged(rng):
    activa = Activa(_config(0.0))
    obs, targets, index, v = _tasks(rng)
    assert "energy" not in _trace(activa, _params(activa), 0, obs, targets, index, v)
    assert "energy_weight" not in ap.ActivaConfig().to_dict()
    config = ap.ActivaConfig(energy_weight=2.0)
    assert config.to_dict()["energy_weight"] == 2.0
    assert ap.ActivaConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), True, "1"])
def test_config_rejects_bad_weights(bad):
    with pytest.raises(ValueError, match="energy_weight"):
        ap.ActivaConfig(energy_weight=bad)


def test_per_step_estimate_adds_the_term_once(rng):
    """``predictive_estimate="per_step"``: SharedEmbeddingELBO's loss is the ELBO without the
    ``energy`` factor plus λ · (total_tasks / T) · Σ_t N · ES_t, computed once per step with
    ``fold_in(key, 1)`` of the term's key."""
    weight, num_particles = 3.0, 3
    per_step = Activa(_config(weight, predictive_estimate="per_step", num_particles=num_particles))
    plain = Activa(_config(0.0, num_particles=num_particles))
    tasks = _tasks(rng)

    def term(params, key):  # what the factor adds: −λ Σ N·ES
        return -weight * jnp.sum(per_step.energy_score(params, *tasks, jax.random.fold_in(key, 1)))

    assert check_per_step_adds_the_term_once(tasks, per_step, plain, "energy", term) < 0


def test_energy_score_method_is_the_models_factor(rng):
    """:meth:`Activa.energy_score` from the params computes what the model's ``energy`` factor
    adds (before −λ)."""
    activa = Activa(_config(0.7))
    check_method_is_the_models_factor(rng, activa, _factor, activa.energy_score, -0.7)


# -- ActivaConfig(marginal_energy_weight=μ): the 1-D marginals' scores inside the energy term -----

def test_l1_score_is_the_sum_of_the_marginals_closed_form_crps():
    """With the L1 norm the energy score of a Gaussian with a correlated covariance is the sum of
    its 1-D marginals' CRPS (closed form; the correlation does not enter), estimated from the
    same draws as the Euclidean score: (ES + μ ES₁) − ES at one key is μ ES₁ exactly."""
    mus, sds = np.array([0.3, -1.0]), np.array([1.7, 0.6])
    corr = 0.8
    cov = np.array([[sds[0] ** 2, corr * sds[0] * sds[1]], [corr * sds[0] * sds[1], sds[1] ** 2]])
    y = np.array([[-2.0, 0.0], [0.5, -1.5], [4.0, 1.0]], np.float32)
    z = (y - mus) / sds
    crps = sds * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / math.sqrt(math.pi))  # (N, d)
    locs, tril = jnp.array([mus], jnp.float32), jnp.array([np.linalg.cholesky(cov)], jnp.float32)
    weight = 2.5

    def l1_part(key):
        both = mixture_energy_score(jnp.zeros(1), locs, tril, y, key, l1_weight=weight)
        return (both - mixture_energy_score(jnp.zeros(1), locs, tril, y, key)) / weight

    mean, se = _mean_over_keys(l1_part, 20000)
    expected = crps.sum(axis=1).mean()
    assert abs(mean - expected) < 4 * se, (mean, expected, se)
    assert se < 0.02 * expected  # the check has power


def test_marginal_factor_adds_mu_times_the_l1_score(rng):
    """The model's ``energy`` factor with μ is −N (λ ES + μ ES₁) from the same draws: against the
    factor without μ at the same key, the difference is −N μ ES₁ of the same stratified mixture."""
    lam, mu = 0.7, 2.0
    with_mu, without = Activa(_config(lam, marginal_energy_weight=mu)), Activa(_config(lam))
    params = _params(without)
    obs, targets, index, v = _tasks(rng)
    f_mu = np.asarray(_factor(with_mu.config, params, 3, obs, targets, index, v))
    f_plain = np.asarray(_factor(without.config, params, 3, obs, targets, index, v))
    log_w, locs, tril, v_z, key_x = _scored_mixture(without, params, 3, obs, targets, index, v)
    l1 = (np.asarray(mixture_energy_score(log_w, locs, tril, v_z, key_x, l1_weight=1.0))
          - np.asarray(mixture_energy_score(log_w, locs, tril, v_z, key_x)))
    np.testing.assert_allclose(f_mu - f_plain, -mu * N_INT * l1, rtol=1e-3, atol=1e-3)
    assert np.all(l1 > 0)
    check_method_is_the_models_factor(rng, with_mu, _factor, with_mu.energy_score, -lam)


def test_marginal_weight_config():
    with pytest.raises(ValueError, match="needs energy_weight > 0"):
        ap.ActivaConfig(marginal_energy_weight=1.0)
    with pytest.raises(ValueError, match="marginal_energy_weight"):
        ap.ActivaConfig(energy_weight=1.0, marginal_energy_weight=-1.0)
    assert "marginal_energy_weight" not in ap.ActivaConfig(energy_weight=1.0).to_dict()
    config = ap.ActivaConfig(energy_weight=10.0, marginal_energy_weight=5.0)
    assert config.to_dict()["marginal_energy_weight"] == 5.0 and config.marginal_energy_ratio == 0.5
    assert ap.ActivaConfig.from_dict(config.to_dict()) == config


# -- ActivaConfig(energy_scale="task"): the energy term in data units over one scale per task --------

def test_task_scale_factor_scores_data_units_over_the_tasks_rms_std(rng):
    """With ``energy_scale="task"`` the ``energy`` factor is −λ N ES of the same stratified mixture
    and samples in data units, centred and divided by one number per task, s = (Σ_j σ_j² / d)^½:
    rebuilt by hand from the z-score mixture (locs ↦ σ ⊙ locs / s, L ↦ diag(σ) L / s, which is
    the Cholesky factor of the rescaled covariance), and differing from the z-score factor."""
    lam = 0.7
    task, plain = Activa(_config(lam, energy_scale="task")), Activa(_config(lam))
    params = _params(plain)
    obs, targets, index, v = _tasks(rng)
    f_task = np.asarray(_factor(task.config, params, 3, obs, targets, index, v))
    f_plain = np.asarray(_factor(plain.config, params, 3, obs, targets, index, v))
    log_w, locs, tril, v_z, key_x = _scored_mixture(plain, params, 3, obs, targets, index, v)
    (_, std), _ = _standardization(plain.config, jnp.asarray(obs), jnp.asarray(targets), jnp.asarray(index))
    std = np.asarray(std)  # (T, d)
    ratio = std / np.sqrt((std ** 2).mean(-1, keepdims=True))  # σ_j / s, (T, d)
    score = mixture_energy_score(log_w, locs * ratio[:, None], tril * ratio[:, None, :, None],
                                 v_z * ratio[:, None], key_x)
    np.testing.assert_allclose(f_task, -lam * N_INT * np.asarray(score), rtol=1e-3, atol=1e-3)
    assert np.ptp(ratio) > 0.1 and np.max(np.abs(f_task - f_plain)) > 0.05  # the scales differ here
    check_method_is_the_models_factor(rng, task, _factor, task.energy_score, -lam)


def test_energy_scale_config():
    with pytest.raises(ValueError, match="energy_scale must be one of"):
        ap.ActivaConfig(standardize=True, intervention_values=(1.0,), energy_weight=1.0, energy_scale="data")
    with pytest.raises(ValueError, match="needs standardize=True"):
        ap.ActivaConfig(energy_weight=1.0, energy_scale="task")
    assert "energy_scale" not in _config(1.0).to_dict()
    config = _config(10.0, energy_scale="task")
    assert config.to_dict()["energy_scale"] == "task"
    assert ap.ActivaConfig.from_dict(config.to_dict()) == config
