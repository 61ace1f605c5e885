"""Tests for activa_ppl.mixture.GaussianMixture."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from activa_ppl.mixture import GaussianMixture, mixture_log_prob


def random_params(rng, batch, k, d):
    logits = rng.normal(size=batch + (k,))
    w = np.exp(logits - logsumexp(logits, axis=-1, keepdims=True))
    locs = rng.normal(scale=2.0, size=batch + (k, d))
    a = rng.normal(size=batch + (k, d, d))
    covs = a @ np.swapaxes(a, -1, -2) / d + 0.5 * np.eye(d)
    return w, locs, covs


def scipy_log_prob(w, locs, covs, x):
    """Reference log density of one (unbatched) mixture at points x (n, d)."""
    comps = [
        np.log(w[k]) + stats.multivariate_normal(locs[k], covs[k]).logpdf(x).reshape(len(x))
        for k in range(len(w))
    ]
    return logsumexp(np.stack(comps, axis=-1), axis=-1)


def scipy_batched(w, locs, covs, x):
    """x: (n, *batch, d) -> (n, *batch) reference log densities."""
    batch = w.shape[:-1]
    out = np.zeros(x.shape[:-1])
    for b in np.ndindex(*batch):
        out[(slice(None),) + b] = scipy_log_prob(w[b], locs[b], covs[b], x[(slice(None),) + b])
    return out


@pytest.mark.parametrize("d", [1, 2, 3, 4])
@pytest.mark.parametrize("k", [1, 3])
def test_log_prob_matches_scipy_float32(d, k):
    rng = np.random.default_rng(10 * d + k)
    batch = (2, 3)
    w, locs, covs = random_params(rng, batch, k, d)
    mix = GaussianMixture(jnp.asarray(w), jnp.asarray(locs), jnp.asarray(covs))
    x = rng.normal(scale=2.0, size=(5,) + batch + (d,))
    got = np.asarray(mix.log_prob(jnp.asarray(x, dtype=jnp.float32)))
    ref = scipy_batched(w, locs, covs, x.astype(np.float32).astype(np.float64))
    assert got.shape == (5,) + batch
    # 1e-5 relative; covariances were rounded to float32, hence the small atol.
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("d", [1, 3])
def test_log_prob_matches_scipy_x64(d):
    rng = np.random.default_rng(d)
    w, locs, covs = random_params(rng, (4,), 3, d)
    x = rng.normal(scale=2.0, size=(6, 4, d))
    with jax.enable_x64(True):
        mix = GaussianMixture(jnp.asarray(w), jnp.asarray(locs), jnp.asarray(covs))
        got = np.asarray(mix.log_prob(jnp.asarray(x)))
        assert got.dtype == np.float64
    np.testing.assert_allclose(got, scipy_batched(w, locs, covs, x), rtol=1e-10)


def test_log_prob_broadcasting():
    rng = np.random.default_rng(0)
    w, locs, covs = random_params(rng, (3,), 2, 2)
    mix = GaussianMixture(jnp.asarray(w), jnp.asarray(locs), jnp.asarray(covs))
    x = rng.normal(size=(7, 2)).astype(np.float32)
    # (7, 1, d) broadcasts against batch (3,) -> (7, 3)
    got = mix.log_prob(x[:, None, :])
    assert got.shape == (7, 3)
    for b in range(3):
        np.testing.assert_allclose(got[:, b], mix[b].log_prob(x), rtol=1e-6)
    # a single point broadcasts to the batch shape
    assert mix.log_prob(x[0]).shape == (3,)
    # unbatched mixture, (n, d) points
    assert mix[0].log_prob(x).shape == (7,)
    with pytest.raises(ValueError, match="shape"):
        mix.log_prob(np.zeros((7, 3)))


def test_mean_covariance_vs_monte_carlo():
    rng = np.random.default_rng(1)
    w, locs, covs = random_params(rng, (), 3, 3)
    mix = GaussianMixture(jnp.asarray(w), jnp.asarray(locs), jnp.asarray(covs))
    n = 200_000
    s = np.asarray(mix.sample(n, 0), dtype=np.float64)
    assert s.shape == (n, 3)
    mean_mc = s.mean(0)
    se_mean = s.std(0) / np.sqrt(n)
    assert np.all(np.abs(np.asarray(mix.mean) - mean_mc) < 5 * se_mean)
    c = s - mean_mc
    prod = c[:, :, None] * c[:, None, :]
    cov_mc = prod.mean(0)
    se_cov = prod.std(0) / np.sqrt(n)
    assert np.all(np.abs(np.asarray(mix.covariance) - cov_mc) < 5 * se_cov + 1e-6)
    # exact formula E[x x^T] - E[x] E[x]^T
    m = (w[:, None] * locs).sum(0)
    second = (w[:, None, None] * (covs + locs[:, :, None] * locs[:, None, :])).sum(0)
    np.testing.assert_allclose(mix.mean, m, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mix.covariance, second - np.outer(m, m), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mix.variance, np.diag(second - np.outer(m, m)), rtol=1e-4)


def test_marginal_matches_scipy():
    rng = np.random.default_rng(2)
    w, locs, covs = random_params(rng, (2,), 3, 4)
    names = ("a", "b", "c", "d")
    mix = GaussianMixture(jnp.asarray(w), jnp.asarray(locs), jnp.asarray(covs), names)
    idx = [2, 0]
    marg = mix.marginal(idx)
    assert marg.num_vars == 2 and marg.variable_names == ("c", "a")
    assert marg.batch_shape == (2,)
    x = rng.normal(size=(5, 2)).astype(np.float32)
    for b in range(2):
        ref = scipy_log_prob(
            w[b], locs[b][:, idx], covs[b][:, idx][:, :, idx], x.astype(np.float64)
        )
        np.testing.assert_allclose(marg[b].log_prob(x), ref, rtol=1e-5, atol=1e-5)
    by_name = mix.marginal(["c", "a"])
    np.testing.assert_array_equal(by_name.covariances, marg.covariances)
    mask = mix.marginal(np.array([True, False, True, False]))
    np.testing.assert_array_equal(mask.locs, mix.locs[..., [0, 2]])
    np.testing.assert_array_equal(mask.weights, mix.weights)
    with pytest.raises(ValueError):
        mix.marginal(["zzz"])
    with pytest.raises(ValueError):
        mix.marginal([7])
    with pytest.raises(ValueError):
        mix.marginal([])


def test_sample_shapes_and_determinism():
    rng = np.random.default_rng(3)
    w, locs, covs = random_params(rng, (2, 3), 2, 4)
    mix = GaussianMixture(jnp.asarray(w), jnp.asarray(locs), jnp.asarray(covs))
    s1 = mix.sample(11, 5)
    assert s1.shape == (11, 2, 3, 4)
    np.testing.assert_array_equal(s1, mix.sample(11, 5))
    np.testing.assert_array_equal(s1, mix.sample(11, jax.random.PRNGKey(5)))
    assert not np.allclose(s1, mix.sample(11, 6))
    assert mix.sample(3, jax.random.key(0)).shape == (3, 2, 3, 4)
    assert mix[0, 1].sample(4, 0).shape == (4, 4)


def test_single_component_sample_moments():
    mean = np.array([1.0, -2.0])
    cov = np.array([[2.0, 0.6], [0.6, 0.5]])
    g = GaussianMixture.gaussian(mean, cov)
    assert g.num_components == 1 and g.batch_shape == ()
    s = np.asarray(g.sample(100_000, 1), dtype=np.float64)
    np.testing.assert_allclose(s.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(s.T), cov, atol=0.03)
    np.testing.assert_allclose(
        g.log_prob(s[:5].astype(np.float32)),
        stats.multivariate_normal(mean, cov).logpdf(s[:5].astype(np.float32)),
        rtol=1e-5,
    )


def test_from_logits_and_scale_tril():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(3,))
    locs = rng.normal(size=(3, 2))
    tril = np.tril(rng.normal(size=(3, 2, 2))) + 2 * np.eye(2)
    a = GaussianMixture.from_logits(logits, locs, scale_tril=tril)
    b = GaussianMixture.from_logits(logits, locs, covariances=tril @ np.swapaxes(tril, -1, -2))
    np.testing.assert_allclose(a.covariances, b.covariances, rtol=1e-6)
    np.testing.assert_allclose(a.weights, np.exp(logits) / np.exp(logits).sum(), rtol=1e-6)
    # broadcasting: batched logits/locs, shared covariance
    c = GaussianMixture.from_logits(np.zeros((5, 3)), locs, np.eye(2))
    assert c.batch_shape == (5,) and c.covariances.shape == (5, 3, 2, 2)
    g = GaussianMixture.gaussian(np.zeros((4, 2)), np.eye(2))
    assert g.batch_shape == (4,) and g.num_vars == 2
    with pytest.raises(ValueError, match="exactly one"):
        GaussianMixture.from_logits(logits, locs)


def test_one_log_density_matches_numpyro():
    """mixture_log_prob (from Cholesky factors) is what GaussianMixture.log_prob computes and
    agrees with NumPyro's MixtureSameFamily of MultivariateNormals."""
    import numpyro.distributions as dist

    rng = np.random.default_rng(5)
    w, locs, covs = map(jnp.asarray, random_params(rng, (2,), 3, 3))
    x = jnp.asarray(rng.normal(size=(4, 2, 3)), jnp.float32)
    ours = mixture_log_prob(jnp.log(w), locs, jnp.linalg.cholesky(covs), x)
    np.testing.assert_allclose(ours, GaussianMixture(w, locs, covs).log_prob(x), rtol=1e-6, atol=1e-6)
    ref = dist.MixtureSameFamily(dist.Categorical(probs=w),
                                 dist.MultivariateNormal(locs, covariance_matrix=covs)).log_prob(x)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_to_numpyro_log_prob():
    rng = np.random.default_rng(6)
    mix = GaussianMixture(*map(jnp.asarray, random_params(rng, (3,), 4, 3)))
    x = jnp.asarray(rng.normal(size=(5, 3, 3)), dtype=jnp.float32)
    d = mix.to_numpyro()
    assert d.batch_shape == (3,) and d.event_shape == (3,)
    numpyro_lp = jax.jit(lambda m, x: m.to_numpyro().log_prob(x))(mix, x)
    np.testing.assert_allclose(numpyro_lp, mix.log_prob(x), rtol=1e-5, atol=1e-5)


