"""The distributions of ACTIVA's generative story, and the prior-predictive mixture's training terms.

* p_η(z | D_obs, do): :func:`prior_distribution`, a C-component Gaussian mixture with a fixed
  per-coordinate variance;
* p_γ(V | z): :func:`decoded_distribution`, a B-component full-covariance Gaussian mixture whose
  densities are computed in elementwise ops (no LAPACK call in the training loss);
* p_θ(V | D_obs, do) = E_{p_η}[p_γ(V | z)], the prior-predictive mixture that prediction returns,
  estimated for training with one latent draw from each prior component
  (:func:`stratified_predictive`), and scored against a task's samples by its log-likelihood
  (:func:`log_predictive`, ``ActivaConfig.predictive_weight``) or its energy score
  (:func:`predictive_energy_score`, ``ActivaConfig.energy_weight``).

:mod:`activa_ppl.model` composes them into the NumPyro model/guide pair.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from activa_ppl.mixture_math import cholesky, mixture_energy_score, solve_lower

__all__ = ["prior_distribution", "decoded_distribution", "pin_targets", "stratified_predictive",
           "log_predictive", "predictive_energy_score"]


def prior_distribution(logits, locs, variance: float) -> dist.Distribution:
    """p_η(z | D_obs, do): ``logits (..., C)``, ``locs (..., C, d)`` → batch ``(...)``, event ``(d,)``."""
    components = dist.Normal(locs, math.sqrt(variance)).to_event(1)
    return dist.MixtureSameFamily(dist.Categorical(logits=logits), components)


class _MultivariateNormal(dist.MultivariateNormal):
    """NumPyro's ``MultivariateNormal`` whose ``log_prob`` solves with the scale factor by
    :func:`activa_ppl.mixture_math.solve_lower` (elementwise forward substitution for d ≤ 16)
    instead of a batched LAPACK ``trsm``, which can deadlock XLA's CPU thread pool (it hung a
    training run; :func:`activa_ppl.mixture_math.cholesky` explains how). The same density,
    to float tolerance."""

    def log_prob(self, value):
        """``log N(value | loc, scale_tril scale_trilᵀ)``, batch ``broadcast(value, batch)``."""
        d = self.event_shape[-1]
        diff = jnp.asarray(value) - self.loc  # (..., d)
        z = solve_lower(self.scale_tril, diff[..., None])[..., 0]
        half_logdet = jnp.sum(jnp.log(jnp.diagonal(self.scale_tril, axis1=-2, axis2=-1)), axis=-1)
        return -0.5 * (d * math.log(2 * math.pi) + jnp.sum(z * z, axis=-1)) - half_logdet


def decoded_distribution(logits, locs, covariances) -> dist.Distribution:
    """p_γ(V | z): ``logits (..., B)``, ``locs (..., B, d)``, ``covariances (..., B, d, d)``.

    The components' Cholesky factors and log densities are written out in elementwise ops for
    d ≤ 16 (:func:`activa_ppl.mixture_math.cholesky`, :class:`_MultivariateNormal`): no LAPACK
    custom call in the training loss."""
    components = _MultivariateNormal(locs, scale_tril=cholesky(covariances))
    return dist.MixtureSameFamily(dist.Categorical(logits=logits), components)


def pin_targets(locs, covariances, targets, values, variances):
    """Decoded components with the intervened coordinates set exactly (``ActivaConfig.exact_targets``).

    In every component the mean of each target V_t becomes ``values`` and its variance
    ``variances``; row and column t of the covariance are rescaled by ``sqrt(variance / Σ_tt)``
    (Σ′ = D Σ D with D diagonal, so Σ′ stays positive definite and V_t keeps the decoder's
    correlations with the other variables). The other coordinates are unchanged.

    Args:
        locs: ``(..., T, K, d)``; covariances ``(..., T, K, d, d)``: decoded components of T
            tasks (leading latent-draw axes broadcast).
        targets: ``(T, d)`` 0/1 intervention target mask.
        values: ``(T,)`` the intervened value of each task, in the units of ``locs``.
        variances: ``(T, d)`` the intervened coordinates' variance, in the same units (read at
            the targets only; must be positive).

    Returns:
        ``(locs, covariances)`` of the same shapes.
    """
    pinned = targets[:, None, :] > 0  # (T, 1, d)
    locs = jnp.where(pinned, values[:, None, None], locs)
    diagonal = jnp.diagonal(covariances, axis1=-2, axis2=-1)  # (..., T, K, d)
    scale = jnp.where(pinned, jnp.sqrt(variances[:, None, :] / diagonal), 1.0)  # (..., T, K, d)
    return locs, covariances * scale[..., :, None] * scale[..., None, :]


def stratified_predictive(decode, prior_logits, prior_locs, variance: float, key):
    """The prior-predictive mixture with one latent draw from each prior component.

    p̂(V | D_obs, do) = Σ_c π_c p_γ(V | z_c), z_c ~ N(μ_c, variance·I): an unbiased estimate of
    Σ_c π_c E[p_γ(V | z) | component c] = p_θ(V | D_obs, do), stratified over the prior's C
    components, so that it is differentiable in the prior's weights π and locations μ (the
    draws are reparameterised). Its log is, in expectation, a lower bound on log p_θ (Jensen),
    tight as the decoded densities vary less between draws of one component.

    Args:
        decode: ``z (C, ..., d) → (logits (C, ..., K), locs (C, ..., K, d), covariances
            (C, ..., K, d, d))``, the decoder in data units.
        prior_logits: ``(..., C)``; prior_locs ``(..., C, d)``: the prior p_η(z | D_obs, do).
        variance: the prior components' variance per coordinate.
        key: PRNG key of the C draws.

    Returns:
        ``(logits (..., 1, C·K), locs (..., 1, C·K, d), covariances (..., 1, C·K, d, d))``,
        arguments of :func:`decoded_distribution`; the singleton axis broadcasts over samples.
    """
    eps = jax.random.normal(key, prior_locs.shape, prior_locs.dtype)
    z = jnp.moveaxis(prior_locs + math.sqrt(variance) * eps, -2, 0)  # (C, ..., d)
    logits, locs, covariances = decode(z)  # (C, ..., K[, d[, d]])
    log_weights = (jnp.moveaxis(jax.nn.log_softmax(prior_logits, axis=-1), -1, 0)[..., None]
                   + jax.nn.log_softmax(logits, axis=-1))  # (C, ..., K)

    def flat(a, tail):  # (C, ..., K, *tail) → (..., 1, C·K, *tail)
        a = jnp.moveaxis(a, 0, -1 - len(tail) - 1)  # (..., C, K, *tail)
        return a.reshape(*a.shape[:-len(tail) - 2], 1, -1, *tail)

    d = locs.shape[-1]
    return flat(log_weights, ()), flat(locs, (d,)), flat(covariances, (d, d))


def log_predictive(decode, prior_logits, prior_locs, variance: float, interventional, key):
    """Σ_n log p̂(v_n | D_obs, do) of every task, p̂ from :func:`stratified_predictive`.

    Args:
        decode, prior_logits ``(T, C)``, prior_locs ``(T, C, d)``, variance, key: as for
            :func:`stratified_predictive`.
        interventional: ``(T, N, d)`` samples, in data units.

    Returns:
        ``(T,)``: the hybrid objective's term before its weight ``w``.
    """
    predictive = decoded_distribution(*stratified_predictive(decode, prior_logits, prior_locs, variance, key))
    return predictive.log_prob(interventional).sum(-1)  # batch (T, 1) at (T, N, d) → (T, N) → (T,)


def predictive_energy_score(decode, prior_logits, prior_locs, variance: float, interventional, key, stats=None,
                            l1_weight: float = 0.0, scale: str = "variable"):
    """N · ES(p̂, D_int) of every task: the energy score of the stratified prior-predictive mixture
    p̂ (:func:`stratified_predictive`) against the task's N samples
    (:func:`~activa_ppl.mixture_math.mixture_energy_score`), in z-scores when ``stats = (mean,
    std) (T, d)`` is given (``scale="variable"``), or in data units divided by one scale per
    task, ``(Σ_j std_j² / d)^½`` (``scale="task"``; see ``ActivaConfig.energy_scale``).

    Args:
        decode, prior_logits ``(T, C)``, prior_locs ``(T, C, d)``, variance: as for
            :func:`stratified_predictive`.
        interventional: ``(T, N, d)`` samples, in data units.
        key: PRNG key of the latent and the component draws.
        l1_weight: ``μ / λ``: add that multiple of the L1-norm energy score (the sum of the
            1-D marginals' scores; :func:`~activa_ppl.mixture_math.mixture_energy_score`).
        scale: with ``stats``, ``"variable"`` (each variable by its own std) or ``"task"``
            (every variable by the task's root-mean-square std).

    Returns:
        ``(T,)``: the energy-score term before its weight ``λ`` (lower is better).
    """
    key_z, key_x = jax.random.split(key)
    log_weights, locs, covariances = (a[:, 0] for a in stratified_predictive(
        decode, prior_logits, prior_locs, variance, key_z))  # (T, J), (T, J, d), (T, J, d, d)
    if stats is not None:  # to z-scores: x ↦ (x − mean) / std, Σ ↦ D⁻¹ Σ D⁻¹
        mean, std = stats
        if scale == "task":  # one scale per task: the variables keep their data-unit proportions
            std = jnp.broadcast_to(jnp.sqrt(jnp.mean(std ** 2, axis=-1, keepdims=True)), std.shape)
        elif scale != "variable":
            raise ValueError(f"scale must be 'variable' or 'task', got {scale!r}")
        locs = (locs - mean[:, None]) / std[:, None]
        covariances = covariances / (std[:, None, :, None] * std[:, None, None, :])
        interventional = (interventional - mean[:, None]) / std[:, None]
    score = mixture_energy_score(log_weights, locs, cholesky(covariances), interventional, key_x, l1_weight)
    return interventional.shape[-2] * score
