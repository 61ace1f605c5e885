"""Two-variable linear-Gaussian SCMs whose causal direction the data cannot reveal.

The paper's Gauss 2 set is identifiable: all its noise variances are equal, and with equal
variances the direction of a linear-Gaussian model follows from the covariance (Peters &
Bühlmann 2014). Here the noise scales are drawn independently, so every covariance is fit by
both directions and only the prior tells them apart. This is the setting of Proposition 2: for
infinite data the best amortized prediction is the mixture, over the two directions ``G``, of
their interventional distributions weighted by the posterior ``p_tr(G | Σ)``.

Generative process, per SCM (``X0, X1``):

* direction ``G``: ``X0 → X1`` or ``X1 → X0`` with probability ½ each;
* the cause's noise standard deviation ``s_c``, the effect's ``s_e`` and the weight magnitude
  ``|w|`` are independent LogNormal(0, ``log_sd``) draws (so all three are positive with full
  support, and the prior density never vanishes in either direction); the sign of ``w`` is
  uniform;
* ``cause = s_c ε_c``, ``effect = w · cause + s_e ε_e`` with standard normal ``ε``;
* queries: ``do(X_i = v + N(0, jitter²))`` for ``i = 0, 1``, as in the linear sets.

The posterior of the direction given the population covariance ``Σ`` is
``p_tr(G | Σ) ∝ p(G) · p(θ_G(Σ)) · |det ∂θ_G / ∂Σ|`` with ``θ_G = (s_c, w, s_e)`` the unique
parameters of direction ``G`` that produce ``Σ``. For ``X_a → X_b``:
``s_c = sqrt(Σ_aa)``, ``w = Σ_ab / Σ_aa``, ``s_e = sqrt(Σ_bb − Σ_ab² / Σ_aa)`` and the Jacobian
of ``(Σ_aa, Σ_ab, Σ_bb) ↦ θ`` is triangular with determinant ``1 / (4 s_c³ s_e)``
(:func:`direction_posterior`). :func:`equivalence_class_target` turns it into the
Proposition 2 target mixture.
"""

from __future__ import annotations

import numpy as np

from activa_ppl.data import InterventionalDataset, library_version
from activa_ppl.mixture import GaussianMixture

__all__ = ["ambiguous_dataset", "cause_mode_weight", "direction_posterior", "equivalence_class_target"]


def _lognormal_logpdf(x: np.ndarray, log_sd: float) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return -np.log(x * log_sd * np.sqrt(2 * np.pi)) - np.log(x) ** 2 / (2 * log_sd**2)


def _direction_log_density(cov: np.ndarray, cause: int, log_sd: float) -> np.ndarray:
    """log p(Σ | cause → effect) for ``cov (..., 2, 2)``."""
    effect = 1 - cause
    s_aa, s_ab, s_bb = cov[..., cause, cause], cov[..., cause, effect], cov[..., effect, effect]
    s_c = np.sqrt(s_aa)
    w = s_ab / s_aa
    s_e = np.sqrt(s_bb - s_ab**2 / s_aa)
    log_prior = (_lognormal_logpdf(s_c, log_sd) + _lognormal_logpdf(s_e, log_sd)
                 + _lognormal_logpdf(np.abs(w), log_sd) + np.log(0.5))  # sign of w: ½
    log_jacobian = -np.log(4.0) - 3 * np.log(s_c) - np.log(s_e)
    return log_prior + log_jacobian


def direction_posterior(cov, log_sd: float = 0.5) -> np.ndarray:
    """``p_tr(X0 → X1 | Σ)`` under the prior of :func:`ambiguous_dataset`.

    Args:
        cov: ``(..., 2, 2)`` population covariances (positive definite, non-zero correlation).
        log_sd: the LogNormal scale of the prior (as in :func:`ambiguous_dataset`).

    Returns:
        ``(...)`` posterior probabilities of the direction ``X0 → X1``.
    """
    cov = np.asarray(cov, dtype=float)
    if cov.shape[-2:] != (2, 2):
        raise ValueError(f"cov must have shape (..., 2, 2); got {cov.shape}")
    forward = _direction_log_density(cov, 0, log_sd)
    backward = _direction_log_density(cov, 1, log_sd)
    return 1.0 / (1.0 + np.exp(backward - forward))


