"""Tests of activa_ppl.networks (and predictive_arrays): shapes, the permutation symmetries of
paper Section 5, numerically safe covariances, and variable-count independence of the weights.

Every network output is computed by one compiled function (``_forward``) per input shape, so the
module compiles only a handful of times.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from activa_ppl.interventions import intervention_representation
from activa_ppl.mixture import GaussianMixture
from activa_ppl.model import predictive_arrays

NUM_LATENTS = 3  # S in predictive_arrays
# (Q, N, d) shapes; d = 1, 2, 5 as asked, plus d = 11 for the "trained on d = 2" check.
SHAPES = [(2, 3, 1), (3, 5, 2), (3, 4, 5)]
EQ_SHAPE = (3, 4, 5)  # the shape of the symmetry and extreme-input tests (compiled once)


def _forward(activa, params, key, obs, targets, index, inter, z, num_latents):
    """Every network output for queries ``obs (Q, N, d)`` / ``inter (Q, N, d)`` / ``z (Q, d)``."""
    cfg = activa.config
    rep_obs = intervention_representation(targets, index, cfg.num_interventions, obs.shape[-2])
    rep_int = intervention_representation(targets, index, cfg.num_interventions, inter.shape[-2])
    h_obs = activa.apply(params, "obs_embedding", obs, rep_obs)
    h_int = activa.apply(params, "int_embedding", inter, rep_int)
    prior_logits, prior_locs = activa.apply(params, "prior", h_obs)
    post_mean = activa.apply(params, "posterior", h_obs, h_int)
    dec_logits, dec_locs, dec_covs = activa.apply(params, "decoder", z)
    mu_logits, mu_locs, mu_covs = activa.apply(params, "decoder", post_mean)
    weights, locs, covs = predictive_arrays(activa, params, key, obs, targets, index, num_latents)
    return {
        "h_obs": h_obs, "h_int": h_int, "prior_logits": prior_logits, "prior_locs": prior_locs,
        "post_mean": post_mean, "dec_logits": dec_logits, "dec_locs": dec_locs,
        "dec_covs": dec_covs, "mu_logits": mu_logits, "mu_locs": mu_locs, "mu_covs": mu_covs,
        "pred_weights": weights, "pred_locs": locs, "pred_covs": covs,
    }


forward = jax.jit(_forward, static_argnums=(0, 8))


@pytest.fixture(scope="module")
def params(tiny_params):
    """The initial tiny parameters plus small noise, so that no bias or LayerNorm weight is at a
    symmetric initial value (zeros/ones) that could hide an order-dependent bug."""
    leaves, treedef = jax.tree_util.tree_flatten(tiny_params)
    keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
    noisy = [x + 0.05 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, noisy)


def _inputs(rng, q, n, d):
    obs = rng.normal(size=(q, n, d)).astype(np.float32)
    inter = (rng.normal(size=(q, n + 1, d)) + 2.0).astype(np.float32)
    targets = np.zeros((q, d), np.float32)
    targets[np.arange(q), np.arange(q) % d] = 1.0
    if d > 2:
        targets[0, d - 1] = 1.0  # one query with two targets
    index = np.zeros(q, np.int32)
    z = rng.normal(size=(q, d)).astype(np.float32)
    return obs, targets, index, inter, z


def _run(activa, params, inputs, seed=3):
    obs, targets, index, inter, z = inputs
    out = forward(activa, params, jax.random.PRNGKey(seed), jnp.asarray(obs), jnp.asarray(targets), jnp.asarray(index),
                  jnp.asarray(inter), jnp.asarray(z), NUM_LATENTS)
    return {k: np.asarray(v) for k, v in out.items()}


def _close(actual, expected, rtol=2e-5, atol_rel=2e-5):
    """Float32 agreement up to reordering of floating-point sums."""
    scale = max(float(np.max(np.abs(expected))), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol_rel * scale)


def _check_spd(covs, what):
    covs = np.asarray(covs, np.float64)
    assert np.all(np.isfinite(covs)), f"{what}: non-finite covariance entries"
    asym = np.max(np.abs(covs - np.swapaxes(covs, -1, -2)))
    assert asym <= 1e-6 * max(1.0, np.max(np.abs(covs))), f"{what}: not symmetric ({asym})"
    sym = 0.5 * (covs + np.swapaxes(covs, -1, -2))
    min_eig = np.linalg.eigvalsh(sym).min()
    assert min_eig > 0, f"{what}: not positive definite (min eigenvalue {min_eig})"
    # The float32 Cholesky used by the likelihood must succeed too.
    chol = np.asarray(jnp.linalg.cholesky(jnp.asarray(covs, jnp.float32)))
    assert np.all(np.isfinite(chol)), f"{what}: float32 Cholesky failed"


# --------------------------------------------------------------------------------- shapes ----
@pytest.mark.parametrize("q,n,d", SHAPES)
def test_output_shapes(tiny_activa, params, rng, q, n, d):
    cfg = tiny_activa.config
    e, c, b = cfg.embed_dim, cfg.prior_components, cfg.decoder_components
    out = _run(tiny_activa, params, _inputs(rng, q, n, d))
    expected = {
        "h_obs": (q, d, e), "h_int": (q, d, e),                      # DatasetEmbedding
        "prior_logits": (q, c), "prior_locs": (q, c, d),             # PriorHead
        "post_mean": (q, d),                                         # PosteriorHead
        "dec_logits": (q, b), "dec_locs": (q, b, d), "dec_covs": (q, b, d, d),  # Decoder
        "pred_weights": (q, NUM_LATENTS * b), "pred_locs": (q, NUM_LATENTS * b, d),
        "pred_covs": (q, NUM_LATENTS * b, d, d),                     # predictive_arrays
    }
    for name, shape in expected.items():
        assert out[name].shape == shape, name
        assert np.all(np.isfinite(out[name])), name
    np.testing.assert_allclose(out["pred_weights"].sum(-1), 1.0, atol=1e-5)
    assert np.all(out["pred_weights"] >= 0)
    _check_spd(out["dec_covs"], "decoder")
    _check_spd(out["pred_covs"], "predictive")


def test_decoder_leading_batch_dims(tiny_activa, params, rng):
    """The decoder maps any leading batch shape ``(..., d)``, e.g. (S, Q, d) latent draws."""
    cfg = tiny_activa.config
    z = jnp.asarray(rng.normal(size=(4, 2, 3)), jnp.float32)
    logits, locs, covs = tiny_activa.apply(params, "decoder", z)
    b = cfg.decoder_components
    assert logits.shape == (4, 2, b) and locs.shape == (4, 2, b, 3) and covs.shape == (4, 2, b, 3, 3)


# ------------------------------------------------------------------------------- symmetry ----
@pytest.fixture(scope="module")
def symmetry_case(tiny_activa, params):
    rng = np.random.default_rng(11)
    inputs = _inputs(rng, *EQ_SHAPE)
    d = EQ_SHAPE[2]
    perm = np.array([3, 0, 4, 1, 2])  # no fixed point
    assert not np.any(perm == np.arange(d))
    return inputs, perm, _run(tiny_activa, params, inputs)


def test_variable_permutation_equivariance(tiny_activa, params, symmetry_case):
    (obs, targets, index, inter, z), perm, ref = symmetry_case
    out = _run(tiny_activa, params, (obs[..., perm], targets[:, perm], index, inter[..., perm],
                                     z[:, perm]))
    # Equivariant: per-variable outputs permute with the variables.
    _close(out["h_obs"], ref["h_obs"][:, perm, :])
    _close(out["h_int"], ref["h_int"][:, perm, :])
    _close(out["prior_locs"], ref["prior_locs"][..., perm])
    _close(out["post_mean"], ref["post_mean"][:, perm])
    _close(out["dec_locs"], ref["dec_locs"][..., perm])
    _close(out["dec_covs"], ref["dec_covs"][..., perm, :][..., :, perm])
    _close(out["mu_locs"], ref["mu_locs"][..., perm])
    _close(out["mu_covs"], ref["mu_covs"][..., perm, :][..., :, perm])
    # Invariant: mixture weights of the prior and of the decoder.
    _close(out["prior_logits"], ref["prior_logits"])
    _close(out["dec_logits"], ref["dec_logits"])
    _close(out["mu_logits"], ref["mu_logits"])


def test_permutation_is_not_trivially_satisfied(symmetry_case):
    """Guard: the reference outputs do differ between variables, so the test above has teeth."""
    _, perm, ref = symmetry_case
    assert np.max(np.abs(ref["post_mean"][:, perm] - ref["post_mean"])) > 1e-3
    assert np.max(np.abs(ref["h_obs"][:, perm] - ref["h_obs"])) > 1e-3


def test_sample_permutation_invariance(tiny_activa, params, symmetry_case):
    (obs, targets, index, inter, z), _, ref = symmetry_case
    rng = np.random.default_rng(5)
    s_obs, s_int = rng.permutation(obs.shape[1]), rng.permutation(inter.shape[1])
    out = _run(tiny_activa, params, (obs[:, s_obs], targets, index, inter[:, s_int], z))
    for name in ("h_obs", "h_int", "prior_logits", "prior_locs", "post_mean", "mu_logits",
                 "mu_locs", "mu_covs"):
        _close(out[name], ref[name])
    # Same key and (up to float error) the same prior: the predictive mixture is unchanged.
    _close(out["pred_weights"], ref["pred_weights"], rtol=1e-4, atol_rel=1e-4)
    _close(out["pred_locs"], ref["pred_locs"], rtol=1e-4, atol_rel=1e-4)
    _close(out["pred_covs"], ref["pred_covs"], rtol=1e-4, atol_rel=1e-4)


def test_queries_are_independent(tiny_activa, params, symmetry_case):
    """Changing one query of the batch leaves the embeddings of the others untouched."""
    (obs, targets, index, inter, z), _, ref = symmetry_case
    obs2 = obs.copy()
    obs2[0] = obs2[0] * 3.0 + 1.0
    out = _run(tiny_activa, params, (obs2, targets, index, inter, z))
    _close(out["h_obs"][1:], ref["h_obs"][1:])
    assert np.max(np.abs(out["h_obs"][0] - ref["h_obs"][0])) > 1e-3


# ------------------------------------------------------------------ extreme inputs / SPD ----
@pytest.mark.parametrize("case", ["large", "large_negative", "equal_columns", "constant",
                                  "equal_columns_large"])
def test_covariances_spd_for_extreme_inputs(tiny_activa, params, symmetry_case, case):
    (obs, targets, index, inter, z), _, _ = symmetry_case
    if case == "large":
        obs, inter, z = obs * 1e4, inter * 1e4, np.full_like(z, 1e4)
    elif case == "large_negative":
        obs, inter, z = -1e4 + obs, -1e4 + inter, np.full_like(z, -1e4)
    elif case == "equal_columns":
        obs = np.repeat(obs[..., :1], obs.shape[-1], axis=-1)
        inter = np.repeat(inter[..., :1], inter.shape[-1], axis=-1)
        z = np.repeat(z[:, :1], z.shape[-1], axis=-1)
    elif case == "constant":
        obs, inter, z = np.ones_like(obs), np.ones_like(inter), np.zeros_like(z)
    else:
        obs = 1e4 * np.repeat(obs[..., :1], obs.shape[-1], axis=-1)
        inter = 1e4 * np.repeat(inter[..., :1], inter.shape[-1], axis=-1)
        z = np.full_like(z, 1e4)
    out = _run(tiny_activa, params, (obs, targets, index, inter, z))
    for name in ("dec_covs", "mu_covs", "pred_covs"):
        _check_spd(out[name], f"{case}/{name}")
    for name, value in out.items():
        assert np.all(np.isfinite(value)), f"{case}/{name}"
    np.testing.assert_allclose(out["pred_weights"].sum(-1), 1.0, atol=1e-5)
    mix = GaussianMixture(out["pred_weights"], out["pred_locs"], out["pred_covs"])
    assert np.all(np.isfinite(np.asarray(mix.log_prob(jnp.asarray(obs[:, 0])))))


# -------------------------------------------------------------- variable-count independence ----
def test_params_from_d2_run_at_d11(tiny_activa, tiny_params, rng, params_factory):
    """Parameters initialised on a d = 2 problem contain nothing of size d and run at d = 11."""
    # Parameter shapes do not depend on d at all.
    other = params_factory(tiny_activa, jax.random.PRNGKey(0), num_vars=11, abstract=True)
    assert jax.tree_util.tree_structure(other) == jax.tree_util.tree_structure(tiny_params)
    assert all(a.shape == b.shape for a, b in zip(jax.tree_util.tree_leaves(other),
                                                   jax.tree_util.tree_leaves(tiny_params)))
    q, n, d = 2, 3, 11
    out = _run(tiny_activa, tiny_params, _inputs(rng, q, n, d))
    b = tiny_activa.config.decoder_components
    assert out["pred_locs"].shape == (q, NUM_LATENTS * b, d)
    assert out["pred_covs"].shape == (q, NUM_LATENTS * b, d, d)
    for value in out.values():
        assert np.all(np.isfinite(value))
    np.testing.assert_allclose(out["pred_weights"].sum(-1), 1.0, atol=1e-5)
    _check_spd(out["pred_covs"], "d=11")
