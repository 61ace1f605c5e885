"""Pure array functions of Gaussian mixtures, beneath :class:`~activa_ppl.mixture.GaussianMixture`:
the library's one mixture log density (:func:`mixture_log_prob`, from Cholesky factors),
ancestral sampling (:func:`sample_arrays`), the law-of-total-covariance moments and a
differentiable energy score (:func:`mixture_energy_score`).

Array layout as in :mod:`activa_ppl.mixture`: ``weights (*batch, K)``, ``locs (*batch, K, d)``,
``covariances`` or ``scale_tril (*batch, K, d, d)``. All functions are jittable.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["UNROLLED_CHOLESKY_MAX_DIM", "cholesky", "solve_lower", "spd_solve", "component_log_prob_tril",
           "mixture_log_prob", "sample_arrays", "mixture_energy_score"]

_LOG_2PI = math.log(2.0 * math.pi)

#: Largest ``d`` for which :func:`cholesky` unrolls the factorization into elementwise JAX ops.
UNROLLED_CHOLESKY_MAX_DIM = 16


def cholesky(a):
    """Lower Cholesky factor of ``a (..., d, d)``, like ``jnp.linalg.cholesky`` (the input is
    symmetrized; a NaN lower triangle where ``a`` is not positive definite), written out entry by entry
    in elementwise JAX ops for ``d <= UNROLLED_CHOLESKY_MAX_DIM`` (``jnp.linalg.cholesky``
    above).

    Why not ``jnp.linalg.cholesky``: on XLA's CPU backend (jaxlib 0.10.2) a batched Cholesky is
    a LAPACK custom call that splits its batch over XLA's intra-op thread pool
    (``jax::ParallelBatchMap``) and blocks its pool thread until the parts are done; when every
    pool thread is inside such a call, nobody runs the parts and the program never finishes.
    That is the evaluation hang of :mod:`activa_ppl.dispatch` (native stack of a hung process:
    a ``tf_XLAEigen`` thread in ``lapack_spotrf_ffi`` → ``ParallelBatchMap`` →
    ``BlockingCounter::Wait``). The unrolled form has no custom call, and at the d ≤ 11 of this
    library it is a few hundred fused multiply-adds per matrix.
    """
    d = a.shape[-1]
    if d > UNROLLED_CHOLESKY_MAX_DIM:
        return jnp.linalg.cholesky(a)
    a = 0.5 * (a + jnp.swapaxes(a, -1, -2))
    zero = jnp.zeros(a.shape[:-2], a.dtype)
    L = {}
    for j in range(d):
        diag = a[..., j, j] - sum((L[j, k] * L[j, k] for k in range(j)), zero)
        L[j, j] = jnp.sqrt(diag)
        for i in range(j + 1, d):
            L[i, j] = (a[..., i, j] - sum((L[i, k] * L[j, k] for k in range(j)), zero)) / L[j, j]
    out = jnp.stack([jnp.stack([L.get((i, j), zero) for j in range(d)], axis=-1) for i in range(d)], axis=-2)
    positive = jnp.all(jnp.stack([L[j, j] > 0 for j in range(d)], axis=-1), axis=-1)
    nan_lower = jnp.where(jnp.tril(jnp.ones((d, d), bool)), jnp.nan, 0.0).astype(a.dtype)  # as jnp's
    return jnp.where(positive[..., None, None], out, nan_lower)


def solve_lower(scale_tril, b):
    """``L⁻¹ b`` for lower-triangular ``scale_tril (..., d, d)`` and ``b (..., d, m)``, like
    ``jax.lax.linalg.triangular_solve(L, b, left_side=True, lower=True)``, by forward
    substitution written out in elementwise ops for ``d <= UNROLLED_CHOLESKY_MAX_DIM`` (the
    LAPACK call above). Batched, that call is a LAPACK ``trsm`` that splits its batch over XLA's
    intra-op pool and can deadlock it, as :func:`cholesky` explains: it hung a training run
    (both pool threads in ``lapack_strsm_ffi`` → ``ParallelBatchMap``) in the training loss's
    Gaussian likelihood."""
    d = scale_tril.shape[-1]
    if d > UNROLLED_CHOLESKY_MAX_DIM:
        return jax.lax.linalg.triangular_solve(scale_tril, b, left_side=True, lower=True)
    z = []
    for i in range(d):
        acc = b[..., i, :]
        for k in range(i):
            acc = acc - scale_tril[..., i, k, None] * z[k]
        z.append(acc / scale_tril[..., i, i, None])
    return jnp.stack(z, axis=-2)


@jax.jit
def _value_stats(weights, locs, covariances):
    """[finite(weights), finite(locs), finite(covariances), min weight, max |sum w - 1|]."""
    dtype = jnp.float32 if weights.dtype != jnp.float64 else jnp.float64
    return jnp.stack(
        [
            jnp.all(jnp.isfinite(weights)).astype(dtype),
            jnp.all(jnp.isfinite(locs)).astype(dtype),
            jnp.all(jnp.isfinite(covariances)).astype(dtype),
            jnp.min(weights).astype(dtype),
            jnp.max(jnp.abs(jnp.sum(weights, axis=-1) - 1.0)).astype(dtype),
        ]
    )


@jax.jit
def _total_covariance(weights, locs, covariances):
    """``(*batch, d, d)`` law-of-total-covariance of a mixture."""
    mean = jnp.einsum("...k,...kd->...d", weights, locs)
    dev = locs - mean[..., None, :]
    within = jnp.einsum("...k,...kij->...ij", weights, covariances)
    between = jnp.einsum("...k,...ki,...kj->...ij", weights, dev, dev)
    return within + between


def component_log_prob_tril(locs, scale_tril, x):
    """``log N(x | locs_k, L_k L_kᵀ)`` per component, from Cholesky factors.

    ``locs (*batch, K, d)``, ``scale_tril (*batch, K, d, d)`` (lower triangular, positive
    diagonal), ``x (..., d)`` whose leading dimensions broadcast against ``batch`` (extra
    leading dimensions are sample dimensions) → ``(*broadcast(x.shape[:-1], batch), K)``.
    Pure and jittable.
    """
    d = locs.shape[-1]
    batch = locs.shape[:-2]
    k = locs.shape[-2]
    full = jnp.broadcast_shapes(x.shape[:-1], batch)
    nb = len(batch)
    sample_shape = full[: len(full) - nb]
    param_batch = full[len(full) - nb :]
    dtype = jnp.result_type(x.dtype, locs.dtype)
    locs = jnp.broadcast_to(locs, param_batch + (k, d)).astype(dtype)
    chol = jnp.broadcast_to(scale_tril, param_batch + (k, d, d)).astype(dtype)
    # Move the sample dims last: (*sample, *param_batch, d) -> (*param_batch, d, S), so
    # one triangular solve per component handles all samples.
    xb = jnp.broadcast_to(x.astype(dtype), full + (d,)).reshape((-1,) + param_batch + (d,))
    xb = jnp.moveaxis(xb, 0, -1)
    diff = xb[..., None, :, :] - locs[..., :, :, None]  # (*param_batch, K, d, S)
    z = solve_lower(chol, diff)
    maha = jnp.sum(z * z, axis=-2)  # (*param_batch, K, S)
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    logp = -0.5 * (d * _LOG_2PI + maha) - half_logdet[..., None]
    logp = jnp.moveaxis(logp, -1, 0)  # (S, *param_batch, K)
    return logp.reshape(sample_shape + param_batch + (k,))


def mixture_log_prob(log_weights, locs, scale_tril, x):
    """The library's one Gaussian-mixture log density, ``log Σ_k w_k N(x | μ_k, L_k L_kᵀ)``.

    ``log_weights (*batch, K)``, ``locs (*batch, K, d)``, ``scale_tril (*batch, K, d, d)``,
    ``x (..., d)`` broadcasting against ``batch`` → ``(*broadcast(x.shape[:-1], batch))``.
    Used by :meth:`GaussianMixture.log_prob`, the metrics and ACTIVA's validation NLL (MACE-TNP's
    training step keeps an equal inverse-factor form, see
    :func:`activa_ppl.baselines.mace_tnp.objective`). Pure and jittable.
    """
    comp = component_log_prob_tril(locs, scale_tril, x)
    return jax.nn.logsumexp(comp + log_weights.astype(comp.dtype), axis=-1)


def spd_solve(a, b):
    """``a⁻¹ b`` for symmetric positive definite ``a (d, d)`` and ``b (d,)`` or ``(d, m)``, by
    :func:`cholesky` and substitution written out in elementwise ops for
    ``d <= UNROLLED_CHOLESKY_MAX_DIM`` (``jnp.linalg.solve`` above): no LAPACK custom call, whose
    batched form can deadlock XLA's CPU thread pool (:func:`cholesky`). Vectorize with
    ``jax.vmap``."""
    d = a.shape[-1]
    if d > UNROLLED_CHOLESKY_MAX_DIM:
        return jnp.linalg.solve(a, b)
    low = cholesky(a)
    y = solve_lower(low, b.reshape(d, -1)).reshape(b.shape)  # L y = b
    x = [None] * d
    for i in reversed(range(d)):  # Lᵀ x = y
        x[i] = (y[i] - sum((low[k, i] * x[k] for k in range(i + 1, d)), jnp.zeros_like(y[i]))) / low[i, i]
    return jnp.stack(x, axis=0)


@jax.jit
def _component_log_prob(locs, covariances, x):
    """``log N(x | locs_k, covariances_k)``; x ``(..., d)`` broadcasting vs batch."""
    return component_log_prob_tril(locs, cholesky(covariances), x)


@jax.jit
def _log_prob(weights, locs, covariances, x):
    """Mixture log density from weights and covariances (:func:`mixture_log_prob`)."""
    return mixture_log_prob(jnp.log(weights), locs, cholesky(covariances), x)


def sample_arrays(weights, locs, covariances, key, n: int):
    """``(n, *batch, d)`` ancestral samples of a mixture: component index, then Gaussian draw.

    ``weights (*batch, K)``, ``locs (*batch, K, d)``, ``covariances (*batch, K, d, d)``; what
    :meth:`GaussianMixture.sample` draws with the same key. Pure and jittable (``n`` static).
    """
    # A single normal draw (n, *batch, d + 1): the first coordinate picks the component
    # by inverse-CDF on the cumulative weights, the rest are the Gaussian noise.
    batch, d = weights.shape[:-1], locs.shape[-1]
    k = weights.shape[-1]
    shape = (n,) + batch + (d + 1,)
    # drawn flat: compiles much faster on CPU than a multi-dimensional threefry draw
    z = jax.random.normal(key, (math.prod(shape),), dtype=locs.dtype).reshape(shape)
    u = jax.scipy.special.ndtr(z[..., 0])  # (n, *batch) uniform on (0, 1)
    cdf = jnp.cumsum(weights, axis=-1)
    cdf = cdf / cdf[..., -1:]
    comp = jnp.sum(cdf[None] < u[..., None], axis=-1)
    comp = jnp.minimum(comp, k - 1)
    chol = cholesky(covariances)  # (*batch, K, d, d)
    idx = comp[..., None, None]  # (n, *batch, 1, 1)
    loc = jnp.take_along_axis(locs[None], idx, axis=-2)[..., 0, :]  # (n, *batch, d)
    L = jnp.take_along_axis(chol[None], idx[..., None], axis=-3)[..., 0, :, :]
    eps = z[..., 1:]
    return loc + jnp.einsum("...ij,...j->...i", L, eps)


_sample = jax.jit(sample_arrays, static_argnums=(4,))


def mixture_energy_score(log_weights, locs, scale_tril, y, key, l1_weight: float = 0.0):
    """Unbiased, reparameterised estimate of the energy score of a mixture against samples.

    ES(P, y₁..y_N) = (1/N) Σ_n E_P ‖X − y_n‖ − ½ E_P ‖X − X′‖ for P = Σ_k w_k N(μ_k, L_k L_kᵀ)
    (Gneiting & Raftery 2007; a strictly proper scoring rule, lower is better: its expectation
    over y ~ Q is minimised by P = Q, and its excess over that minimum is half the energy
    distance between P and Q). Every component is sampled (two independent draws each,
    ``x_k = μ_k + L_k ε``), and the expectations are the weighted sums over components, so the
    estimate is differentiable in the weights as well as in the components:
    E_P‖X − y‖ ≈ Σ_k w_k ½(‖x_k − y‖ + ‖x′_k − y‖) and E_P‖X − X′‖ ≈ Σ_{k,l} w_k w_l ‖x_k − x′_l‖
    (x and x′ independent, so every pair, k = l included, is unbiased).

    Args:
        log_weights: ``(*batch, K)`` normalised log weights.
        locs: ``(*batch, K, d)``; scale_tril ``(*batch, K, d, d)``: the components.
        y: ``(*batch, N, d)`` samples.
        key: PRNG key of the 2·K draws.
        l1_weight: ``μ ≥ 0``: add ``μ`` times the same estimate with the L1 norm, from the same
            draws. ES with ‖·‖₁ is the sum over coordinates of the 1-D marginals' energy scores
            (each the CRPS of that marginal): proper, not strictly proper for the joint, and
            much more sensitive to one coordinate's mean than the Euclidean ES in d dimensions.

    Returns:
        ``(*batch,)``: ES, plus ``μ`` · ES₁ when ``l1_weight > 0``.
    """
    eps = jax.random.normal(key, (2, *locs.shape), locs.dtype)
    x = locs + jnp.einsum("...kab,r...kb->r...ka", scale_tril, eps)  # (2, *batch, K, d)
    w = jnp.exp(log_weights)  # (*batch, K)

    def norm(a):  # ‖a‖ over the last axis, with a finite gradient at 0
        return jnp.sqrt(jnp.sum(a * a, axis=-1) + 1e-12)

    def score(dist):  # the estimate for one norm
        to_y = dist(x[..., :, None, :] - y[None, ..., None, :, :]).mean(axis=(0, -1))  # (*batch, K)
        between = dist(x[0][..., :, None, :] - x[1][..., None, :, :])  # (*batch, K, K)
        return jnp.sum(w * to_y, -1) - 0.5 * jnp.einsum("...k,...kl,...l->...", w, between, w)

    if not l1_weight:
        return score(norm)
    # |a| with a finite gradient at 0, as ``norm``
    return score(norm) + l1_weight * score(lambda a: jnp.sum(jnp.sqrt(a * a + 1e-12), axis=-1))
