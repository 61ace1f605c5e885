"""``ActivaConfig(regression_context=True)``: the decoder's tokens get the observational
regression's prediction under the query (:mod:`activa_ppl.regression`). The features must be the
Gaussian Conditional baseline's marginals, computed independently; the option must reach the
decoder in training and prediction, respect padded samples, and leave models without it as they
were."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import activa_ppl as ap
from activa_ppl.baselines.classical import gaussian_conditional
from activa_ppl.regression import NUM_REGRESSION_FEATURES, regression_features
from tests.helpers import check_value_option_config

TINY = dict(num_predictive_latents=3, num_validation_latents=2)


def _data(rng, n, d):
    """Correlated, off-centre, unequal scales (a random linear map of normals)."""
    mixing = rng.normal(size=(d, d)) + 2 * np.eye(d)
    x = rng.normal(size=(n, d)) @ mixing * np.linspace(3.0, 0.2, d) + np.linspace(40.0, -2.0, d)
    return x.astype(np.float32)


@pytest.mark.parametrize("target", [0, 2])
def test_features_are_the_gaussian_conditional_marginals(rng, target):
    """Conditional mean and sd of every non-target equal the GC baseline's (MLE covariance),
    in data units and, mapped back, in z-scores; the target sits at v with the floor's sd."""
    d, value, floor = 4, 5.0, 1e-2
    obs = _data(rng, 300, d)
    mask = np.eye(d)[target].astype(np.float32)
    gc = gaussian_conditional(obs, mask.astype(bool), value, ddof=0)
    gc_mean, gc_sd = np.asarray(gc.locs[0]), np.sqrt(np.diagonal(np.asarray(gc.covariances[0])))
    raw = np.asarray(regression_features(jnp.asarray(obs), jnp.asarray(mask), jnp.float32(value), floor,
                                         standardized=False))
    assert raw.shape == (d, NUM_REGRESSION_FEATURES)
    others = np.arange(d) != target
    np.testing.assert_allclose(raw[others, 1], gc_mean[others], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(np.exp(raw[others, 2]), gc_sd[others], rtol=1e-3)
    np.testing.assert_allclose(raw[target], [1.0, value, np.log(floor)], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(raw[:, 0], np.corrcoef(obs.T)[target], atol=1e-5)
    z = np.asarray(regression_features(jnp.asarray(obs), jnp.asarray(mask), jnp.float32(value), floor,
                                       standardized=True))
    mean, sd = obs.mean(0), obs.std(0)
    np.testing.assert_allclose(mean[others] + sd[others] * z[others, 1], gc_mean[others], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(sd[others] * np.exp(z[others, 2]), gc_sd[others], rtol=1e-3)
    np.testing.assert_allclose(z[target, 1], (value - mean[target]) / sd[target], rtol=1e-4)


def test_masked_features_ignore_padded_rows(rng):
    obs = _data(rng, 40, 3)
    padded = np.concatenate([obs, np.full((24, 3), 1e3, np.float32)])[None]  # junk rows
    mask = (np.arange(64) < 40)[None]
    targets, value = jnp.asarray([[0.0, 1.0, 0.0]]), jnp.asarray([5.0])
    for standardized in (False, True):
        exact = regression_features(jnp.asarray(obs[None]), targets, value, 1e-2, standardized=standardized)
        masked = regression_features(jnp.asarray(padded), targets, value, 1e-2, standardized=standardized,
                                     mask=jnp.asarray(mask))
        np.testing.assert_allclose(np.asarray(masked), np.asarray(exact), rtol=1e-4, atol=1e-5)


def test_config_needs_values_and_older_files_are_unchanged():
    check_value_option_config("regression_context")


def test_the_model_feeds_the_features_to_the_decoder(task_factory):
    """``svi.init`` runs the model with the features (the decoder's ``regression`` projection
    exists only when they are passed), the decoder's output moves with them, and a decoder
    without them is refused. The prediction path: the padded-prediction test below."""
    import numpyro

    cfg = ap.ActivaConfig.recommended("tiny", **TINY, regression_context=True, intervention_values=(5.0,))
    activa = ap.Activa(cfg)
    obs, targets, index, inter = task_factory(np.random.default_rng(0), 4, 6, 3)
    svi = activa.svi(numpyro.optim.Adam(1e-3))
    params = svi.get_params(svi.init(jax.random.PRNGKey(2), obs, targets, index, inter))
    assert "regression" in params["decoder$params"]
    z, h = jnp.zeros((4, 3)), jnp.zeros((4, 3, cfg.embed_dim))
    features = regression_features(obs, targets, jnp.full((4,), 5.0), cfg.std_floor, standardized=False)
    _, locs, _ = activa.apply(params, "decoder", z, h, features)
    _, moved, _ = activa.apply(params, "decoder", z, h, features.at[..., 1].add(3.0))
    assert not np.allclose(np.asarray(locs), np.asarray(moved))
    with pytest.raises(ValueError, match="needs the regression features"):
        activa.apply(params, "decoder", z, h)


def test_padded_prediction_equals_the_unpadded_one(rng):
    """Shape buckets (padded samples, masked) predict like the exact sample count."""
    activa = ap.Activa(ap.ActivaConfig.preset("tiny", **TINY, decoder_context=True, regression_context=True,
                                              standardize=True, intervention_values=(5.0,)))
    fitted = ap.FittedActiva(activa, activa.init_params(jax.random.PRNGKey(3)))
    obs = _data(rng, 37, 2)
    exact = fitted.predict(obs, target=1, seed=0, bucket=False)
    bucketed = fitted.predict(obs, target=1, seed=0)
    for name in ("weights", "locs", "covariances"):
        np.testing.assert_allclose(np.asarray(getattr(bucketed, name)), np.asarray(getattr(exact, name)),
                                   rtol=1e-4, atol=1e-4)
