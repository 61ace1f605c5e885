"""What a linear regression on the observational data predicts under an intervention.

For a task with observational data ``D_obs`` and the query do(V_t = v), the Gaussian fit of
``D_obs`` gives, for every variable j, the conditional

    V_j | V_t = v  ~  N(μ_j + σ_j ρ_jt (v - μ_t) / σ_t,  σ_j² (1 - ρ_jt²))

(μ, σ: the observational means and standard deviations; ρ_jt: the correlation of V_j and V_t).
This is the Gaussian Conditional baseline's prediction, computed from nothing but ``D_obs`` and
the query (the intervened value comes from the intervention index, as everywhere in the model).
It is right for the descendants of a linear SCM when the target has no confounded parents and
wrong for its ancestors (which do not move); which one applies is what the data may leave
ambiguous.

With ``ActivaConfig(regression_context=True)`` the decoder's input tokens receive these
statistics, one row per variable (:func:`regression_features`), so the decoder does not have to
learn to compute a regression from the pooled embedding; the latent z and h′ decide how to use
them. With ``ActivaConfig(regression_residual=True)`` the conditional mean (the second feature)
is added, through a learned gate, to every decoded component's mean. Neither is in the
paper (extensions of the decoder context, see docs/concepts.md).
"""

from __future__ import annotations

import jax.numpy as jnp

from activa_ppl.standardize import standardization_stats

__all__ = ["NUM_REGRESSION_FEATURES", "regression_features"]

#: Features per variable: correlation with the target, conditional mean, log conditional sd.
NUM_REGRESSION_FEATURES = 3


def regression_features(observational, targets, values, std_floor: float, *, standardized: bool,
                        mask=None):
    """The observational Gaussian's conditional of every variable given the intervened value.

    Args:
        observational: ``(..., N, d)`` observational samples, in data units.
        targets: ``(..., d)`` 0/1 target mask; the features are those of the single target
            (with several targets, of the standardized sum of their columns).
        values: ``(...,)`` the intervened value v in data units.
        std_floor: the smallest standard deviation used (as in
            :func:`activa_ppl.standardize.standardization_stats`); the conditional standard
            deviation is floored at ``std_floor`` in the same units as well.
        standardized: give the mean and sd in z-scores of the observational data (the units
            of a model with ``ActivaConfig(standardize=True)``) instead of data units.
        mask: optional ``(..., N)`` boolean, True for real samples of padded datasets.

    Returns:
        ``(..., d, 3)``: per variable ``(ρ_jt, conditional mean, log conditional sd)``; at the
        target itself ``(1, v, log floor)`` in the chosen units.
    """
    mean, std = standardization_stats(observational, std_floor, mask)  # (..., d) each
    z = (observational - mean[..., None, :]) / std[..., None, :]  # (..., N, d)
    if mask is None:
        weights = jnp.full(z.shape[:-1], 1.0 / z.shape[-2], z.dtype)  # (..., N)
    else:
        real = mask.astype(z.dtype)
        weights = real / real.sum(axis=-1, keepdims=True)
        z = jnp.where(mask[..., None], z, 0.0)
    z_target = jnp.einsum("...nd,...d->...n", z, targets)  # (..., N)
    z_target = z_target / jnp.sqrt(jnp.maximum(jnp.einsum("...n,...n->...", weights, z_target ** 2),
                                               1e-12))[..., None]
    rho = jnp.clip(jnp.einsum("...n,...nd,...n->...d", weights, z, z_target), -1.0, 1.0)  # (..., d)
    mean_t = jnp.einsum("...d,...d->...", mean, targets)
    std_t = jnp.maximum(jnp.einsum("...d,...d->...", std, targets), std_floor)
    z_value = (values - mean_t) / std_t  # (...,)
    cond_mean = rho * z_value[..., None]  # z-scores
    cond_sd = jnp.sqrt(jnp.maximum(1.0 - rho ** 2, 0.0))
    if not standardized:
        cond_mean, cond_sd = mean + std * cond_mean, std * cond_sd
    log_sd = jnp.log(jnp.maximum(cond_sd, std_floor))
    return jnp.stack([rho, cond_mean, log_sd], axis=-1)