def equivalence_class_target(cov, target: int, value: float = 5.0, jitter: float = 0.1,
                             log_sd: float = 0.5) -> GaussianMixture:
    """The Proposition 2 target ``p(X | do(X_target = value + N(0, jitter²)))`` for infinite data.

    A two-component mixture over ``(X0, X1)``: the interventional Gaussian if ``X_target`` is
    the cause (the effect shifts by ``w · value``), weighted by ``p_tr(X_target → other | Σ)``,
    and the one if it is the effect (the other variable keeps its observational law).

    Args:
        cov: ``(..., 2, 2)`` population covariances of the observational distribution.
        target: the intervened variable, 0 or 1.
        value, jitter: the intervention ``value + N(0, jitter²)``.
        log_sd: the prior's LogNormal scale.

    Returns:
        A :class:`GaussianMixture` with batch shape ``cov.shape[:-2]`` and 2 components,
        component 0 = "target is the cause".
    """
    if target not in (0, 1):
        raise ValueError(f"target must be 0 or 1; got {target!r}")
    cov = np.asarray(cov, dtype=float)
    other = 1 - target
    p_forward = direction_posterior(cov, log_sd)
    p_cause = p_forward if target == 0 else 1.0 - p_forward
    batch = cov.shape[:-2]
    w = cov[..., target, other] / cov[..., target, target]
    s_e2 = cov[..., other, other] - cov[..., target, other] ** 2 / cov[..., target, target]
    locs = np.zeros(batch + (2, 2))
    covs = np.zeros(batch + (2, 2, 2))
    # component 0: target -> other, other = w * target + noise
    locs[..., 0, target], locs[..., 0, other] = value, w * value
    covs[..., 0, target, target] = jitter**2
    covs[..., 0, target, other] = covs[..., 0, other, target] = w * jitter**2
    covs[..., 0, other, other] = w**2 * jitter**2 + s_e2
    # component 1: other -> target, other keeps its marginal N(0, Σ_oo)
    locs[..., 1, target] = value
    covs[..., 1, target, target] = jitter**2
    covs[..., 1, other, other] = cov[..., other, other]
    weights = np.stack([p_cause, 1.0 - p_cause], axis=-1)
    return GaussianMixture(weights.astype(np.float32), locs.astype(np.float32), covs.astype(np.float32))


def cause_mode_weight(samples, cov, target: int, value: float = 5.0, jitter: float = 0.1,
                      num_iterations: int = 200) -> np.ndarray:
    """How much of a predicted ``p(X_other | do(X_target))`` sits on the "target is the cause" mode.

    The two modes of :func:`equivalence_class_target` are fixed Gaussians over the other
    variable: ``A = N(w·value, w²·jitter² + s_e²)`` (``X_target`` causes it) and
    ``B = N(0, Σ_oo)`` (it causes ``X_target``). Given samples of the other variable drawn from
    any prediction, the maximum-likelihood mixing weight ``π`` of ``π·A + (1 − π)·B`` is found
    by EM with the components held fixed. Applied to samples of the target mixture itself it
    recovers ``p_tr(target → other | Σ)`` up to Monte Carlo error; for a unimodal prediction it
    says which mode the prediction resembles.

    Args:
        samples: ``(n, ...)`` samples of the non-target variable; the trailing axes are a batch.
        cov: ``(..., 2, 2)`` population covariances (batch as ``samples.shape[1:]``).
        target: the intervened variable, 0 or 1.
        value, jitter: the intervention ``value + N(0, jitter²)``.
        num_iterations: EM iterations.

    Returns:
        ``(...)`` weights in [0, 1].
    """
    if target not in (0, 1):
        raise ValueError(f"target must be 0 or 1; got {target!r}")
    y = np.asarray(samples, dtype=float)
    cov = np.asarray(cov, dtype=float)
    other = 1 - target
    w = cov[..., target, other] / cov[..., target, target]
    s_e2 = cov[..., other, other] - cov[..., target, other] ** 2 / cov[..., target, target]

    def log_normal(x, mean, var):
        return -0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)

    log_a = log_normal(y, w * value, w**2 * jitter**2 + s_e2)
    log_b = log_normal(y, 0.0, cov[..., other, other])
    ratio = np.exp(np.clip(log_b - log_a, -700, 700))  # B / A per sample
    pi = np.full(y.shape[1:], 0.5)
    for _ in range(num_iterations):
        pi = np.mean(pi / (pi + (1 - pi) * ratio), axis=0)
    return pi


