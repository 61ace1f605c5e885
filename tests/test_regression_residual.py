"""``ActivaConfig(regression_residual=True)``: every decoded component's mean gets a gated copy
of the observational regression's conditional mean (:mod:`activa_ppl.regression`). At
initialisation the gate is 1, so the decoded means are the network's plus exactly the
regression's; the gate must be learnable per component and variable, the option must reach the
decoder in training and prediction, and models without it must stay as they were."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import activa_ppl as ap
from activa_ppl.regression import regression_features
from tests.helpers import check_value_option_config

TINY = dict(num_predictive_latents=3, num_validation_latents=2)


def _config(**kw):
    return ap.ActivaConfig.recommended("tiny", **TINY, regression_residual=True, intervention_values=(5.0,), **kw)


def test_config_needs_values_and_older_files_are_unchanged():
    check_value_option_config("regression_residual")


def test_initial_means_add_the_regression_exactly(task_factory):
    """Gate 1 at initialisation: the locs move by exactly the feature's change in every
    component (and the covariances and weights, which do not see the means, do not move);
    once the gate's bias is 0 the locs ignore it. The features reach the decoder in
    ``svi.init`` (the ``regression_gate`` layer exists) and a call without them is refused."""
    import numpyro

    cfg = _config()
    activa = ap.Activa(cfg)
    obs, targets, index, inter = task_factory(np.random.default_rng(0), 4, 6, 3)
    svi = activa.svi(numpyro.optim.Adam(1e-3))
    params = svi.get_params(svi.init(jax.random.PRNGKey(2), obs, targets, index, inter))
    assert "regression_gate" in params["decoder$params"]
    assert "regression" not in params["decoder$params"]  # the features are not token inputs
    z, h = jax.random.normal(jax.random.PRNGKey(5), (4, 3)), jnp.zeros((4, 3, cfg.embed_dim))
    features = regression_features(obs, targets, jnp.full((4,), 5.0), cfg.std_floor, standardized=False)
    shift = jnp.asarray([0.5, -2.0, 3.0])
    logits, locs, cov = activa.apply(params, "decoder", z, h, features)
    logits2, moved, cov2 = activa.apply(params, "decoder", z, h, features.at[..., 1].add(shift))
    np.testing.assert_allclose(np.asarray(moved - locs), np.broadcast_to(np.asarray(shift), locs.shape),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(cov2), np.asarray(cov))
    np.testing.assert_array_equal(np.asarray(logits2), np.asarray(logits))
    closed = jax.tree_util.tree_map(lambda x: x, params)
    gate = dict(closed["decoder$params"]["regression_gate"])
    gate["bias"] = jnp.zeros_like(gate["bias"])
    closed["decoder$params"] = {**closed["decoder$params"], "regression_gate": gate}
    _, off, _ = activa.apply(closed, "decoder", z, h, features)
    _, off_moved, _ = activa.apply(closed, "decoder", z, h, features.at[..., 1].add(shift))
    np.testing.assert_allclose(np.asarray(off_moved), np.asarray(off), atol=1e-6)
    with pytest.raises(ValueError, match="needs the regression features"):
        activa.apply(params, "decoder", z, h)


def test_the_gate_is_trained(task_factory):
    """The gate's kernel starts at 0 and gets a nonzero gradient from the ELBO."""
    import numpyro

    activa = ap.Activa(_config(standardize=True))
    obs, targets, index, inter = task_factory(np.random.default_rng(1), 4, 6, 3)
    svi = activa.svi(numpyro.optim.Adam(1e-2))
    state = svi.init(jax.random.PRNGKey(0), obs, targets, index, inter)
    before = svi.get_params(state)["decoder$params"]["regression_gate"]
    assert not np.any(np.asarray(before["kernel"]))
    state, _ = svi.update(state, obs, targets, index, inter)
    after = svi.get_params(state)["decoder$params"]["regression_gate"]
    assert np.any(np.asarray(after["kernel"]) != 0.0)


def test_prediction_uses_the_regression(rng):
    """A fresh standardized model's predicted means move with the data's regression: two
    datasets with the same marginals but opposite correlation predict opposite shifts."""
    activa = ap.Activa(_config(standardize=True, decoder_context=True))
    fitted = ap.FittedActiva(activa, activa.init_params(jax.random.PRNGKey(3)))
    x = rng.normal(size=(400, 1)).astype(np.float32)
    noise = 0.1 * rng.normal(size=(400, 1)).astype(np.float32)
    up, down = np.concatenate([x, x + noise], 1), np.concatenate([x, -x + noise], 1)
    mean_up = np.asarray(fitted.predict(up, target=0, seed=0).mean)[..., 1].item()
    mean_down = np.asarray(fitted.predict(down, target=0, seed=0).mean)[..., 1].item()
    assert mean_up - mean_down > 5.0  # v = 5: the regression says +5 and −5
