"""The intervention representation I_{i,t} of paper Section 5.

An intervention do(V_t = v_i) is given by the *index* ``i`` of its value (not the value itself)
and a binary target mask ``t``. Its representation is the one-hot vector of ``i`` repeated over
the ``d`` variables, masked by ``t`` and repeated over the ``N`` samples, so each variable
carries its own intervention information as a local feature (permutation equivariance).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["intervention_representation"]


def intervention_representation(targets, index, num_interventions: int, num_samples: int):
    """Build I_{i,t} ∈ R^{N×d×|I|}.

    Args:
        targets: ``(..., d)`` 0/1 (or bool) target mask t; several targets are allowed.
        index: ``(...)`` integer intervention index i ∈ {0, …, |I|−1}.
        num_interventions: ``|I|``.
        num_samples: ``N``, the number of samples the representation is appended to.

    Returns:
        ``(..., N, d, |I|)`` float32 array: ``one_hot(i)`` in the rows of targeted variables,
        zeros elsewhere, identical for every sample.
    """
    onehot = jax.nn.one_hot(index, num_interventions, dtype=jnp.float32)  # (..., |I|)
    rep = jnp.asarray(targets, jnp.float32)[..., :, None] * onehot[..., None, :]  # (..., d, |I|)
    return jnp.broadcast_to(rep[..., None, :, :], (*rep.shape[:-2], num_samples, *rep.shape[-2:]))
