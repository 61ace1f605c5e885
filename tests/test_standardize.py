"""ActivaConfig(standardize=True): z-scored inputs, mixtures in data units, unit invariance."""

import jax
import numpy as np
import pytest

import activa_ppl as ap
from activa_ppl.model import Activa, predictive_arrays
from activa_ppl.standardize import (nominal_intervention_values, standardization_stats,
                                    to_data_units)


def _config(values=(5.0,)):
    return ap.ActivaConfig.preset("tiny", standardize=True, intervention_values=values)


def _query(rng, d=3, n=40, scale=1.0, shift=0.0):
    obs = (rng.normal(size=(2, n, d)) * [1.0, 3.0, 0.5][:d]).astype(np.float32)
    targets = np.eye(d, dtype=np.float32)[[0, 2]]
    return scale * obs + shift, targets, np.zeros(2, np.int32)


def test_config_needs_one_value_per_index_and_round_trips():
    with pytest.raises(ValueError, match="intervention_values"):
        ap.ActivaConfig(standardize=True)
    with pytest.raises(ValueError, match="intervention_values"):
        ap.ActivaConfig(standardize=True, intervention_values=(1.0, 2.0))
    cfg = _config()
    again = ap.ActivaConfig.from_dict(cfg.to_dict())  # JSON turns the tuple into a list
    assert again == cfg and hash(again) == hash(cfg) and again.intervention_values == (5.0,)


def test_stats_and_inverse_map(rng):
    x = rng.normal(size=(4, 30, 3)).astype(np.float32) * 7 + 2
    x[1, :, 2] = 3.0  # a constant variable: std floored
    mean, std = standardization_stats(x, 0.01)
    np.testing.assert_allclose(mean, x.mean(1), rtol=1e-5)
    assert float(std[1, 2]) == pytest.approx(0.01)
    locs, covs = to_data_units(np.zeros((4, 2, 3)), np.broadcast_to(np.eye(3), (4, 2, 3, 3)), mean, std)
    np.testing.assert_allclose(locs[:, 0], mean, rtol=1e-5)
    np.testing.assert_allclose(np.diagonal(covs[:, 1], axis1=-2, axis2=-1), std ** 2, rtol=1e-5)


def test_predictions_follow_a_change_of_units(rng):
    """Data in other units (x ↦ a x + b, intervention value too) give the same mixture, mapped."""
    a, b = 40.0, -7.0
    base = Activa(_config((5.0,)))
    params = base.init_params(jax.random.PRNGKey(0), num_vars=3)
    obs, targets, index = _query(rng)
    w1, l1, c1 = predictive_arrays(base, params, jax.random.PRNGKey(1), obs, targets, index, 4)
    moved = Activa(_config((5.0 * a + b,)))  # same parameters, the value in the new units
    w2, l2, c2 = predictive_arrays(moved, params, jax.random.PRNGKey(1), a * obs + b, targets, index, 4)
    np.testing.assert_allclose(w2, w1, rtol=1e-5)
    np.testing.assert_allclose(l2, a * np.asarray(l1) + b, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(c2, a * a * np.asarray(c1), rtol=1e-4)


def test_standardized_model_trains_and_predicts_in_data_units(tmp_path):
    data = ap.simulate.linear_dataset(num_scms=40, num_vars=3, noise="gauss", num_samples=20, seed=0)
    assert nominal_intervention_values(data) == (5.0,)
    model = Activa(_config(nominal_intervention_values(data)))
    fitted = ap.train(model, data, num_steps=20, eval_every=10, batch_size=8, progress=False)
    assert np.isfinite(fitted.info["best_valid_nll"])
    fitted.save(tmp_path / "m")
    again = ap.load(tmp_path / "m")
    assert again.activa.config == model.config
    obs = data.tasks("test").observational[0]
    mix = again.predict(obs, target=1, seed=0)
    assert np.isfinite(np.asarray(mix.locs)).all()