def test_pytree_jit_vmap_and_indexing():
    rng = np.random.default_rng(7)
    w, locs, covs = random_params(rng, (3,), 2, 2)
    names = ("x", "y")

    @jax.jit
    def build(logits, locs, covs):
        return GaussianMixture.from_logits(logits, locs, covs, variable_names=names)

    mix = build(jnp.log(jnp.asarray(w)), jnp.asarray(locs), jnp.asarray(covs))
    assert isinstance(mix, GaussianMixture) and mix.variable_names == names
    np.testing.assert_allclose(mix.weights, w, rtol=1e-5)
    means = jax.vmap(lambda m: m.mean)(mix)
    np.testing.assert_allclose(means, mix.mean, rtol=1e-6)
    leaves, treedef = jax.tree_util.tree_flatten(mix)
    assert len(leaves) == 3
    assert jax.tree_util.tree_unflatten(treedef, leaves).variable_names == names
    one = mix[1]
    assert one.batch_shape == () and one.variable_names == names
    np.testing.assert_array_equal(one.locs, mix.locs[1])
    assert mix[1:].batch_shape == (2,)
    assert len(list(mix)) == 3
    with pytest.raises(IndexError):
        mix[3]
    with pytest.raises(IndexError):
        one[0]
    with pytest.raises(TypeError):
        iter(one).__next__()


