"""Per-dataset standardization: z-scores from the observational data, and the way back.

ACTIVA with ``ActivaConfig(standardize=True)`` and the MACE-TNP baseline both see every dataset
in z-scored units ``(x - mean) / std``, with ``mean`` and ``std`` taken per variable from the
observational samples of that dataset, and map their predicted mixtures back to data units. A
model trained this way is invariant to the units of each variable.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["standardization_stats", "to_data_units", "nominal_intervention_values"]


def standardization_stats(observational, std_floor: float, mask=None):
    """Per-dataset, per-variable mean and (floored) standard deviation.

    ``observational (..., N, d)`` → ``(mean (..., d), std (..., d))``; ``std`` (``ddof=0``)
    is at least ``std_floor``, so a constant variable does not divide by zero. With ``mask``
    (``(..., N)`` boolean, True for real samples; at least one per dataset) the statistics
    are taken over the real samples only, so padded rows (whatever their values) do not
    count; ``None`` uses every sample (the original computation, bit for bit).
    """
    if mask is None:
        mean = observational.mean(axis=-2)
        std = jnp.maximum(observational.std(axis=-2), std_floor)
        return mean, std
    real = mask[..., None]  # (..., N, 1)
    count = real.astype(observational.dtype).sum(axis=-2)  # (..., 1)
    mean = jnp.where(real, observational, 0.0).sum(axis=-2) / count
    centred = jnp.where(real, observational - mean[..., None, :], 0.0)
    std = jnp.sqrt((centred * centred).sum(axis=-2) / count)
    return mean, jnp.maximum(std, std_floor)


def to_data_units(locs, covariances, mean, std):
    """Map mixture components over ``z = (x - mean) / std`` back to data units.

    ``locs (..., K, d)`` → ``mean + std ⊙ locs``; ``covariances (..., K, d, d)`` →
    ``diag(std) Σ diag(std)``; ``mean``, ``std``: ``(..., d)``.
    """
    locs = mean[..., None, :] + std[..., None, :] * locs
    covariances = covariances * std[..., None, :, None] * std[..., None, None, :]
    return locs, covariances


def nominal_intervention_values(data) -> tuple[float, ...]:
    """The value ``v_i`` of each intervention index ``i`` of an :class:`InterventionalDataset`.

    The input of ``ActivaConfig(standardize=True, intervention_values=...)``: ``(5.0,)`` for the
    paper's linear sets, ``(0.0,)`` for SERGIO knockouts.

    Raises:
        ValueError: an index has several values in the dataset (then the model cannot be given
            one value per index), or never occurs.
    """
    import numpy as np

    index = np.asarray(data.intervention_index)  # (S, M)
    values = np.asarray(data.intervention_values)  # (S, M)
    out = []
    for i in range(data.num_interventions):
        seen = np.unique(values[index == i])
        if len(seen) != 1:
            raise ValueError(f"intervention index {i} has {len(seen)} distinct values in the dataset "
                             f"({seen[:5].tolist()}...); standardize needs one value per index")
        out.append(float(seen[0]))
    return tuple(out)
