"""Analytic baselines of paper Section 6.2.

Both baselines predict the post-interventional distribution of
``do(V_t = v)`` from observational samples as a single Gaussian
(:class:`~activa_ppl.mixture.GaussianMixture` with ``K = 1``) over **all**
``d`` variables:

* :func:`gaussian_conditional`: fit a Gaussian to the observational data and
  *condition* on ``V_t = v`` (correlational, ignores causal direction);
* :func:`linear_causal`: fit a linear SCM by OLS on the **true** parents and
  apply graph surgery (Pearl's ``do``), propagating mean and covariance
  exactly through the fitted linear system.

Neither baseline predicts the intervened variables themselves: their
coordinates are set to ``v`` with a tiny variance ``target_variance``
(default ``1e-6``) and zero cross-covariance with every other variable, which
keeps the density proper; the paper reports "—" for their *All* column.

Everything is written in ``jax.numpy`` (jittable, vmappable); the ``*_batch``
wrappers ``vmap`` over tasks. Adjacency convention: ``adjacency[i, j] != 0``
iff there is an edge ``i -> j``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from activa_ppl.mixture import GaussianMixture
from activa_ppl.mixture_math import spd_solve

__all__ = [
    "DEFAULT_TARGET_VARIANCE",
    "intervention_vector",
    "gaussian_conditional",
    "linear_causal",
    "gaussian_conditional_batch",
    "linear_causal_batch",
]

#: Variance given to the intervened coordinates (they are not predicted).
DEFAULT_TARGET_VARIANCE = 1e-6


def intervention_vector(value: Any, target_mask: Any, d: int, dtype: Any = None) -> jax.Array:
    """Expand an intervention value to a ``(d,)`` vector.

    Args:
      value: scalar (all targets set to it), ``(d,)`` array (entry ``i`` used
        if ``i`` is a target), or ``(k,)`` array with one value per target in
        increasing index order (needs a concrete ``target_mask``).
      target_mask: ``(d,)`` boolean mask of the targets.
      d: number of variables.
      dtype: output dtype (default: float dtype of ``value``).

    Returns:
      ``(d,)`` array; entries at non-targets are meaningless (callers mask).
    """
    value = jnp.asarray(value, dtype=dtype)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(jnp.result_type(float))
    if value.ndim == 0:
        return jnp.full((d,), value)
    if value.shape == (d,):
        return value
    if value.ndim == 1:
        try:
            targets = np.flatnonzero(np.asarray(target_mask).astype(bool))
        except jax.errors.ConcretizationTypeError:
            targets = None
        except jax.errors.TracerArrayConversionError:
            targets = None
        if targets is None:
            raise ValueError(
                "a per-target value array of shape (k,) needs a concrete target_mask; pass a "
                f"scalar or a ({d},) array inside jit/vmap"
            )
        if value.shape[0] != targets.size:
            raise ValueError(
                f"value has {value.shape[0]} entries but there are {targets.size} targets "
                f"(and d={d})"
            )
        return jnp.zeros((d,), value.dtype).at[targets].set(value)
    raise ValueError(
        f"value must be a scalar, a ({d},) array or one value per target; got {value.shape}"
    )


def _check_inputs(obs: Any, target_mask: Any) -> tuple[jax.Array, jax.Array]:
    obs = jnp.asarray(obs)
    if not jnp.issubdtype(obs.dtype, jnp.floating):
        obs = obs.astype(jnp.result_type(float))
    if obs.ndim != 2:
        raise ValueError(f"obs must have shape (N, d); got {obs.shape}")
    if obs.shape[0] < 2:
        raise ValueError("need at least two observational samples")
    mask = jnp.asarray(target_mask)
    if mask.shape != (obs.shape[1],):
        raise ValueError(f"target_mask must have shape ({obs.shape[1]},); got {mask.shape}")
    return obs, mask.astype(bool)


def _fix_targets(mean, cov, mask, values, target_variance):
    """Set target coordinates to ``values`` with tiny variance, zero cross-covariance."""
    m = mask.astype(cov.dtype)
    keep = 1.0 - m
    mean = jnp.where(mask, values, mean)
    cov = 0.5 * (cov + cov.T)
    cov = cov * keep[:, None] * keep[None, :] + jnp.diag(target_variance * m)
    return mean, cov


@partial(jax.jit, static_argnames=("ddof", "target_variance"))
def _gaussian_conditional_core(obs, mask, values, ddof, target_variance):
    n, d = obs.shape
    mu = jnp.mean(obs, axis=0)
    xc = obs - mu
    sigma = xc.T @ xc / (n - ddof)
    m = mask.astype(obs.dtype)
    # Sigma_tt padded with the identity on non-targets: G^{-1} acts as Sigma_tt^{-1}
    # on the target block and as the identity elsewhere.
    g = sigma * m[:, None] * m[None, :] + jnp.diag(1.0 - m)
    delta = m * (values - mu)
    mean = mu + sigma @ spd_solve(g, delta)  # no LAPACK custom call: mixture_math.cholesky
    cov = sigma - (sigma * m[None, :]) @ spd_solve(g, m[:, None] * sigma)
    return _fix_targets(mean, cov, mask, values, target_variance)


def gaussian_conditional(
    obs: Any,
    target_mask: Any,
    value: Any,
    *,
    ddof: int = 1,
    target_variance: float = DEFAULT_TARGET_VARIANCE,
    variable_names: Sequence[str] | None = None,
) -> GaussianMixture:
    """Gaussian Conditional baseline: ``p(V \\ V_t | V_t = v)`` of a fitted Gaussian.

    Fits ``mu = mean(obs)`` and ``Sigma = (X - mu)^T (X - mu) / (N - ddof)``
    (unbiased by default; ``ddof=0`` gives the MLE) and returns the Gaussian
    conditional of the non-targets ``r`` given ``V_t = v``:
    ``mu_r + S_rt S_tt^{-1} (v - mu_t)``,
    ``S_rr - S_rt S_tt^{-1} S_tr``. This is correlational: non-descendants
    of ``V_t`` are shifted whenever they are correlated with it.

    Args:
      obs: ``(N, d)`` observational samples.
      target_mask: ``(d,)`` boolean mask of the intervened variables.
      value: intervention value(s), see :func:`intervention_vector`.
      ddof: delta degrees of freedom of the covariance estimate.
      target_variance: variance of the (unpredicted) target coordinates, which
        are set to ``value`` with zero cross-covariance.
      variable_names: optional names stored on the result.

    Returns:
      Unbatched :class:`GaussianMixture` (``K = 1``) over all ``d`` variables.
    """
    obs, mask = _check_inputs(obs, target_mask)
    values = intervention_vector(value, target_mask, obs.shape[1], obs.dtype)
    mean, cov = _gaussian_conditional_core(obs, mask, values, ddof, float(target_variance))
    return GaussianMixture.gaussian(mean, cov, variable_names)


@partial(jax.jit, static_argnames=("target_variance", "min_residual_variance"))
def _linear_causal_core(obs, parents, mask, values, target_variance, min_residual_variance):
    n, d = obs.shape
    mu = jnp.mean(obs, axis=0)
    xc = obs - mu
    gram = xc.T @ xc

    def ols(p, j):
        # Centred normal equations restricted to the parents of j; non-parents get
        # an identity row so their coefficient solves to exactly zero.
        g = gram * p[:, None] * p[None, :] + jnp.diag(1.0 - p)
        return spd_solve(g, p * gram[:, j])

    b = jax.vmap(ols)(parents.T, jnp.arange(d))  # b[j, i]: weight of parent i in V_j
    intercept = mu - b @ mu
    resid = xc - xc @ b.T
    dof = n - jnp.sum(parents, axis=0) - 1.0
    rss = jnp.sum(resid**2, axis=0)
    noise_var = jnp.maximum(rss / jnp.maximum(dof, 1.0), min_residual_variance)
    # Graph surgery: targets lose their mechanism and become the constant v.
    keep = 1.0 - mask.astype(obs.dtype)
    b = b * keep[:, None]
    intercept = jnp.where(mask, values, intercept)
    noise_var = noise_var * keep
    # (I - B)^-1 = I + B + ... + B^(d-1): B is the weighted adjacency of a DAG, so B^d = 0
    # (matrix products, no LAPACK custom call: mixture_math.cholesky)
    a = power = jnp.eye(d, dtype=obs.dtype)
    for _ in range(d - 1):
        power = power @ b
        a = a + power
    mean = a @ intercept
    cov = (a * noise_var[None, :]) @ a.T
    return _fix_targets(mean, cov, mask, values, target_variance)


def linear_causal(
    obs: Any,
    adjacency: Any,
    target_mask: Any,
    value: Any,
    *,
    target_variance: float = DEFAULT_TARGET_VARIANCE,
    min_residual_variance: float = 1e-6,
    variable_names: Sequence[str] | None = None,
) -> GaussianMixture:
    """Linear Causal baseline: OLS linear SCM on the true graph plus graph surgery.

    For each variable ``V_j`` fits ``V_j = c_j + sum_{i in pa(j)} B_ji V_i + e_j``
    by ordinary least squares with intercept on its *true* parents, and
    estimates the noise variance by the unbiased ``RSS / (N - |pa(j)| - 1)``
    (floored at ``min_residual_variance``). The intervention ``do(V_t = v)``
    replaces the rows of ``V_t`` by the constant ``v``; with ``A = (I - B)^{-1}``
    the predicted Gaussian has mean ``A c`` and covariance ``A D A^T``
    (``D = diag(noise variances)``, zero for targets), i.e. the moments are
    propagated exactly through ``x = c + B x + e``.

    Args:
      obs: ``(N, d)`` observational samples.
      adjacency: ``(d, d)`` true DAG, ``adjacency[i, j] != 0`` iff ``i -> j``.
      target_mask: ``(d,)`` boolean mask of the intervened variables.
      value: intervention value(s), see :func:`intervention_vector`.
      target_variance: variance of the target coordinates, which are set to
        ``value`` with zero cross-covariance (they are not predicted).
      min_residual_variance: floor on fitted noise variances (keeps the
        covariance positive-definite for deterministic mechanisms).
      variable_names: optional names stored on the result.

    Returns:
      Unbatched :class:`GaussianMixture` (``K = 1``) over all ``d`` variables.
    """
    obs, mask = _check_inputs(obs, target_mask)
    d = obs.shape[1]
    adj = jnp.asarray(adjacency)
    if adj.shape != (d, d):
        raise ValueError(f"adjacency must have shape ({d}, {d}); got {adj.shape}")
    parents = (adj != 0).astype(obs.dtype)
    try:  # a concrete graph is checked (inside jit it cannot be)
        concrete = np.asarray(parents)
    except jax.errors.TracerArrayConversionError:
        concrete = None
    if concrete is not None and np.any(np.linalg.matrix_power(concrete, d)):
        raise ValueError("adjacency has a directed cycle; Linear Causal needs a DAG")
    values = intervention_vector(value, target_mask, d, obs.dtype)
    mean, cov = _linear_causal_core(
        obs, parents, mask, values, float(target_variance), float(min_residual_variance)
    )
    return GaussianMixture.gaussian(mean, cov, variable_names)


def _stack(mixtures: list[GaussianMixture]) -> GaussianMixture:
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *mixtures)


def _batch_values(values: Any, t: int) -> Any:
    values = jnp.asarray(values)
    if values.ndim == 0:
        values = jnp.full((t,), values)
    if values.shape[0] != t:
        raise ValueError(f"values must have leading size T={t}; got shape {values.shape}")
    return values


def gaussian_conditional_batch(
    obs: Any, target_masks: Any, values: Any, **kwargs: Any
) -> GaussianMixture:
    """:func:`gaussian_conditional` for ``T`` tasks.

    Args:
      obs: ``(T, N, d)`` observational samples (``jax.vmap``-ed), or a
        sequence of ``T`` arrays ``(N_t, d)`` with varying ``N_t`` (looped).
      target_masks: ``(T, d)`` boolean target masks.
      values: scalar, ``(T,)`` per-task values or ``(T, d)`` per-variable values.
      **kwargs: keyword options of :func:`gaussian_conditional`.

    Returns:
      :class:`GaussianMixture` with ``batch_shape == (T,)``.
    """
    target_masks = jnp.asarray(target_masks)
    values = _batch_values(values, target_masks.shape[0])
    if isinstance(obs, (list, tuple)):
        return _stack(
            [gaussian_conditional(o, m, v, **kwargs) for o, m, v in zip(obs, target_masks, values)]
        )
    return jax.vmap(lambda o, m, v: gaussian_conditional(o, m, v, **kwargs))(
        jnp.asarray(obs), target_masks, values
    )


def linear_causal_batch(
    obs: Any, adjacency: Any, target_masks: Any, values: Any, **kwargs: Any
) -> GaussianMixture:
    """:func:`linear_causal` for ``T`` tasks.

    Args:
      obs: ``(T, N, d)`` observational samples (``jax.vmap``-ed), or a
        sequence of ``T`` arrays ``(N_t, d)`` with varying ``N_t`` (looped).
      adjacency: ``(T, d, d)`` per-task graphs or one shared ``(d, d)`` graph.
      target_masks: ``(T, d)`` boolean target masks.
      values: scalar, ``(T,)`` per-task values or ``(T, d)`` per-variable values.
      **kwargs: keyword options of :func:`linear_causal`.

    Returns:
      :class:`GaussianMixture` with ``batch_shape == (T,)``.
    """
    target_masks = jnp.asarray(target_masks)
    t = target_masks.shape[0]
    values = _batch_values(values, t)
    adjacency = jnp.asarray(adjacency)
    if adjacency.ndim == 2:
        adjacency = jnp.broadcast_to(adjacency, (t,) + adjacency.shape)
    if isinstance(obs, (list, tuple)):
        return _stack(
            [
                linear_causal(o, a, m, v, **kwargs)
                for o, a, m, v in zip(obs, adjacency, target_masks, values)
            ]
        )
    return jax.vmap(lambda o, a, m, v: linear_causal(o, a, m, v, **kwargs))(
        jnp.asarray(obs), adjacency, target_masks, values
    )