def test_validation_errors():
    w = np.array([0.3, 0.7])
    locs = np.zeros((2, 2))
    covs = np.broadcast_to(np.eye(2), (2, 2, 2))
    GaussianMixture(w, locs, covs)  # valid
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixture(np.array([0.3, 0.6]), locs, covs)
    with pytest.raises(ValueError, match="non-finite"):
        GaussianMixture(w, np.array([[0.0, np.nan], [0.0, 0.0]]), covs)
    with pytest.raises(ValueError, match="non-finite"):
        GaussianMixture.from_logits(np.array([0.0, np.inf]), locs, covs)
    with pytest.raises(ValueError, match="trailing shape"):
        GaussianMixture(w, locs, np.broadcast_to(np.eye(3), (2, 3, 3)))
    with pytest.raises(ValueError, match="rank"):
        GaussianMixture(w, np.zeros((1, 2, 2)), covs)
    with pytest.raises(ValueError, match="shapes do not match"):
        GaussianMixture(w, np.zeros((3, 2)), covs)
    with pytest.raises(ValueError, match="locs must have shape"):
        GaussianMixture(w, np.zeros(2), covs)
    with pytest.raises(ValueError, match="variable_names"):
        GaussianMixture(w, locs, covs, ("a",))
    with pytest.raises(ValueError, match="non-negative"):
        GaussianMixture(np.array([-0.5, 1.5]), locs, covs)
    with pytest.raises(ValueError, match="broadcast"):
        GaussianMixture.from_logits(np.zeros((3, 2)), np.zeros((4, 2, 2)), np.eye(2))


