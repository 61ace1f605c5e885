"""Sample-axis shape buckets at prediction: masks in the networks, the standardization and
``predictive_arrays``; ``FittedActiva.predict`` / ``predict_batch`` pad N to a bucket, so that
datasets of different N in one bucket compile once and predict like the unpadded ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import activa_ppl as ap
from activa_ppl import model as model_module
from activa_ppl.fitted import SAMPLE_BUCKET_MIN, SAMPLE_BUCKETS_PER_OCTAVE, pad_samples, sample_bucket
from activa_ppl.interventions import intervention_representation
from activa_ppl.model import predictive_arrays
from activa_ppl.standardize import standardization_stats

N_ONE_BUCKET = (50, 56, 60)  # all in bucket 64


def _close(padded, exact, rtol=1e-5):
    """Equal to ``rtol`` relative to the array's scale (entries near 0 compare absolutely)."""
    padded, exact = np.asarray(padded), np.asarray(exact)
    assert padded.shape == exact.shape
    np.testing.assert_allclose(padded, exact, rtol=rtol, atol=rtol * max(1.0, np.abs(exact).max()))


def _same_mixture(a, b, rtol=1e-5):
    for name in ("weights", "locs", "covariances"):
        _close(getattr(a, name), getattr(b, name), rtol)


@pytest.fixture(scope="module")
def standardized_fitted():
    """A random-init tiny model with standardization (the masked statistics are used)."""
    activa = ap.Activa(ap.ActivaConfig.preset("tiny", standardize=True, intervention_values=(5.0,)))
    return ap.FittedActiva(activa, activa.init_params(jax.random.PRNGKey(3)))


@pytest.fixture(scope="module")
def gauss2():
    return ap.load_pretrained("gauss2")


def _data(rng, n, d=2):
    """Off-centre, unequal scales: padding or unmasked statistics would show."""
    return (rng.normal(size=(n, d)) * np.linspace(3.0, 0.5, d) + np.linspace(40.0, -2.0, d)).astype(np.float32)


# ---------------------------------------------------------------------------- buckets ----
def test_bucket_sizes():
    assert SAMPLE_BUCKET_MIN == 16 and SAMPLE_BUCKETS_PER_OCTAVE == 4
    assert [sample_bucket(n) for n in (2, 16, 17, 32, 33, 37, 52, 60, 64, 65, 80, 100, 129, 1000, 1024)] == \
        [16, 16, 32, 32, 48, 48, 64, 64, 64, 80, 80, 112, 160, 1024, 1024]
    assert [sample_bucket(n) for n in (1025, 2048, 2049, 5000)] == [1280, 2048, 2560, 5120]
    for n in range(65, 5000, 7):  # above 64 rows, padding adds at most a quarter of them
        assert n <= sample_bucket(n) <= 1.25 * n


def test_pad_samples_repeats_rows_and_masks_them(rng):
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    padded, mask = pad_samples(x, 12)
    assert padded.shape == (2, 12, 3) and mask.shape == (2, 12) and mask.dtype == bool
    np.testing.assert_array_equal(padded[:, :5], x)
    np.testing.assert_array_equal(padded[:, 5:10], x)  # cyclic copies: finite, in range
    assert mask[:, :5].all() and not mask[:, 5:].any()
    with pytest.raises(ValueError, match="smaller"):
        pad_samples(x, 4)


# ------------------------------------------------------------------- masked components ----
def test_masked_stats_ignore_padded_rows(rng):
    x = rng.normal(size=(3, 20, 4)).astype(np.float32) * 5 + 7
    x[1, :, 2] = 3.0  # constant: floored std
    garbage = np.concatenate([x, np.full((3, 12, 4), 1e6, np.float32)], axis=1)
    mask = np.arange(32) < 20
    mean, std = standardization_stats(garbage, 0.01, np.broadcast_to(mask, (3, 32)))
    ref_mean, ref_std = standardization_stats(x, 0.01)
    _close(mean, ref_mean)
    _close(std, ref_std)
    assert float(std[1, 2]) == pytest.approx(0.01)