def ambiguous_dataset(num_scms: int = 3000, num_samples: int = 100, seed: int = 0, *,
                      log_sd: float = 0.5, intervention_value: float = 5.0,
                      intervention_noise_std: float = 0.1,
                      split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> InterventionalDataset:
    """Simulate the two-variable ambiguous-direction set (see the module docstring).

    Args:
        num_scms: S, number of SCMs.
        num_samples: observational and interventional samples per condition.
        seed: integer seed; the dataset is a deterministic function of the arguments.
        log_sd: LogNormal scale of the noise standard deviations and the weight magnitude.
        intervention_value, intervention_noise_std: ``do(X_i = value + N(0, std²))``.
        split_fractions: train/valid/test fractions of SCMs.

    Returns:
        An :class:`InterventionalDataset` (generator ``"ambiguous"``) with ``observational
        (S, N, 2)``, ``interventional (S, 2, N, 2)``, one-hot targets, the true ``adjacency`` and
        extras ``direction (S,)`` (1 if ``X0 → X1``), ``weight (S,)``, ``noise_std (S, 2)``
        (per variable), ``covariance (S, 2, 2)`` (population) and ``p_forward (S,)``
        (:func:`direction_posterior` of the population covariance).
    """
    for name, value in (("num_scms", num_scms), ("num_samples", num_samples)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if log_sd <= 0:
        raise ValueError(f"log_sd must be positive, got {log_sd}")
    fractions = np.asarray(split_fractions, dtype=float)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"split_fractions must be 3 non-negative numbers summing to 1, got {split_fractions}")
    rng = np.random.default_rng(int(seed))
    S, N = int(num_scms), int(num_samples)
    forward = rng.random(S) < 0.5                       # X0 -> X1
    s_cause, s_effect, magnitude = np.exp(log_sd * rng.standard_normal((3, S)))
    weight = np.where(rng.random(S) < 0.5, -1.0, 1.0) * magnitude
    cause = np.where(forward, 0, 1)
    effect = 1 - cause
    rows = np.arange(S)
    noise_std = np.empty((S, 2))
    noise_std[rows, cause], noise_std[rows, effect] = s_cause, s_effect
    adjacency = np.zeros((S, 2, 2), dtype=np.int8)
    adjacency[rows, cause, effect] = 1
    cov = np.empty((S, 2, 2))
    cov[rows, cause, cause] = s_cause**2
    cov[rows, cause, effect] = cov[rows, effect, cause] = weight * s_cause**2
    cov[rows, effect, effect] = weight**2 * s_cause**2 + s_effect**2

    num_train = int(round(fractions[0] * S))
    num_valid = min(int(round(fractions[1] * S)), S - num_train)
    split = np.full(S, 2, dtype=np.int8)
    order = rng.permutation(S)
    split[order[:num_train]], split[order[num_train:num_train + num_valid]] = 0, 1

    def noise(n):
        """Noise terms of cause and effect, each ``(S, n)``."""
        return (s_cause[:, None] * rng.standard_normal((S, n)),
                s_effect[:, None] * rng.standard_normal((S, n)))

    observational = np.empty((S, N, 2))
    eps_c, eps_e = noise(N)
    observational[rows, :, cause] = eps_c
    observational[rows, :, effect] = weight[:, None] * eps_c + eps_e
    interventional = np.empty((S, 2, N, 2))
    for i in (0, 1):
        eps_c, eps_e = noise(N)
        fixed = intervention_value + intervention_noise_std * rng.standard_normal((S, N))
        # do(X_i): the other variable responds to X_i only if X_i is its cause
        responds = (cause == i)[:, None]
        interventional[:, i, :, i] = fixed
        interventional[:, i, :, 1 - i] = np.where(responds, weight[:, None] * fixed + eps_e, eps_c)
    metadata = {
        "generator": "ambiguous", "num_scms": S, "num_vars": 2, "num_samples": N,
        "num_interventional_samples": N, "log_sd": float(log_sd),
        "intervention_value": float(intervention_value),
        "intervention_noise_std": float(intervention_noise_std),
        "split_fractions": [float(x) for x in split_fractions], "seed": int(seed),
        "version": library_version(),
    }
    return InterventionalDataset(
        observational=observational.astype(np.float32),
        interventional=interventional.astype(np.float32),
        targets=np.tile(np.eye(2, dtype=bool), (S, 1, 1)),
        intervention_index=np.zeros((S, 2), dtype=np.int32),
        intervention_values=np.full((S, 2), intervention_value, dtype=np.float32),
        adjacency=adjacency, split=split, num_interventions=1, metadata=metadata,
        extras={"direction": forward.astype(np.int8), "weight": weight, "noise_std": noise_std,
                "covariance": cov, "p_forward": direction_posterior(cov, log_sd)},
    )