@pytest.mark.parametrize("seed", ["a", 1.5, None, True, 2**64, np.zeros(3, np.uint32)],
                         ids=["str", "float", "None", "bool", "too-big", "3-word-key"])
@pytest.mark.parametrize("as_frame", [False, True])
def test_sample_seed_that_is_no_seed_is_a_value_error_naming_it(seed, as_frame):
    """Issue 18, item 10: ``sample(5, seed="a")`` raised a bare ``TypeError`` from JAX."""
    mix = GaussianMixture.gaussian(np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="^seed: "):
        mix.sample(5, seed=seed, as_frame=as_frame)
    # integers and both kinds of JAX key still sample
    for good in (3, np.int64(3), jax.random.PRNGKey(3), jax.random.key(3)):
        assert mix.sample(2, seed=good).shape == (2, 2)


@pytest.mark.parametrize("x", [np.array([["a", "b"]]), np.array(["1.0", "2.0"]), [[1.0, "x"]],
                               np.array([[1.0, 2.0]], dtype=object), np.array([[1 + 1j, 0j]])],
                         ids=["str", "numeric-text", "mixed-list", "object", "complex"])
@pytest.mark.parametrize("method", ["log_prob", "component_log_prob"])
def test_log_prob_of_non_numbers_is_a_value_error_naming_x(x, method):
    """Issue 18, item 10: ``log_prob(<str array>)`` raised a bare ``TypeError`` from JAX."""
    mix = GaussianMixture.gaussian(np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match=r"^x: expected numbers, got an array of dtype"):
        getattr(mix, method)(x)
    with pytest.raises(ValueError, match=r"^x: must have shape \(\.\.\., d\) with d=2"):
        getattr(mix, method)(np.ones(3))
    # numbers of any real kind still work, eagerly and under jit
    for good in ([[0, 1]], np.array([[True, False]]), np.ones((3, 2), np.float16)):
        assert np.isfinite(np.asarray(getattr(mix, method)(good))).all()
    assert jax.jit(getattr(mix, method))(jnp.ones((3, 2))).shape[0] == 3


@pytest.mark.parametrize("d", [1, 2, 3, 8, 11, 17])
def test_unrolled_cholesky_matches_lapack(d):
    """mixture_math.cholesky (elementwise ops, no LAPACK custom call: the evaluation hang of
    activa_ppl.dispatch) equals jnp.linalg.cholesky to float32 tolerance, symmetrizes its input
    and has a NaN lower triangle where the matrix is not positive definite, as jnp's."""
    from activa_ppl.mixture_math import cholesky

    rng = np.random.default_rng(d)
    a = rng.normal(size=(4, 3, d, d)).astype(np.float32)
    cov = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(d, dtype=np.float32)
    skewed = cov + np.triu(rng.normal(size=(d, d)), 1).astype(np.float32) * 1e-3
    for m in (cov, skewed):
        np.testing.assert_allclose(jax.jit(cholesky)(m), jnp.linalg.cholesky(m), rtol=2e-4,
                                   atol=2e-5 * float(np.abs(cov).max()))
    if d > 1:
        indefinite = np.eye(d, dtype=np.float32)
        indefinite[0, 1] = indefinite[1, 0] = 2.0
        ours, lapack = np.asarray(cholesky(indefinite)), np.asarray(jnp.linalg.cholesky(indefinite))
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(lapack))
        assert np.isnan(ours[np.tril_indices(d)]).all()


