"""MACE-TNP's pure functions: normalisation (D.3), initial parameters, prediction in data units,
the training objective and the validation NLL.

Shapes use ``...`` for any leading batch dimensions (tasks).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from activa_ppl.baselines.mace_tnp.config import MaceTnpConfig
from activa_ppl.baselines.mace_tnp.networks import MaceTnp
from activa_ppl.mixture import GaussianMixture
from activa_ppl.mixture_math import solve_lower
from activa_ppl.standardize import standardization_stats

__all__ = ["STD_FLOOR", "denormalize", "init_params", "predict_arrays", "training_loss", "validation_nll"]

#: Smallest observational standard deviation used for z-scoring (a constant column).
STD_FLOOR = 1e-6


def denormalize(logits, locs, scale_tril, mean, std) -> GaussianMixture:
    """Map a mixture over z-scored variables ``z = (x - mean) / std`` back to data units.

    Args:
        logits: ``(..., K)`` log-weights (unchanged).
        locs: ``(..., K, d)`` means in normalised units → ``mean + std ⊙ locs``.
        scale_tril: ``(..., K, d, d)`` Cholesky factors → ``diag(std) L`` (still lower
            triangular with a positive diagonal), so Σ ↦ diag(std) Σ diag(std).
        mean, std: ``(..., d)`` the observational mean and standard deviation (floored at
            :data:`STD_FLOOR`).

    Returns:
        :class:`GaussianMixture` with batch shape ``(...)``, the law of ``mean + std ⊙ z``.
    """
    locs = mean[..., None, :] + std[..., None, :] * locs  # (..., K, d)
    tril = std[..., None, :, None] * scale_tril  # (..., K, d, d): row i scaled by std_i
    return GaussianMixture.from_logits(logits, locs, scale_tril=tril)


def init_params(config: MaceTnpConfig, key: jax.Array, num_samples: int = 8) -> dict:
    """Initial Flax variables ``{"params": ...}`` (the shapes do not depend on ``num_samples``)."""
    return _init_params(config, key, num_samples)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init_params(config: MaceTnpConfig, key: jax.Array, num_samples: int) -> dict:
    d = config.num_vars
    obs = jnp.zeros((1, num_samples, d), jnp.float32)
    query = jnp.zeros((1, 1, d), jnp.float32)
    targets = jnp.zeros((1, d), jnp.float32).at[:, 0].set(1.0)
    return MaceTnp(config).init(key, obs, query, targets)


def _query_values(targets, values):
    """``values (...)`` or ``(..., d)`` → ``(..., d)`` with the value on the targets, 0 elsewhere."""
    values = jnp.broadcast_to(values[..., None], targets.shape) if values.ndim == targets.ndim - 1 else values
    return jnp.where(targets > 0, values, 0.0)


def _normalized_outputs(config, params, observational, targets, query_x):
    """Apply the model: data-unit inputs → normalised mixture parameters and the statistics.

    ``observational (T, N, d)``, ``targets (T, d)``, ``query_x (T, d)`` (data units, only the
    target entries are used) → ``(logits, locs, tril, mean, std)``.
    """
    mean, std = standardization_stats(observational, STD_FLOOR)  # (T, d)
    z_obs = (observational - mean[:, None]) / std[:, None]
    z_query = jnp.where(targets > 0, (query_x - mean) / std, 0.0)[:, None, :]  # (T, 1, d)
    logits, locs, tril = MaceTnp(config).apply(params, z_obs, z_query, targets)
    return logits, locs, tril, mean, std


@functools.partial(jax.jit, static_argnums=0)
def predict_arrays(config: MaceTnpConfig, params, observational, targets, values):
    """Predicted joint post-interventional mixtures, in data units.

    Args:
        config: the architecture (static).
        params: Flax variables of :class:`MaceTnp`.
        observational: ``(T, N, d)`` observational datasets.
        targets: ``(T, d)`` 0/1 intervention target masks.
        values: ``(T,)`` intervention values, or ``(T, d)`` per-variable values (only the
            target entries are read).

    Returns:
        :class:`GaussianMixture` with batch shape ``(T,)`` over all ``d`` variables (``V_t``
        included), ``K = config.num_components``.
    """
    query_x = _query_values(targets, values)
    logits, locs, tril, mean, std = _normalized_outputs(config, params, observational, targets, query_x)
    return denormalize(logits, locs, tril, mean, std)


def _log_prob(logits, locs, tril, x):
    """Mixture log density from Cholesky factors, MACE-TNP's own formulation (inverse factors,
    then one einsum).

    ``logits (T, K)``, ``locs (T, K, d)``, ``tril (T, K, d, d)``, ``x (T, n, d)`` → ``(T, n)``.
    Equal to :func:`activa_ppl.mixture.mixture_log_prob` to float tolerance (tested), which is
    not used here: differentiated in MACE-TNP's training step at d = 8 (its batched
    ``triangular_solve`` against every sample) the XLA CPU backend of jax 0.10.2 never finished
    the first chunk, every thread idle; this formulation trains as it always has. That was the
    LAPACK thread-pool deadlock of :func:`activa_ppl.mixture_math.cholesky`; the inverse factor
    is now taken by :func:`activa_ppl.mixture_math.solve_lower` (no LAPACK call for d <= 16).
    """
    d = locs.shape[-1]
    eye = jnp.broadcast_to(jnp.eye(d, dtype=tril.dtype), tril.shape)
    inv = solve_lower(tril, eye)  # (T, K, d, d) = L⁻¹
    diff = x[:, :, None, :] - locs[:, None, :, :]  # (T, n, K, d)
    y = jnp.einsum("tkij,tnkj->tnki", inv, diff)
    log_det = jnp.log(jnp.diagonal(tril, axis1=-2, axis2=-1)).sum(-1)  # (T, K)
    comp = -0.5 * (y**2).sum(-1) - log_det[:, None, :] - 0.5 * d * math.log(2 * math.pi)  # (T, n, K)
    return jax.nn.logsumexp(comp + jax.nn.log_softmax(logits)[:, None, :], axis=-1)


def training_loss(config: MaceTnpConfig, params, observational, interventional, targets, query_index):
    """Mean NLL per interventional sample, in normalised units (the training objective).

    Args:
        config: the architecture.
        params: Flax variables of :class:`MaceTnp`.
        observational: ``(B, N, d)`` observational datasets.
        interventional: ``(B, N_int, d)`` all interventional samples of each task (the loss
            covers every sample and all ``d`` variables).
        targets: ``(B, d)`` 0/1 target masks.
        query_index: ``(B,)`` int, the interventional sample whose intervened coordinate(s)
            form the single query token.

    Returns:
        scalar; it differs from the NLL in data units by ``mean_t sum_j log std_tj``, a constant
        per task, so the gradients are those of the data-unit NLL.
    """
    query_x = jnp.take_along_axis(interventional, query_index[:, None, None], axis=1)[:, 0]  # (B, d)
    logits, locs, tril, mean, std = _normalized_outputs(config, params, observational, targets, query_x)
    z_int = (interventional - mean[:, None]) / std[:, None]
    return -_log_prob(logits, locs, tril, z_int).mean()


@functools.partial(jax.jit, static_argnums=0)
def validation_nll(config: MaceTnpConfig, params, observational, targets, values, interventional):
    """Mean NLL per interventional sample in data units, inference-time query (nominal values).

    ``observational (Q, N, d)``, ``targets (Q, d)``, ``values (Q,)`` or ``(Q, d)``,
    ``interventional (Q, N_int, d)`` → scalar, comparable with ACTIVA's validation NLL.
    """
    query_x = _query_values(targets, values)
    logits, locs, tril, mean, std = _normalized_outputs(config, params, observational, targets, query_x)
    locs = mean[:, None] + std[:, None] * locs
    tril = std[:, None, :, None] * tril
    return -_log_prob(logits, locs, tril, interventional).mean()
