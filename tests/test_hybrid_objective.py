"""``ActivaConfig(predictive_weight=w)``: the hybrid objective, the ELBO plus ``w`` times the
prior-predictive log-likelihood of each task's samples (:func:`activa_ppl.distributions.stratified_predictive`).

The factor must be the log density of the stratified mixture, computed independently here; the
stratified estimate must agree with the mixture that prediction samples
(:func:`activa_ppl.model.predictive_arrays`); the term must reach the prior (the ELBO alone
trains it only through the KL); and ``w = 0`` must leave the objective and the files as they were.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from scipy.stats import multivariate_normal

import activa_ppl as ap
from activa_ppl.model import (Activa, _data_units, _standardization, decoded_distribution, predictive_arrays,
                              stratified_predictive)

D, N_OBS, N_INT, T = 3, 12, 5, 4


def _config(weight, **overrides):
    return ap.ActivaConfig.preset("tiny", standardize=True, intervention_values=(5.0,), decoder_context=True,
                                  predictive_weight=weight, **overrides)


def _tasks(rng):
    obs = (rng.normal(size=(T, N_OBS, D)) * [1.0, 3.0, 0.5] + [0.0, 10.0, -2.0]).astype(np.float32)
    targets = np.zeros((T, D), np.float32)
    targets[np.arange(T), np.arange(T) % D] = 1.0
    interventional = (obs[:, :N_INT] + rng.normal(size=(T, N_INT, D))).astype(np.float32)
    return obs, targets, np.zeros(T, np.int32), interventional


def _params(activa, key=0):
    return activa.init_params(jax.random.PRNGKey(key), num_vars=D, num_samples=N_OBS)


def _trace(activa, params, seed, *tasks, **kwargs):
    model = numpyro.handlers.substitute(numpyro.handlers.seed(activa.model, seed), params)
    return numpyro.handlers.trace(model).get_trace(*tasks, **kwargs)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _factor(activa_config, params, seed, obs, targets, index, v):
    """The ``predictive`` site's log factor per task ``(T,)`` (compiled: op-by-op tracing of the
    model costs more than one compilation)."""
    site = _trace(Activa(activa_config), params, seed, obs, targets, index, v)["predictive"]
    return site["fn"].log_prob(site["value"])


def _prior_and_decoder(activa, params, obs, targets, index):
    """Prior (logits, locs) and the data-unit decoder, from the modules applied directly."""
    cfg = activa.config
    stats, channel = _standardization(cfg, jnp.asarray(obs), jnp.asarray(targets), jnp.asarray(index))
    h = activa.observational_embedding(params, obs, targets, index)
    logits, locs = activa.apply(params, "prior", h)

    def decode(z):
        w, m, c = activa.apply(params, "decoder", z, h)
        return (w, *_data_units(cfg, m, c, stats, targets, index, None))  # exact_targets off: θ unused

    return logits, locs, decode


def test_factor_is_the_stratified_mixture_log_density(rng):
    """The ``predictive`` factor equals w · Σ_n log Σ_c π_c Σ_k w_ck N(v_n | μ_ck, Σ_ck), with
    z_c = μ_c + √0.1 ε_c drawn from the key the model consumed, evaluated in float64 with SciPy."""
    activa = Activa(_config(0.7))
    params = _params(activa)
    obs, targets, index, v = _tasks(rng)
    factor = np.asarray(_factor(activa.config, params, 3, obs, targets, index, v))  # (T,)
    assert factor.shape == (T,)

    # the model draws z with the seed's first key and the factor's eps with the next one
    prior_logits, prior_locs, decode = _prior_and_decoder(activa, params, obs, targets, index)
    seeded = numpyro.handlers.seed(lambda: (numpyro.prng_key(), numpyro.prng_key()), 3)
    key = seeded()[1]
    eps = np.asarray(jax.random.normal(key, prior_locs.shape))
    z = np.asarray(prior_locs) + math.sqrt(activa.config.prior_variance) * eps  # (T, C, d)
    prior_w = np.asarray(jax.nn.softmax(prior_logits, -1), np.float64)
    expected = np.zeros(T)
    decoded = [[np.asarray(a, np.float64) for a in decode(jnp.asarray(z[:, c]))]  # every task's c-th draw
               for c in range(z.shape[1])]
    for t in range(T):
        density = np.zeros(N_INT)
        for c, (logits, locs, covs) in enumerate(decoded):
            weights = np.exp(logits[t] - np.logaddexp.reduce(logits[t]))
            for k in range(len(weights)):
                density += prior_w[t, c] * weights[k] * multivariate_normal(locs[t, k], covs[t, k]).pdf(v[t])
        expected[t] = 0.7 * np.log(density).sum()
    np.testing.assert_allclose(factor, expected, rtol=2e-4, atol=2e-3)


def test_stratified_estimate_agrees_with_the_predictive_mixture(rng):
    """Averaged over keys, the stratified density p̂(v) estimates the same p_θ(v | D_obs, do)
    as the uniform mixture over S prior draws that prediction returns."""
    activa = Activa(_config(1.0))
    params = _params(activa, key=1)
    obs, targets, index, v = _tasks(rng)
    obs, targets, index, point = obs[:1], targets[:1], index[:1], v[:1, :1]  # one task, one sample
    prior_logits, prior_locs, decode = _prior_and_decoder(activa, params, obs, targets, index)

    def stratified_density(key):
        args = stratified_predictive(decode, prior_logits, prior_locs, activa.config.prior_variance, key)
        return jnp.exp(decoded_distribution(*args).log_prob(point))[0, 0]

    reps = 3000
    strat = np.asarray(jax.vmap(stratified_density)(jax.random.split(jax.random.PRNGKey(0), reps)))
    weights, locs, covs = predictive_arrays(activa, params, jax.random.PRNGKey(1), obs, targets, index, reps)
    per_draw = np.asarray(  # (S,): p_γ(v | z_s) of each of the S draws (weights sum to 1/S each)
        jnp.exp(decoded_distribution(jnp.log(weights), locs, covs).log_prob(point[0])), np.float64)
    component = np.asarray(jax.vmap(lambda m, c: jax.scipy.stats.multivariate_normal.pdf(point[0, 0], m, c))(
        locs[0], covs[0]), np.float64)
    draws = (np.asarray(weights[0], np.float64) * component).reshape(reps, -1).sum(-1) * reps
    np.testing.assert_allclose(draws.mean(), per_draw[0], rtol=1e-4)
    se = math.sqrt(strat.var() / reps + draws.var() / reps)
    assert abs(strat.mean() - draws.mean()) < 4 * se, (strat.mean(), draws.mean(), se)
    assert strat.std() < draws.std()  # the point of stratifying over the prior's components


def test_term_trains_the_prior(rng):
    """With w > 0 the prior's logits head gets a gradient from the factor alone; its sign
    agrees with a finite difference of the factor."""
    activa = Activa(_config(1.0))
    params = _params(activa, key=2)
    obs, targets, index, v = _tasks(rng)

    def factor(p):
        return _factor(activa.config, p, 5, obs, targets, index, v).sum()

    grads = jax.jit(jax.grad(factor))(params)
    prior_norm = sum(float(jnp.sum(g ** 2)) for g in jax.tree_util.tree_leaves(grads["prior$params"]))
    assert prior_norm > 0
    posterior = jax.tree_util.tree_leaves(grads["posterior$params"])
    assert all(float(jnp.abs(g).max()) == 0 for g in posterior)  # the guide is not in the term
    direction = jax.tree_util.tree_map(lambda g: g / math.sqrt(prior_norm), grads)
    step = 1e-3
    moved = jax.tree_util.tree_map(lambda p, g: p + step * g, params, direction)
    assert float(factor(moved)) > float(factor(params))


def test_weight_zero_is_the_elbo_and_the_weight_adds_the_term(rng):
    """w = 0: no factor site, and SVI's loss is the ELBO's; w > 0: the loss at the same key
    differs from it by exactly −w · (total_tasks / T) · Σ_t log p̂_t, from the trace."""
    obs, targets, index, v = _tasks(rng)
    plain, hybrid = Activa(_config(0.0)), Activa(_config(0.5))
    params = _params(plain)
    assert "predictive" not in _trace(plain, params, 0, obs, targets, index, v)

    def loss(activa):
        model, guide = activa.scaled()
        elbo = numpyro.infer.Trace_ELBO(num_particles=1)
        return float(elbo.loss(jax.random.PRNGKey(7), params, model, guide, obs, targets, index, v,
                               total_tasks=40))

    def factor_sum():
        model, guide = hybrid.scaled()
        seeded = numpyro.handlers.seed(model, jax.random.split(jax.random.PRNGKey(7))[0])
        guide_trace = numpyro.handlers.trace(numpyro.handlers.substitute(
            numpyro.handlers.seed(guide, jax.random.split(jax.random.PRNGKey(7))[1]), params)).get_trace(
            obs, targets, index, v, total_tasks=40)
        replayed = numpyro.handlers.replay(numpyro.handlers.substitute(seeded, params), guide_trace)
        site = numpyro.handlers.trace(replayed).get_trace(obs, targets, index, v, total_tasks=40)["predictive"]
        return float(jnp.sum(site["fn"].log_prob(site["value"]) * site["scale"]))

    difference = loss(hybrid) - loss(plain)
    assert difference == pytest.approx(-factor_sum(), rel=1e-4)
    assert factor_sum() < 0  # densities of several samples, far from degenerate


def test_subsampled_plate_scales_the_term(rng):
    """The term lives in the model's task plate, so a subsampling plate (``svi.run`` with
    ``subsample_size``) evaluates it on the minibatch and scales it by T / B like the likelihood."""
    activa = Activa(_config(1.0))
    params = _params(activa)
    obs, targets, index, v = _tasks(rng)

    @jax.jit
    def sites(p):
        trace = _trace(activa, p, 0, obs, targets, index, v, subsample_size=2)
        return {name: (trace[name]["fn"].log_prob(trace[name]["value"]), trace[name]["scale"])
                for name in ("predictive", "interventional")}

    out = sites(params)
    for name, (log_prob, scale) in out.items():
        assert log_prob.shape == (2,) and float(scale) == T / 2, name
        assert np.all(np.isfinite(np.asarray(log_prob)))


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), True, "1"])
def test_config_rejects_bad_weights(bad):
    with pytest.raises(ValueError, match="predictive_weight"):
        ap.ActivaConfig(predictive_weight=bad)


def test_config_files_without_the_term_are_unchanged():
    assert "predictive_weight" not in ap.ActivaConfig().to_dict()
    config = ap.ActivaConfig(predictive_weight=0.5)
    assert config.to_dict()["predictive_weight"] == 0.5
    assert ap.ActivaConfig.from_dict(config.to_dict()) == config


def check_method_is_the_models_factor(rng, activa, factor, method, weight):
    """``weight · method(params, tasks, key)`` equals the model's factor ``factor(config, params,
    3, tasks)`` (per task), given the key the model consumed for it (after z's)."""
    params = _params(activa)
    obs, targets, index, v = _tasks(rng)
    got = np.asarray(factor(activa.config, params, 3, obs, targets, index, v))
    key = numpyro.handlers.seed(lambda: (numpyro.prng_key(), numpyro.prng_key()), 3)()[1]
    direct = np.asarray(jax.jit(method)(params, obs, targets, index, v, key))
    np.testing.assert_allclose(weight * direct, got, rtol=1e-5, atol=1e-4)


def test_log_predictive_method_is_the_models_factor(rng):
    """:meth:`Activa.log_predictive` from the params computes what the model's ``predictive``
    factor adds (before w)."""
    activa = Activa(_config(0.7))
    check_method_is_the_models_factor(rng, activa, _factor, activa.log_predictive, 0.7)


def check_per_step_adds_the_term_once(tasks, per_step, plain, site, term):
    """The per-step estimator's loss is the ELBO without the factor ``site`` (the model called
    with ``predictive=False`` has no such site) at the first half of the split key, minus
    (total_tasks / T) · ``term(params, key)`` at the second, to float tolerance, and its gradient
    reaches the prior. ``per_step`` and ``plain`` differ only in the term's weight. Returns the
    term's value."""
    obs, targets, index, v = tasks
    params = _params(per_step, key=4)
    assert site not in _trace(per_step, params, 0, obs, targets, index, v, predictive=False)
    assert site in _trace(per_step, params, 0, obs, targets, index, v)

    def loss(activa, p, key):
        model, guide = activa.scaled()
        return activa.elbo(shared_embedding=True).loss(key, p, model, guide, obs, targets, index, v,
                                                       total_tasks=40)

    key = jax.random.PRNGKey(11)
    elbo_key, term_key = jax.random.split(key)
    got = float(jax.jit(functools.partial(loss, per_step))(params, key))
    value = float(term(params, term_key))
    expected = float(jax.jit(functools.partial(loss, plain))(params, elbo_key)) - (40 / T) * value
    assert got == pytest.approx(expected, rel=1e-5)
    grads = jax.jit(jax.grad(functools.partial(loss, per_step)))(params, key)
    assert sum(float(jnp.sum(g ** 2)) for g in jax.tree_util.tree_leaves(grads["prior$params"])) > 0
    return value


def test_per_step_estimate_adds_the_term_once(rng):
    """``predictive_estimate="per_step"``: the loss is the ELBO without the ``predictive``
    factor minus w · (total_tasks / T) · Σ_t log p̂_t, computed once."""
    weight, num_particles = 0.5, 3
    per_step = Activa(_config(weight, predictive_estimate="per_step", num_particles=num_particles))
    plain = Activa(_config(0.0, num_particles=num_particles))
    tasks = _tasks(rng)

    def term(params, key):
        return weight * jnp.sum(per_step.log_predictive(params, *tasks, key))

    assert check_per_step_adds_the_term_once(tasks, per_step, plain, "predictive", term) < 0


def test_per_step_estimate_agrees_with_per_particle_in_expectation(rng):
    """Over keys, the per-step and the per-particle losses have the same mean (they estimate
    one objective), and the per-step loss varies more (one stratified draw instead of several)."""
    obs, targets, index, v = _tasks(rng)
    configs = {name: _config(1.0, predictive_estimate=name, num_particles=4)
               for name in ("per_particle", "per_step")}
    params = _params(Activa(configs["per_step"]), key=5)

    def losses(config):
        activa = Activa(config)
        model, guide = activa.scaled()
        elbo = activa.elbo(shared_embedding=True)
        fn = jax.jit(jax.vmap(lambda k: elbo.loss(k, params, model, guide, obs, targets, index, v)))
        return np.asarray(fn(jax.random.split(jax.random.PRNGKey(0), 400)), np.float64)

    a, b = losses(configs["per_particle"]), losses(configs["per_step"])
    se = math.sqrt(a.var() / len(a) + b.var() / len(b))
    assert abs(a.mean() - b.mean()) < 4 * se, (a.mean(), b.mean(), se)
    assert b.std() > a.std()


def test_config_rejects_unknown_estimates_and_files_omit_the_default():
    with pytest.raises(ValueError, match="predictive_estimate"):
        ap.ActivaConfig(predictive_estimate="per_task")
    assert "predictive_estimate" not in ap.ActivaConfig(predictive_weight=1.0).to_dict()
    config = ap.ActivaConfig(predictive_weight=1.0, predictive_estimate="per_step")
    assert ap.ActivaConfig.from_dict(config.to_dict()) == config
