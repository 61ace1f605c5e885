"""Tests for the ambiguous-direction simulator and its Proposition 2 target."""

import numpy as np
import pytest

from activa_ppl.simulate.ambiguous import (ambiguous_dataset, cause_mode_weight,
                                           direction_posterior, equivalence_class_target)


def test_shapes_determinism_and_graph():
    a = ambiguous_dataset(num_scms=50, num_samples=20, seed=4)
    b = ambiguous_dataset(num_scms=50, num_samples=20, seed=4)
    c = ambiguous_dataset(num_scms=50, num_samples=20, seed=5)
    assert a.observational.shape == (50, 20, 2) and a.interventional.shape == (50, 2, 20, 2)
    np.testing.assert_array_equal(a.interventional, b.interventional)
    assert not np.array_equal(a.observational, c.observational)
    forward = a.extras["direction"].astype(bool)
    np.testing.assert_array_equal(a.adjacency[:, 0, 1], forward)
    np.testing.assert_array_equal(a.adjacency[:, 1, 0], ~forward)
    assert a.metadata["generator"] == "ambiguous"


def test_population_covariance_and_interventions_match_samples():
    data = ambiguous_dataset(num_scms=4, num_samples=100_000, seed=2)
    for s in range(4):
        cov = data.extras["covariance"][s]
        np.testing.assert_allclose(np.cov(data.observational[s].T), cov, rtol=0.03, atol=0.02)
        cause = 0 if data.extras["direction"][s] else 1
        effect = 1 - cause
        w = data.extras["weight"][s]
        do_cause, do_effect = data.interventional[s, cause], data.interventional[s, effect]
        assert do_cause[:, effect].mean() == pytest.approx(5.0 * w, abs=0.03)
        assert do_cause[:, effect].var() == pytest.approx(w**2 * 0.01 + data.extras["noise_std"][s, effect] ** 2,
                                                          rel=0.03)
        # do(effect) leaves the cause at its observational law
        assert do_effect[:, cause].mean() == pytest.approx(0.0, abs=0.03)
        assert do_effect[:, cause].var() == pytest.approx(cov[cause, cause], rel=0.03)
        for i in range(2):
            assert data.interventional[s, i, :, i].std() == pytest.approx(0.1, rel=0.03)


def test_direction_posterior_is_calibrated():
    """Among SCMs whose covariance gives p_tr(X0 -> X1 | Σ) ≈ p, a fraction p is X0 -> X1:
    a check of the prior density and the Jacobian of the reparameterization."""
    data = ambiguous_dataset(num_scms=60_000, num_samples=1, seed=1)
    p, forward = data.extras["p_forward"], data.extras["direction"]
    assert 0.3 < ((p > 0.1) & (p < 0.9)).mean()  # a good share of covariances is ambiguous
    edges = np.quantile(p, np.linspace(0, 1, 11))
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (p >= lo) & (p <= hi)
        n = inside.sum()
        expected = p[inside].mean()
        se = np.sqrt(max(expected * (1 - expected), 1e-3) / n)
        assert abs(forward[inside].mean() - expected) < 4 * se + 1e-3, (lo, hi)


def test_posterior_swaps_with_the_variables():
    data = ambiguous_dataset(num_scms=100, num_samples=1, seed=0)
    cov = data.extras["covariance"]
    swapped = cov[:, ::-1, ::-1]
    np.testing.assert_allclose(direction_posterior(swapped), 1 - direction_posterior(cov), atol=1e-12)
    with pytest.raises(ValueError):
        direction_posterior(np.eye(3))


def test_target_mixture_components_and_symmetry():
    cov = np.array([[1.0, 0.8], [0.8, 2.0]])
    mix = equivalence_class_target(cov, target=0)
    p = direction_posterior(cov)
    np.testing.assert_allclose(np.asarray(mix.weights), [p, 1 - p], rtol=1e-6)
    # cause component: X1 = 0.8 X0 + noise with variance 2 - 0.64
    np.testing.assert_allclose(np.asarray(mix.locs[0]), [5.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(mix.covariances[0]),
                               [[0.01, 0.008], [0.008, 0.64 * 0.01 + 1.36]], rtol=1e-5)
    # effect component: X1 keeps N(0, 2), independent of X0
    np.testing.assert_allclose(np.asarray(mix.locs[1]), [5.0, 0.0])
    np.testing.assert_allclose(np.asarray(mix.covariances[1]), [[0.01, 0.0], [0.0, 2.0]])
    # do(X1) on the swapped covariance is the mirror image
    mirror = equivalence_class_target(cov[::-1, ::-1], target=1)
    np.testing.assert_allclose(np.asarray(mirror.weights), np.asarray(mix.weights), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(mirror.locs), np.asarray(mix.locs)[:, ::-1], rtol=1e-6)
    with pytest.raises(ValueError):
        equivalence_class_target(cov, target=2)


def test_bad_arguments():
    with pytest.raises(ValueError):
        ambiguous_dataset(num_scms=0)
    with pytest.raises(ValueError):
        ambiguous_dataset(num_scms=10, log_sd=0)
    with pytest.raises(ValueError):
        ambiguous_dataset(num_scms=10, split_fractions=(0.5, 0.5, 0.5))


def test_cause_mode_weight_recovers_the_target_weights():
    data = ambiguous_dataset(num_scms=200, num_samples=1, seed=7)
    cov = data.extras["covariance"]
    for target in (0, 1):
        mix = equivalence_class_target(cov, target=target)
        samples = np.asarray(mix.sample(4000, seed=target))[..., 1 - target]  # (n, S)
        estimate = cause_mode_weight(samples, cov, target=target)
        truth = np.asarray(mix.weights[:, 0])
        separated = np.abs(np.asarray(mix.locs[:, 0, 1 - target])) > 1.0
        # EM with fixed components: error of order sqrt(p(1-p)/n) where the modes separate
        assert np.abs(estimate - truth)[separated].max() < 0.05
        assert np.abs(estimate - truth).mean() < 0.03
    with pytest.raises(ValueError):
        cause_mode_weight(np.zeros((3, 1)), cov[:1], target=3)