def test_masked_embedding_ignores_padded_rows(tiny_activa, tiny_params, rng):
    """Padded rows with any finite values (here large garbage) change nothing."""
    q, n, d, size = 3, 7, 4, 16
    x = rng.normal(size=(q, n, d)).astype(np.float32)
    targets = np.eye(d, dtype=np.float32)[[0, 1, 3]]
    index = np.zeros(q, np.int32)
    cfg = tiny_activa.config
    padded = np.concatenate([x, rng.normal(size=(q, size - n, d)).astype(np.float32) * 100], axis=1)
    mask = np.broadcast_to(np.arange(size) < n, (q, size))
    rep = intervention_representation(targets, index, cfg.num_interventions, n)
    rep_pad = intervention_representation(targets, index, cfg.num_interventions, size)
    for name in ("obs_embedding", "int_embedding"):
        exact = tiny_activa.apply(tiny_params, name, x, rep)
        masked = tiny_activa.apply(tiny_params, name, padded, rep_pad, mask)
        _close(masked, exact)
        # mask=None is the original code path; an all-real mask computes the same embedding
        everything = tiny_activa.apply(tiny_params, name, x, rep, np.ones((q, n), bool))
        _close(everything, exact)


def test_masked_predictive_arrays_match_unpadded(standardized_fitted, rng):
    activa, params = standardized_fitted.activa, standardized_fitted.params
    q, n, d, size = 2, 11, 3, 32
    x = np.stack([_data(rng, n, d) for _ in range(q)])
    padded, mask = pad_samples(x, size)
    targets, index, key = np.eye(d, dtype=np.float32)[[0, 2]], np.zeros(q, np.int32), jax.random.PRNGKey(5)
    exact = predictive_arrays(activa, params, key, jnp.asarray(x), targets, index, 4)
    masked = predictive_arrays(activa, params, key, jnp.asarray(padded), targets, index, 4, mask)
    for a, b in zip(masked, exact):
        _close(a, b)


# ----------------------------------------------------------------------- FittedActiva ----
@pytest.mark.parametrize("which", ["standardized_random_init", "gauss2"])
def test_bucketed_predict_equals_exact_n(which, standardized_fitted, gauss2, rng):
    fitted = standardized_fitted if which != "gauss2" else gauss2
    for n in (5, 37, 64, 100):
        x = _data(rng, n)
        _same_mixture(fitted.predict(x, target=1, seed=2), fitted.predict(x, target=1, seed=2, bucket=False))
    xs = np.stack([_data(rng, 37) for _ in range(3)])
    targets = np.eye(2, dtype=np.float32)[[0, 1, 0]]
    _same_mixture(fitted.predict_batch(xs, targets, np.zeros(3, int), seed=4),
                  fitted.predict_batch(xs, targets, np.zeros(3, int), seed=4, bucket=False))


def test_bucket_false_is_the_exact_unpadded_computation(standardized_fitted, rng):
    x = _data(rng, 37)
    key = jax.random.PRNGKey(0)
    w, l, c = predictive_arrays(standardized_fitted.activa, standardized_fitted.params, key,
                                jnp.asarray(x[None]), np.eye(2, dtype=np.float32)[:1], np.zeros(1, np.int32),
                                standardized_fitted.config.num_predictive_latents)
    mix = standardized_fitted.predict(x, target=0, seed=0, bucket=False)
    np.testing.assert_allclose(mix.locs, l[0], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="bucket"):
        standardized_fitted.predict(x, target=0, bucket="yes")


def test_one_compile_per_bucket(standardized_fitted, rng, trace_counter):
    """N = 50, 56, 60 share bucket 64: predict traces (= compiles) once; without buckets, thrice.

    A num_latents used by no other test keeps the jit caches of other tests out of the count.
    """
    with trace_counter("_single_query_arrays") as traces:
        for n in N_ONE_BUCKET:
            standardized_fitted.predict(_data(rng, n), target=0, num_latents=7)
    assert traces.count == 1
    with trace_counter("_single_query_arrays") as traces:
        for n in N_ONE_BUCKET:
            standardized_fitted.predict(_data(rng, n), target=0, num_latents=9, bucket=False)
    assert traces.count == 3

    jitted = model_module._predictive_arrays_jit
    before = jitted._cache_size()
    for n in N_ONE_BUCKET:
        xs = np.stack([_data(rng, n) for _ in range(2)])
        standardized_fitted.predict_batch(xs, np.eye(2, dtype=np.float32), np.zeros(2, int), num_latents=7)
    assert jitted._cache_size() - before == 1
