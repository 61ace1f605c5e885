"""A trained MACE-TNP model: batched and single prediction, saving and loading."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from activa_ppl.baselines.mace_tnp.config import MaceTnpConfig
from activa_ppl.baselines.mace_tnp.objective import init_params, predict_arrays
from activa_ppl.mixture import GaussianMixture
from activa_ppl.model_io import read_model_folder, write_model_folder
from activa_ppl.validation import as_observations, resolve_targets

__all__ = ["FittedMaceTnp", "load_mace_tnp", "MODEL_FORMAT", "MODEL_FORMAT_VERSION"]

MODEL_FORMAT = "activa_ppl.mace_tnp"
MODEL_FORMAT_VERSION = 1


def _check_batch(config: MaceTnpConfig, observational, targets, values):
    """Validate ``predict_batch`` inputs; returns float32 NumPy arrays."""
    obs = np.asarray(observational, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.float32)
    values = np.asarray(values, dtype=np.float32)
    if obs.ndim != 3:
        raise ValueError(f"observational: expected shape (T, N, d), got {obs.shape}")
    t, n, d = obs.shape
    if d != config.num_vars:
        raise ValueError(f"observational: the model was built for d = {config.num_vars} variables "
                         f"(its Cholesky head fixes d), got d = {d}")
    if n < 2:
        raise ValueError(f"observational: needs at least 2 samples per task, got {n}")
    if targets.shape != (t, d):
        raise ValueError(f"targets: expected shape {(t, d)}, got {targets.shape}")
    if values.shape not in ((t,), (t, d)):
        raise ValueError(f"values: expected shape {(t,)} or {(t, d)}, got {values.shape}")
    if not np.all(np.isfinite(obs)):
        raise ValueError("observational: contains NaN or inf")
    if not np.all((targets == 0) | (targets == 1)) or np.any(targets.sum(-1) == 0):
        raise ValueError("targets: each row must be a 0/1 mask with at least one target")
    if not np.all(np.isfinite(np.where(targets > 0, values if values.ndim == 2 else values[:, None], 0))):
        raise ValueError("values: the intervention values of the targets must be finite")
    return obs, targets, values


@dataclasses.dataclass(frozen=True, eq=False)
class FittedMaceTnp:
    """A MACE-TNP joint extension with trained parameters.

    Attributes:
        config: the :class:`MaceTnpConfig` (architecture; fixes ``d``).
        params: Flax variables ``{"params": ...}`` of :class:`MaceTnp`.
        info: JSON-serialisable training summary (steps, best validation NLL, data, wall time).
    """

    config: MaceTnpConfig
    params: dict
    info: dict = dataclasses.field(default_factory=dict)

    def predict_batch(self, observational: Any, targets: Any, values: Any,
                      variable_names=None) -> GaussianMixture:
        """Predict the joint post-interventional distribution of many tasks (one compiled call).

        Args:
            observational: ``(T, N, d)`` observational datasets, ``d == config.num_vars``.
            targets: ``(T, d)`` 0/1 intervention target masks.
            values: ``(T,)`` intervention values (privileged information), or ``(T, d)``
                per-variable values of which only the target entries are read.
            variable_names: optional ``d`` names for the returned mixture.

        Returns:
            :class:`GaussianMixture` with batch shape ``(T,)`` over all ``d`` variables, the
            intervened ones included.

        Raises:
            ValueError: wrong shapes (``d`` other than the head's), fewer than 2 samples,
                non-finite data or values, or a target row that is not a non-empty 0/1 mask.
        """
        obs, targets, values = _check_batch(self.config, observational, targets, values)
        mix = predict_arrays(self.config, self.params, jnp.asarray(obs), jnp.asarray(targets), jnp.asarray(values))
        return mix.with_names(variable_names) if variable_names is not None else mix

    def predict(self, obs: Any, target: Any, value: float) -> GaussianMixture:
        """Predict p(V | do(V_target = value)) for one observational dataset.

        Args:
            obs: ``(N, d)`` observational samples, an array or a pandas DataFrame (whose column
                names then name the variables).
            target: the intervened variable(s): an index, a column name, a list of them, or a
                boolean mask of length d.
            value: the intervention value.

        Returns:
            unbatched :class:`GaussianMixture` over all d variables.
        """
        array, names = as_observations(obs, "obs")
        mask = resolve_targets(target, names, "target")
        mix = self.predict_batch(array[None], mask[None], np.array([value], np.float32))
        return mix[0].with_names(names)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model into the folder ``path`` (layout of :mod:`activa_ppl.model_io`).

        ``config.json`` (``"format": "activa_ppl.mace_tnp"``) is the commit point: the
        content-addressed parameter file is written first, then ``config.json`` atomically,
        then parameter files it no longer names are removed.
        """
        return write_model_folder(path, MODEL_FORMAT, MODEL_FORMAT_VERSION, self.config.to_dict(),
                                  self.params, self.info)


def load_mace_tnp(path: str | os.PathLike) -> FittedMaceTnp:
    """Load a model saved by :meth:`FittedMaceTnp.save` (never executes code from the files).

    Raises:
        CheckpointError: missing files, another format (e.g. an ACTIVA model), checksum
            mismatch, or parameters that do not fit the configuration.
    """
    def build(raw_config):
        model_config = MaceTnpConfig.from_dict(raw_config)
        return model_config, jax.eval_shape(lambda k: init_params(model_config, k), jax.random.PRNGKey(0))

    model_config, params, info, _ = read_model_folder(path, MODEL_FORMAT, MODEL_FORMAT_VERSION, "MACE-TNP",
                                                      build)
    return FittedMaceTnp(config=model_config, params=params, info=info)
