"""``ActivaConfig(exact_targets=True)``: the intervened coordinates are set exactly in every
decoded component (mean ``v_i``, variance ``exp(2 θ_i) + ε σ_t²``, the decoder's correlations
kept), in training and in prediction; models without it are unchanged."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest

import activa_ppl as ap
from activa_ppl.distributions import pin_targets
from activa_ppl.model import TARGET_LOG_SD
from tests.helpers import check_value_option_config

TINY = dict(num_predictive_latents=3, num_validation_latents=2)


def _random_covariances(rng, shape, d):
    a = rng.normal(size=(*shape, d, d))
    return (a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(d)).astype(np.float32)


def test_pin_targets_sets_the_target_and_keeps_correlations(rng):
    """Means and variances at the targets are the given ones, the target's correlations and every
    other entry are the decoder's, and the result stays positive definite; leading latent axes
    broadcast."""
    s, t, k, d = 2, 3, 4, 5
    locs = rng.normal(size=(s, t, k, d)).astype(np.float32)
    cov = _random_covariances(rng, (s, t, k), d)
    targets = np.zeros((t, d), np.float32)
    targets[0, 1] = targets[1, 4] = targets[2, 0] = targets[2, 3] = 1.0  # task 2: two targets
    values = np.array([5.0, -1.0, 0.5], np.float32)
    variances = np.abs(rng.normal(size=(t, d))).astype(np.float32) + 0.01
    new_locs, new_cov = (np.asarray(a) for a in pin_targets(jnp.asarray(locs), jnp.asarray(cov),
                                                            jnp.asarray(targets), jnp.asarray(values),
                                                            jnp.asarray(variances)))
    assert new_locs.shape == locs.shape and new_cov.shape == cov.shape
    hit = np.broadcast_to(targets[:, None, :] > 0, locs.shape)
    np.testing.assert_array_equal(new_locs[hit], np.broadcast_to(values[:, None, None], locs.shape)[hit])
    np.testing.assert_array_equal(new_locs[~hit], locs[~hit])
    diag, new_diag = np.diagonal(cov, axis1=-2, axis2=-1), np.diagonal(new_cov, axis1=-2, axis2=-1)
    np.testing.assert_allclose(new_diag[hit], np.broadcast_to(variances[:, None, :], locs.shape)[hit], rtol=1e-5)
    np.testing.assert_allclose(new_diag[~hit], diag[~hit], rtol=1e-6)

    def corr(c):
        sd = np.sqrt(np.diagonal(c, axis1=-2, axis2=-1))
        return c / (sd[..., :, None] * sd[..., None, :])

    np.testing.assert_allclose(corr(new_cov), corr(cov), atol=1e-5)
    others = ~(targets > 0)  # (T, d): entries between two non-targets are untouched
    block = others[:, :, None] & others[:, None, :]
    np.testing.assert_array_equal(new_cov[:, block[:, None].repeat(k, 1)], cov[:, block[:, None].repeat(k, 1)])
    assert np.all(np.linalg.eigvalsh(new_cov.astype(np.float64)) > 0)


def test_config_needs_values_and_older_files_are_unchanged():
    check_value_option_config("exact_targets")
    assert TARGET_LOG_SD not in ap.Activa(ap.ActivaConfig.preset("tiny")).init_params(jax.random.PRNGKey(0))


@pytest.mark.parametrize("standardize", [False, True])
def test_training_learns_the_target_scale_through_the_likelihood(task_factory, standardize):
    """``svi.init`` registers θ with the shape :meth:`Activa.init_params` gives, and the ELBO's
    gradient reaches it: with every V_t at v exactly and the initial scale 1, a smaller scale
    is better (with V_t = v_i the others' conditional given V_t does not depend on θ under
    Σ′ = DΣD, so only the pinned Normal of V_t does)."""
    cfg = ap.ActivaConfig.preset("tiny", **TINY, exact_targets=True, standardize=standardize,
                                 intervention_values=(5.0,))
    activa = ap.Activa(cfg)
    obs, targets, index, inter = task_factory(np.random.default_rng(0), 4, 6, 3)
    inter = np.asarray(inter).copy()
    hit = np.broadcast_to(np.asarray(targets)[:, None, :] > 0, inter.shape)
    inter[hit] = 5.0  # V_t at v: the intervened coordinates of the 4 tasks, (T, N, d)
    svi = activa.svi(numpyro.optim.Adam(1e-3), shared_embedding=True)
    state = svi.init(jax.random.PRNGKey(2), obs, targets, index, inter)
    params = svi.get_params(state)
    expected = jax.eval_shape(activa.init_params, jax.random.PRNGKey(0))
    assert jax.tree.map(lambda a: a.shape, params) == jax.tree.map(lambda a: a.shape, expected)
    np.testing.assert_array_equal(np.asarray(params[TARGET_LOG_SD]), np.zeros(1))

    model, guide = activa.scaled()

    def loss(p, data):
        return activa.elbo().loss(jax.random.PRNGKey(5), p, model, guide, obs, targets, index, data)

    g = float(jax.grad(loss)(params, inter)[TARGET_LOG_SD][0])
    assert np.isfinite(g) and g > 0
    # the prior-predictive terms decode through the same pinning (stratified draws, (C, T, ...))
    key = jax.random.PRNGKey(6)
    score = jax.grad(lambda p: jnp.sum(activa.energy_score(p, obs, targets, index, inter, key)))(params)
    assert np.isfinite(float(score[TARGET_LOG_SD][0])) and float(score[TARGET_LOG_SD][0]) != 0  # sign: the
    # other coordinates' fit (an untrained model's predictive is too narrow, so wider helps)
    log_p = jax.grad(lambda p: jnp.sum(activa.log_predictive(p, obs, targets, index, inter, key)))(params)
    assert float(log_p[TARGET_LOG_SD][0]) < 0  # the log-likelihood rises as the scale shrinks to the data's


def test_prediction_pins_the_target_in_every_component(rng):
    """A fitted model's mixture has V_t's mean at v and its variance at exp(2θ) + ε σ_t² in every
    component, in data units; the other coordinates are the decoder's."""
    cfg = ap.ActivaConfig.preset("tiny", **TINY, exact_targets=True, standardize=True,
                                 intervention_values=(5.0,))
    activa = ap.Activa(cfg)
    params = activa.init_params(jax.random.PRNGKey(3))
    params[TARGET_LOG_SD] = jnp.log(jnp.asarray([0.1], jnp.float32))
    obs = (rng.normal(size=(60, 3)) * [1.0, 4.0, 0.5] + [0.0, 10.0, -3.0]).astype(np.float32)
    mix = ap.FittedActiva(activa, params).predict(obs, target=1, seed=0, bucket=False)
    locs, cov = np.asarray(mix.locs), np.asarray(mix.covariances)
    np.testing.assert_allclose(locs[:, 1], 5.0, rtol=1e-6)
    floor = cfg.covariance_eps * obs[:, 1].std() ** 2
    np.testing.assert_allclose(cov[:, 1, 1], 0.01 + floor, rtol=2e-3)
    assert np.ptp(locs[:, 0]) > 0  # the others vary over the latent draws
    plain = ap.FittedActiva(ap.Activa(dataclasses.replace(cfg, exact_targets=False)),
                            {k: v for k, v in params.items() if k != TARGET_LOG_SD})
    base = plain.predict(obs, target=1, seed=0, bucket=False)
    np.testing.assert_allclose(locs[:, [0, 2]], np.asarray(base.locs)[:, [0, 2]], rtol=1e-5, atol=1e-5)


def test_a_saved_model_loads_with_its_target_scale(tmp_path):
    cfg = ap.ActivaConfig.preset("tiny", **TINY, exact_targets=True, intervention_values=(5.0,))
    activa = ap.Activa(cfg)
    params = activa.init_params(jax.random.PRNGKey(4))
    params[TARGET_LOG_SD] = jnp.asarray([-1.5], jnp.float32)
    ap.FittedActiva(activa, params).save(tmp_path / "m")
    loaded = ap.load(tmp_path / "m")
    assert loaded.activa.config == cfg
    np.testing.assert_array_equal(np.asarray(loaded.params[TARGET_LOG_SD]), [-1.5])


def test_cli_flag_reaches_the_config():
    import argparse

    from activa_ppl.arguments import add_training_arguments

    parser = argparse.ArgumentParser()
    add_training_arguments(parser)
    assert parser.parse_args(["--out", "x", "--exact-targets"]).exact_targets is True
    assert parser.parse_args(["--out", "x"]).exact_targets is False