@pytest.mark.parametrize("d", [1, 3, 8, 17])
def test_spd_solve_matches_lapack(d):
    """mixture_math.spd_solve (unrolled, no LAPACK custom call) equals jnp.linalg.solve on
    symmetric positive definite systems, for vector and matrix right-hand sides, under vmap."""
    from activa_ppl.mixture_math import spd_solve

    rng = np.random.default_rng(d)
    a = rng.normal(size=(5, d, d)).astype(np.float32)
    spd = a @ np.swapaxes(a, -1, -2) + np.eye(d, dtype=np.float32)
    for b in (rng.normal(size=(5, d)), rng.normal(size=(5, d, 2))):
        b = b.astype(np.float32)
        np.testing.assert_allclose(jax.jit(jax.vmap(spd_solve))(spd, b), jax.vmap(jnp.linalg.solve)(spd, b),
                                   rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("d", [1, 2, 8, 17])
def test_solve_lower_matches_lapack(d):
    """mixture_math.solve_lower (forward substitution in elementwise ops: no batched LAPACK trsm,
    which deadlocked a training run) equals the LAPACK triangular solve, values and gradients."""
    from activa_ppl.mixture_math import solve_lower

    rng = np.random.default_rng(d)
    a = rng.normal(size=(4, 3, d, d)).astype(np.float32)
    low = np.tril(a) + (d + 1.0) * np.eye(d, dtype=np.float32)  # well conditioned
    b = rng.normal(size=(4, 3, d, 5)).astype(np.float32)

    def lapack(lo, rhs):
        return jax.lax.linalg.triangular_solve(lo, rhs, left_side=True, lower=True)

    np.testing.assert_allclose(jax.jit(solve_lower)(low, b), lapack(low, b), rtol=1e-5, atol=1e-6)
    grads = [jax.grad(lambda lo, rhs, f=f: jnp.sum(jnp.sin(f(lo, rhs))), argnums=(0, 1))(low, b)
             for f in (solve_lower, lapack)]
    for ours, ref in zip(*grads):
        np.testing.assert_allclose(np.tril(ours) if ours.ndim == 4 and ours.shape[-1] == d else ours,
                                   np.tril(ref) if ref.ndim == 4 and ref.shape[-1] == d else ref,
                                   rtol=1e-4, atol=1e-5)


def test_decoded_likelihood_matches_numpyro():
    """The training likelihood (model.decoded_distribution: mixture_math.cholesky and
    model._MultivariateNormal's elementwise solves) gives the density of NumPyro's
    MultivariateNormal parametrized by the covariances (LAPACK), to float tolerance."""
    import numpyro.distributions as dist

    from activa_ppl.model import decoded_distribution

    rng = np.random.default_rng(0)
    d, b = 8, 2
    a = rng.normal(size=(6, b, d, d)).astype(np.float32)
    cov = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(d, dtype=np.float32)
    locs = rng.normal(size=(6, b, d)).astype(np.float32)
    logits = rng.normal(size=(6, b)).astype(np.float32)
    x = rng.normal(size=(10, 6, d)).astype(np.float32)
    ref = dist.MixtureSameFamily(dist.Categorical(logits=logits),
                                 dist.MultivariateNormal(locs, covariance_matrix=cov)).log_prob(x)
    np.testing.assert_allclose(decoded_distribution(logits, locs, cov).log_prob(x), ref, rtol=1e-4, atol=1e-4)
