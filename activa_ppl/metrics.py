"""Evaluation metrics of paper Section 6.3.

Predicted post-interventional distributions (:class:`~activa_ppl.mixture.GaussianMixture`)
are compared with held-out interventional samples on four variable subsets
("marginals"), see :func:`marginal_sets`:

* ``"all"``: all variables, including the intervention targets ``V_t``;
* ``"all_but_target"``: all variables except ``V_t`` (paper: All \\ V_t);
* ``"descendants"``: descendants of ``V_t`` in the true graph (``V_t`` excluded);
* ``"non_descendants"``: all variables that are neither targets nor descendants.

Metrics: mean negative log-likelihood (:func:`negative_log_likelihood`),
energy distance (:func:`energy_distance`) and the mean absolute error of the
average treatment effect (:func:`average_treatment_effect`, :func:`ate_mae`).
:func:`evaluate_prediction` computes all of them for one task.

Adjacency convention: ``adjacency[i, j] != 0`` iff there is an edge ``i -> j``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np

from activa_ppl.mixture import GaussianMixture, mixture_log_prob, sample_arrays
from activa_ppl.mixture_math import cholesky

__all__ = [
    "MARGINAL_SET_NAMES",
    "marginal_sets",
    "energy_distance",
    "negative_log_likelihood",
    "average_treatment_effect",
    "ate_mae",
    "evaluate_prediction",
    "evaluate_predictions",
    "marginal_masks",
]

#: Names of the evaluation marginals, in table order (paper Table 1).
MARGINAL_SET_NAMES: tuple[str, ...] = ("all", "all_but_target", "descendants", "non_descendants")


def _target_indices(target_mask: Any, d: int) -> np.ndarray:
    mask = np.asarray(target_mask)
    if mask.shape != (d,):
        raise ValueError(f"target_mask must have shape ({d},); got {mask.shape}")
    return np.flatnonzero(mask.astype(bool))


def marginal_sets(adjacency: Any, target_mask: Any) -> dict[str, np.ndarray]:
    """Index sets of the four evaluation marginals of Section 6.3.

    Args:
      adjacency: ``(d, d)`` true graph, ``adjacency[i, j] != 0`` iff ``i -> j``.
      target_mask: ``(d,)`` boolean mask of the intervened variables ``V_t``.

    Returns:
      ``{"all", "all_but_target", "descendants", "non_descendants"}`` mapped to
      sorted ``int`` index arrays. Descendants are those of the union of the
      targets (found by graph search with networkx), targets excluded;
      non-descendants are all variables minus targets minus descendants.
      Empty sets are returned as empty arrays; callers must skip them (they
      never count as a zero error).
    """
    adj = np.asarray(adjacency)
    if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
        raise ValueError(f"adjacency must have shape (d, d); got {adj.shape}")
    d = adj.shape[0]
    targets = _target_indices(target_mask, d)
    graph = nx.DiGraph()
    graph.add_nodes_from(range(d))
    graph.add_edges_from(zip(*np.nonzero(adj != 0)))
    desc: set[int] = set()
    for t in targets:
        desc |= nx.descendants(graph, int(t))
    desc -= set(int(t) for t in targets)
    all_idx = np.arange(d)
    target_set = set(int(t) for t in targets)
    return {
        "all": all_idx,
        "all_but_target": np.array([i for i in all_idx if i not in target_set], dtype=int),
        "descendants": np.array(sorted(desc), dtype=int),
        "non_descendants": np.array(
            [i for i in all_idx if i not in target_set and i not in desc], dtype=int
        ),
    }


def _mean_pairwise_distance(x: jax.Array, y: jax.Array, batch_size: int) -> jax.Array:
    """``mean_{i,j} ||x_i - y_j||_2`` computed by row blocks (exact differences)."""

    def row(xi):
        return jnp.mean(jnp.sqrt(jnp.sum((xi[None, :] - y) ** 2, axis=-1)))

    return jnp.mean(jax.lax.map(row, x, batch_size=batch_size))


def energy_distance(x: Any, y: Any, batch_size: int = 256) -> jax.Array:
    """Energy distance between two samples (Székely & Rizzo, 2013), V-statistic.

    .. math::

        \\mathcal{E}(x, y) = \\frac{2}{nm}\\sum_{i,j}\\|x_i - y_j\\|
            - \\frac{1}{n^2}\\sum_{i,i'}\\|x_i - x_{i'}\\|
            - \\frac{1}{m^2}\\sum_{j,j'}\\|y_j - y_{j'}\\|,

    i.e. ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` with Euclidean norms and all
    pairs (including ``i = i'``) in the averages. It is non-negative, symmetric
    and zero for identical samples. Pairwise differences are formed
    explicitly (no ``|a|^2 + |b|^2 - 2ab`` cancellation), ``batch_size`` rows at
    a time.

    Args:
      x: ``(n, d)`` first sample (a ``(n,)`` vector is treated as ``d = 1``).
      y: ``(m, d)`` second sample.
      batch_size: rows processed at once (memory ``batch_size * m * d``).

    Returns:
      Scalar (0-d jax array).
    """
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.ndim == 1:
        x = x[:, None]
    if y.ndim == 1:
        y = y[:, None]
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have shapes (n, d) and (m, d); got {x.shape}, {y.shape}")
    if x.shape[0] == 0 or y.shape[0] == 0:
        raise ValueError("energy distance needs non-empty samples")
    dtype = jnp.result_type(x.dtype, y.dtype, jnp.float32)
    return _energy_distance(x.astype(dtype), y.astype(dtype), int(batch_size))


@partial(jax.jit, static_argnums=(2,))
def _energy_distance(x: jax.Array, y: jax.Array, batch_size: int) -> jax.Array:
    exy = _mean_pairwise_distance(x, y, batch_size)
    exx = _mean_pairwise_distance(x, x, batch_size)
    eyy = _mean_pairwise_distance(y, y, batch_size)
    return 2.0 * exy - exx - eyy


def negative_log_likelihood(mixture: GaussianMixture, samples: Any) -> jax.Array:
    """Mean negative log-likelihood of held-out samples under a predicted mixture.

    Args:
      mixture: predicted (unbatched, or broadcasting) mixture over ``d`` variables.
      samples: ``(n, d)`` held-out samples.

    Returns:
      Scalar (0-d jax array) ``-(1/n) sum_i log p(samples_i)``.
    """
    samples = jnp.asarray(samples)
    if samples.ndim < 2:
        raise ValueError(f"samples must have shape (n, d); got {samples.shape}")
    return -jnp.mean(mixture.log_prob(samples))


def average_treatment_effect(interventional_mean: Any, observational_mean: Any) -> jax.Array:
    """Average treatment effect of paper Eq. (13).

    ``ATE = E[V | do(V_t = v)] - E[V | do(emptyset)]``.

    Args:
      interventional_mean: ``(..., d)`` mean under the intervention.
      observational_mean: ``(..., d)`` observational mean.

    Returns:
      ``(..., d)`` per-variable ATE.
    """
    return jnp.asarray(interventional_mean) - jnp.asarray(observational_mean)


def ate_mae(pred_ate: Any, true_ate: Any, indices: Any = None) -> jax.Array:
    """Mean absolute error between predicted and true ATEs over a variable subset.

    Args:
      pred_ate: ``(..., d)`` predicted ATE.
      true_ate: ``(..., d)`` ground-truth (sample) ATE.
      indices: integer indices (or ``(d,)`` boolean mask) of the variables to
        average over; all variables if ``None``. Must be non-empty.

    Returns:
      ``(...)`` mean over the selected variables of ``|pred_ate - true_ate|``.
    """
    err = jnp.abs(jnp.asarray(pred_ate) - jnp.asarray(true_ate))
    if indices is not None:
        idx = np.asarray(indices)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(int)
        if idx.size == 0:
            raise ValueError("ate_mae over an empty variable set is undefined; skip the set")
        err = err[..., idx]
    return jnp.mean(err, axis=-1)


def evaluate_prediction(
    mixture: GaussianMixture,
    interventional: Any,
    observational: Any,
    adjacency: Any,
    target_mask: Any,
    seed: Any,
    sets: Sequence[str] | None = None,
) -> dict[str, dict[str, float]]:
    """All Section 6.3 metrics of one predicted post-interventional distribution.

    For each non-empty marginal set ``S`` of :func:`marginal_sets`:

    * ``"nll"``: :func:`negative_log_likelihood` of ``interventional[:, S]``
      under the exact marginal ``mixture.marginal(S)``;
    * ``"energy"``: :func:`energy_distance` between ``n`` predicted samples
      (``mixture.sample(n, seed)``, ``n = len(interventional)``; the same draw
      is used for every set, restricted to ``S``) and ``interventional[:, S]``;
    * ``"ate_mae"``: :func:`ate_mae` on ``S`` of the predicted ATE
      ``mixture.mean - mean(observational)`` versus the sample ATE
      ``mean(interventional) - mean(observational)``.

    Args:
      mixture: unbatched predicted mixture over all ``d`` variables.
      interventional: ``(n, d)`` held-out interventional samples.
      observational: ``(n_obs, d)`` observational samples.
      adjacency: ``(d, d)`` true graph (``adjacency[i, j] != 0`` iff ``i -> j``).
      target_mask: ``(d,)`` boolean mask of the intervened variables.
      seed: int or PRNG key for the predicted samples.
      sets: optional subset of :data:`MARGINAL_SET_NAMES` to evaluate (e.g.
        skip ``"all"`` for the baselines, which do not predict ``V_t``).

    Returns:
      ``{set_name: {"nll": float, "energy": float, "ate_mae": float}}`` for the
      requested, non-empty sets (empty sets are omitted, never reported as 0).
    """
    if mixture.batch_shape != ():
        raise ValueError(
            "evaluate_prediction needs an unbatched mixture; got batch_shape "
            f"{mixture.batch_shape}"
        )
    interventional = jnp.asarray(interventional)
    observational = jnp.asarray(observational)
    d = mixture.num_vars
    for name, arr in (("interventional", interventional), ("observational", observational)):
        if arr.ndim != 2 or arr.shape[1] != d:
            raise ValueError(f"{name} must have shape (n, {d}); got {arr.shape}")
    requested = MARGINAL_SET_NAMES if sets is None else tuple(sets)
    unknown = set(requested) - set(MARGINAL_SET_NAMES)
    if unknown:
        raise ValueError(
            f"unknown marginal sets {sorted(unknown)}; choose from {MARGINAL_SET_NAMES}"
        )
    index_sets = marginal_sets(adjacency, target_mask)
    n = interventional.shape[0]
    predicted = mixture.sample(n, seed)
    obs_mean = jnp.mean(observational, axis=0)
    pred_ate = average_treatment_effect(mixture.mean, obs_mean)
    true_ate = average_treatment_effect(jnp.mean(interventional, axis=0), obs_mean)
    results: dict[str, dict[str, float]] = {}
    for name in requested:
        idx = index_sets[name]
        if idx.size == 0:
            continue
        results[name] = {
            "nll": float(negative_log_likelihood(mixture.marginal(idx), interventional[:, idx])),
            "energy": float(energy_distance(predicted[:, idx], interventional[:, idx])),
            "ate_mae": float(ate_mae(pred_ate, true_ate, idx)),
        }
    return results


def marginal_masks(adjacency: Any, target_mask: Any) -> np.ndarray:
    """Boolean masks of the four marginals of :func:`marginal_sets` for many tasks.

    Args:
      adjacency: ``(T, d, d)`` true graphs.
      target_mask: ``(T, d)`` intervened variables.

    Returns:
      ``(T, 4, d)`` booleans, marginals in :data:`MARGINAL_SET_NAMES` order.
    """
    adjacency = np.asarray(adjacency)
    targets = np.asarray(target_mask).astype(bool)
    if adjacency.ndim != 3 or targets.ndim != 2 or adjacency.shape[:2] != targets.shape:
        raise ValueError(f"adjacency (T, d, d) and target_mask (T, d) expected; got "
                         f"{adjacency.shape} and {targets.shape}")
    masks = np.zeros((len(targets), len(MARGINAL_SET_NAMES), targets.shape[1]), dtype=bool)
    cache: dict = {}
    for t in range(len(targets)):
        key = (adjacency[t].tobytes(), targets[t].tobytes())
        if key not in cache:
            sets = marginal_sets(adjacency[t], targets[t])
            row = np.zeros((len(MARGINAL_SET_NAMES), targets.shape[1]), dtype=bool)
            for j, name in enumerate(MARGINAL_SET_NAMES):
                row[j, sets[name]] = True
            cache[key] = row
        masks[t] = cache[key]
    return masks


_HALF_LOG_2PI = 0.5 * float(np.log(2 * np.pi))


def _masked_scores(weights, locs, covariances, interventional, masks, key):
    """NLL, energy distance and ATE error of one task on every marginal at once.

    A marginal ``S`` is handled on the full ``d`` coordinates by a mask ``m``: coordinates
    outside ``S`` are replaced by an independent standard normal evaluated at 0 (mean and
    sample set to 0, covariance rows/columns to the identity), so the masked mixture density is
    the exact marginal density times ``N(0 | 0, 1)^(d - |S|)``, which is divided out; distances
    and ATE errors only sum over ``S``.

    Shapes: weights ``(K,)``, locs ``(K, d)``, covariances ``(K, d, d)``, interventional
    ``(n, d)``, masks ``(M, d)`` float 0/1 -> three ``(M,)`` arrays (NaN for empty masks).
    """
    n, d = interventional.shape
    predicted = sample_arrays(weights, locs, covariances, key, n)  # (n, d), as mixture.sample(n, key)
    size = jnp.sum(masks, axis=-1)  # (M,)

    def one(m):
        outer = m[:, None] * m[None, :]
        cov = covariances * outer + jnp.diag(1.0 - m)
        logp = mixture_log_prob(jnp.log(weights), locs * m, cholesky(cov), interventional * m) + (d - jnp.sum(m)) * _HALF_LOG_2PI
        nll = -jnp.mean(logp)

        def mean_dist(a, b):
            diff = (a[:, None, :] - b[None, :, :]) * m
            return jnp.mean(jnp.sqrt(jnp.sum(diff * diff, axis=-1)))

        energy = (2.0 * mean_dist(predicted, interventional) - mean_dist(predicted, predicted)
                  - mean_dist(interventional, interventional))
        pred_mean = jnp.sum(weights[:, None] * locs, axis=0)
        ate = jnp.sum(jnp.abs(pred_mean - jnp.mean(interventional, axis=0)) * m) / jnp.maximum(jnp.sum(m), 1.0)
        return nll, energy, ate

    nll, energy, ate = jax.vmap(one)(masks)
    empty = size == 0
    return tuple(jnp.where(empty, jnp.nan, v) for v in (nll, energy, ate))


_batched_scores = jax.jit(jax.vmap(_masked_scores))


def evaluate_predictions(mixtures: GaussianMixture, interventional: Any, adjacency: Any,
                         target_mask: Any, keys: Any, chunk_size: int = 128) -> dict[str, np.ndarray]:
    """The metrics of :func:`evaluate_prediction` for many tasks at once (vectorized, compiled).

    Gives the same values as calling :func:`evaluate_prediction` per task with ``seed=keys[t]``
    (up to float32 summation order), about two orders of magnitude faster for thousands of
    tasks. Note that the ATE error does not depend on the observational mean, which cancels
    in ``(E_pred[V] - mean(D_obs)) - (mean(D_int) - mean(D_obs))``.

    Args:
      mixtures: predictions with batch shape ``(T,)``.
      interventional: ``(T, n, d)`` held-out samples.
      adjacency: ``(T, d, d)`` true graph of each task's SCM.
      target_mask: ``(T, d)`` intervened variables.
      keys: ``(T, 2)`` PRNG keys (one per task) for the predicted samples.
      chunk_size: tasks per compiled call (memory ``chunk_size * 4 * n^2 * d`` floats).

    Returns:
      ``{"nll", "energy", "ate_mae"}``, each ``(T, 4)`` in :data:`MARGINAL_SET_NAMES` order, NaN
      where a marginal is empty.
    """
    if len(mixtures.batch_shape) != 1:
        raise ValueError(f"mixtures must have batch shape (T,); got {mixtures.batch_shape}")
    num = mixtures.batch_shape[0]
    interventional = np.asarray(interventional, dtype=np.float32)
    if interventional.ndim != 3 or interventional.shape[0] != num or interventional.shape[2] != mixtures.num_vars:
        raise ValueError(f"interventional must have shape ({num}, n, {mixtures.num_vars}); "
                         f"got {interventional.shape}")
    masks = marginal_masks(adjacency, target_mask).astype(np.float32)
    keys = jnp.asarray(keys)
    out = {name: np.empty((num, len(MARGINAL_SET_NAMES))) for name in ("nll", "energy", "ate_mae")}
    weights, locs, covs = (np.asarray(mixtures.weights, np.float32), np.asarray(mixtures.locs, np.float32),
                           np.asarray(mixtures.covariances, np.float32))
    for start in range(0, num, chunk_size):
        stop = min(start + chunk_size, num)
        pad = chunk_size - (stop - start)  # pad the last chunk: one compiled shape

        def take(a):
            part = a[start:stop]
            return np.concatenate([part, np.repeat(part[-1:], pad, axis=0)]) if pad else part

        nll, energy, ate = _batched_scores(take(weights), take(locs), take(covs), take(interventional),
                                           take(masks), jnp.asarray(take(np.asarray(keys))))
        for name, value in (("nll", nll), ("energy", energy), ("ate_mae", ate)):
            out[name][start:stop] = np.asarray(value)[: stop - start]
    return out
