"""A trained ACTIVA model: prediction, saving and loading.

The saved-model folder layout (``config.json`` as the commit point, content-addressed
parameters) is documented in :mod:`activa_ppl.model_io`.

Importing this module imports JAX but not NumPyro or Flax (the model is imported when a model is
built or loaded), so that a stored prediction ([`activa_ppl.exported`][activa_ppl.exported])
can share its input checks and shape buckets without them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from activa_ppl.config import ActivaConfig
from activa_ppl.disk_memo import memoized
from activa_ppl.memory import check_memory, predict_bytes
from activa_ppl.mixture import GaussianMixture, as_prng_key
from activa_ppl.model_info import (describe_model, intervention_index, intervention_label, intervention_values,
                                   training_ranges, warn_if_out_of_range)
from activa_ppl.model_io import read_model_folder, write_model_folder
from activa_ppl.validation import (as_intervention_indices, as_observation_batch, as_observations,
                                   as_target_masks, check_intervention_index, check_positive_int,
                                   check_seed, resolve_targets)

if TYPE_CHECKING:  # imported where a model is built: NumPyro and Flax are not needed before
    from activa_ppl.model import Activa

__all__ = ["FittedActiva", "SAMPLE_BUCKET_MIN", "SAMPLE_BUCKETS_PER_OCTAVE", "load", "pad_samples",
           "sample_bucket"]

MODEL_FORMAT = "activa_ppl.model"
MODEL_FORMAT_VERSION = 1

#: Smallest sample-axis bucket of :meth:`FittedActiva.predict` / ``predict_batch``.
SAMPLE_BUCKET_MIN = 16
#: Buckets per doubling of ``N`` above :data:`SAMPLE_BUCKET_MIN`: padding adds at most a
#: quarter of the rows.
SAMPLE_BUCKETS_PER_OCTAVE = 4


def sample_bucket(num_samples: int) -> int:
    """The padded sample count ``N`` of a dataset of ``num_samples`` rows at prediction.

    ``N`` is rounded up to a multiple of ``max(SAMPLE_BUCKET_MIN, 2^k / (2 · SAMPLE_BUCKETS_PER_OCTAVE))``
    where ``2^k`` is the power of two at or above ``num_samples``: 16, 32, 48, 64, 80, 96, 112,
    128, 160, 192, 224, 256, 320, ..., 1024, 1280, ...: four buckets per doubling, so padding
    adds at most a quarter of the rows (the attention over samples is quadratic in ``N``, the
    rest linear). Every ``N`` in a bucket shares one compiled prediction function.
    """
    n = int(num_samples)
    if n <= SAMPLE_BUCKET_MIN:
        return SAMPLE_BUCKET_MIN
    octave = 1 << (n - 1).bit_length()  # the power of two at or above n
    step = max(SAMPLE_BUCKET_MIN, octave // (2 * SAMPLE_BUCKETS_PER_OCTAVE))
    return -(-n // step) * step


def pad_samples(observational: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad the sample axis of ``observational (Q, N, d)`` to ``size >= N`` rows.

    Returns ``(padded (Q, size, d), mask (Q, size) bool)``, mask True for the ``N`` real rows.
    The padded rows repeat the real rows cyclically (finite values in the data's range, so no
    overflow in the networks); the mask keeps them out of the prediction
    (:func:`~activa_ppl.model.predictive_arrays`).
    """
    q, n, _ = observational.shape
    if size < n:
        raise ValueError(f"pad_samples: size {size} is smaller than the {n} samples")
    padded = np.take(observational, np.arange(size) % n, axis=1)
    mask = np.broadcast_to(np.arange(size) < n, (q, size))
    return padded, mask


def _single_query_arrays(activa: Activa, params, key, observational, targets, intervention_index,
                         num_latents: int, mask=None):
    """:func:`~activa_ppl.model.predictive_arrays` of one query with the query axis dropped inside
    the compiled call (``FittedActiva.predict``): one dispatch and one mixture validation instead
    of slicing and re-validating a batch of one on the host."""
    from activa_ppl.model import predictive_arrays

    weights, locs, covariances = predictive_arrays(activa, params, key, observational, targets,
                                                   intervention_index, num_latents, mask)
    return weights[0], locs[0], covariances[0]


_single_query_jit = jax.jit(_single_query_arrays, static_argnums=(0, 6))


def _bucketed(observational: np.ndarray, bucket: bool):
    """``(observational, ())`` unchanged, or padded to its :func:`sample_bucket` with ``(mask,)``.

    A dataset whose ``N`` is a bucket size already runs the unmasked function (no padding, no
    mask), as with ``bucket=False``."""
    if not isinstance(bucket, (bool, np.bool_)):
        raise ValueError(f"bucket: expected True or False, got {bucket!r}")
    if not bucket or sample_bucket(observational.shape[1]) == observational.shape[1]:
        return observational, ()
    padded, mask = pad_samples(observational, sample_bucket(observational.shape[1]))
    return padded, (mask,)


class _Query(NamedTuple):
    """One checked :meth:`FittedActiva.predict` query (:func:`_checked_query`)."""

    obs: np.ndarray  # (N, d) float32
    names: tuple  # the d variable names
    mask: np.ndarray  # (d,) float32 target mask
    index: int  # intervention index
    label: str  # e.g. "do(X0 = 5)"
    seed: Any
    num_latents: int


def _checked_sampling(config: ActivaConfig, seed, num_latents) -> tuple[Any, int]:
    """The checked ``(seed, num_latents)`` (``num_latents=None``: the configured default)."""
    seed = check_seed(seed, "seed")
    num_latents = (config.num_predictive_latents if num_latents is None
                   else check_positive_int(num_latents, "num_latents"))
    return seed, num_latents


def _checked_query(config: ActivaConfig, info: dict, obs, target, intervention, seed, num_latents) -> _Query:
    """The arguments of :meth:`FittedActiva.predict` checked against ``config`` and ``info`` (also
    by [`activa_ppl.exported`][activa_ppl.exported]); warns when ``obs`` is out of the training
    range (and records reconstructed ranges in ``info``)."""
    array, names = as_observations(obs, "obs")
    mask = resolve_targets(target, names, "target")
    values = intervention_values(config.to_dict(), info)
    targets = [n for n, m in zip(names, mask) if m]
    index = intervention_index(intervention, values, targets, "intervention")
    index = check_intervention_index(index, config.num_interventions, "intervention")
    seed, num_latents = _checked_sampling(config, seed, num_latents)
    if "training_data" not in info:  # reconstructed once for older models
        info["training_data"] = training_ranges(info)
    warn_if_out_of_range(info.get("model_name", "(unnamed)"), info["training_data"], array,
                         standardized=bool(config.standardize), stacklevel=4)  # the caller of predict
    return _Query(array, names, mask, index, intervention_label(targets, values[index], index), seed, num_latents)


def _check_predict_memory(config: ActivaConfig, shape: tuple[int, int, int], num_latents: int) -> None:
    """Refuse a prediction of padded inputs ``shape = (Q, N, d)`` beyond the memory limit."""
    q, n, d = shape
    check_memory(predict_bytes(config.to_dict(), q, n, d, num_latents),
                 f"predicting {q} quer{'y' if q == 1 else 'ies'} of N = {n} samples (padded) and d = {d} "
                 f"variables with num_latents = {num_latents}")


def _checked_names(variable_names, d: int) -> tuple[str, ...]:
    """``variable_names`` as a tuple of ``d`` distinct strings (any iterable), else ValueError."""
    try:
        names = None if isinstance(variable_names, (str, bytes)) else tuple(variable_names)
    except TypeError:
        names = None
    if names is None or len(names) != d or not all(isinstance(n, str) for n in names) or len(set(names)) != d:
        raise ValueError(f"variable_names: expected {d} distinct strings, got {variable_names!r:.200}")
    return names


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class FittedActiva:
    """ACTIVA with trained parameters.

    Attributes:
        activa: the :class:`~activa_ppl.model.Activa` (architecture and objective).
        params: the SVI parameters, ``{"<module>$params": flax params}`` (and ``target_log_sd``
            with ``ActivaConfig(exact_targets=True)``).
        info: JSON-serialisable training summary (steps, best validation NLL, data, wall time).
    """

    activa: Activa
    params: dict
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def config(self) -> ActivaConfig:
        """The model's :class:`ActivaConfig`."""
        return self.activa.config

    def __repr__(self) -> str:
        size = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(self.params))
        return f"FittedActiva({describe_model(self.info.get('model_name'), self.config.to_dict(), self.info)}, {size:,} parameters)"

    def predict(self, obs: Any, target: Any, intervention: Any = 0, seed: Any = 0,
                num_latents: int | None = None, bucket: bool = True) -> GaussianMixture:
        """Predict p(V | do(V_target = v_intervention)) from observational samples, zero-shot.

        Args:
            obs: ``(N, d)`` observational samples, an array or a pandas DataFrame (whose column
                names then name the variables).
            target: the intervened variable(s): an index, a column name, a list of them, or a
                boolean mask of length d.
            intervention: the index i of the intervention value (0 ≤ i < |I|), or the value
                itself per target, ``{"X0": 5.0}`` (refused when the model was not trained on
                that value; :func:`~activa_ppl.model_info.intervention_values` lists them).
            seed: int or PRNG key for the latent draws.
            num_latents: S, latent draws (default ``config.num_predictive_latents``).
            bucket: pad the N samples to :func:`sample_bucket` ``(N)`` rows with a mask
                (default), so that datasets of different N in one bucket (e.g. 37, 52 and 60
                rows: bucket 64) share one compiled function instead of compiling per N. The
                prediction equals the unpadded one to float tolerance (~1e-6 relative), not
                bit for bit. ``False``: compile for the exact N (the computation before
                buckets existed, bit for bit; faster per call when N is fixed and far below
                its bucket).

        Returns:
            :class:`GaussianMixture` over all d variables with S·B components; its
            ``intervention`` names the query, e.g. ``"do(X0 = 5)"``.

        Warns:
            OutOfTrainingRangeWarning: ``obs`` is unlike the training data (number of
                variables or samples, a variable's mean or scale outside the trained range;
                :mod:`activa_ppl.model_info`).

        Raises:
            ValueError: bad input, named in the message: ``obs`` (not a numeric 2-d array with
                at least 2 rows and 1 column, NaN/inf, magnitude above 1e15, duplicate or
                non-numeric columns), ``target`` (unknown name, index out of range, nothing
                targeted), ``intervention`` (not an integer in ``0..|I|-1``), ``seed`` or
                ``num_latents``.
        """
        # Validated once, with the single-dataset messages (column names, ``obs``/``target``/
        # ``intervention``), then predicted as a batch of one by the path of predict_batch.
        q = _checked_query(self.config, self.info, obs, target, intervention, seed, num_latents)
        mix = self._predict_checked(q.obs[None], q.mask[None], np.array([q.index], np.int32), q.seed,
                                    q.num_latents, q.names, bucket, single=True)
        return dataclasses.replace(mix, intervention=q.label)

    def predict_batch(self, observational: Any, targets: Any, intervention_index: Any, seed: Any = 0,
                      num_latents: int | None = None, variable_names=None,
                      bucket: bool = True) -> GaussianMixture:
        """Predict many queries at once (one compiled call).

        Args:
            observational: ``(Q, N, d)`` observational datasets.
            targets: ``(Q, d)`` 0/1 target masks.
            intervention_index: ``(Q,)`` intervention indices.
            seed, num_latents, bucket: as in :meth:`predict` (``bucket`` pads the sample axis
                N; the query axis Q and the variables d are not bucketed).
            variable_names: optional names of the d variables.

        Returns:
            batched :class:`GaussianMixture` with batch shape ``(Q,)``.

        Raises:
            ValueError: bad input, named in the message (shapes, dtypes, NaN/inf, magnitude
                above 1e15, masks that are not 0/1 or target nothing, indices outside
                ``0..|I|-1``, ``seed``, ``num_latents``, ``variable_names`` not d distinct
                strings), or a call whose estimated memory exceeds the limit
                (:mod:`activa_ppl.memory`).
        """
        obs, targets, index, seed, num_latents = self._checked_batch(
            observational, targets, intervention_index, seed, num_latents)
        d = obs.shape[-1]
        if variable_names is not None:
            variable_names = _checked_names(variable_names, d)
        return self._predict_checked(obs, targets, index, seed, num_latents, variable_names, bucket)

    def _checked_batch(self, observational, targets, intervention_index, seed, num_latents):
        """The checked ``(obs (Q, N, d), targets (Q, d), index (Q,), seed, num_latents)``."""
        obs = as_observation_batch(observational, "observational")
        q, n, d = obs.shape
        targets = as_target_masks(targets, q, d, "targets")
        index = as_intervention_indices(intervention_index, q, self.config.num_interventions,
                                        "intervention_index")
        return (obs, targets, index) + _checked_sampling(self.config, seed, num_latents)

    def _predict_checked(self, obs, targets, index, seed, num_latents, variable_names, bucket,
                         single: bool = False) -> GaussianMixture:
        """The prediction of :meth:`predict` and :meth:`predict_batch` from validated inputs.

        Args:
            obs, targets, index: float32 ``(Q, N, d)``, float32 ``(Q, d)`` and int32 ``(Q,)``
                arrays, already checked (nothing is validated again here but ``bucket``).
            seed, num_latents: checked by :func:`_checked_sampling`.
            variable_names: the d names, or None.
            bucket: as in :meth:`predict`.
            single: ``Q == 1`` and the mixture without the query axis (:meth:`predict`): one
                compiled call that drops the axis inside (:func:`_single_query_arrays`).
        """
        obs, sample_mask = _bucketed(obs, bucket)
        _check_predict_memory(self.config, obs.shape, num_latents)
        if single:
            weights, locs, covariances = _single_query_jit(
                self.activa, self.params, as_prng_key(seed), jnp.asarray(obs), jnp.asarray(targets),
                jnp.asarray(index, jnp.int32), num_latents, *sample_mask,
            )
            return GaussianMixture(weights=weights, locs=locs, covariances=covariances,
                                   variable_names=variable_names)
        from activa_ppl.model import predictive_mixture

        return predictive_mixture(
            self.activa, self.params, as_prng_key(seed), jnp.asarray(obs), jnp.asarray(targets),
            jnp.asarray(index, jnp.int32), num_latents, variable_names=variable_names,
            mask=jnp.asarray(sample_mask[0]) if sample_mask else None,
        )

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the model into the folder ``path`` (see the module docstring for the layout)."""
        return write_model_folder(path, MODEL_FORMAT, MODEL_FORMAT_VERSION, self.config.to_dict(),
                                  self.params, self.info)


def load(path: str | os.PathLike) -> FittedActiva:
    """Load a model saved by :meth:`FittedActiva.save` (never executes code from the files).

    Raises:
        CheckpointError: missing files, wrong format, an invalid configuration, checksum
            mismatch, or parameters that do not fit the configuration (checked against each
            array's header before its data is read).
    """
    from activa_ppl.model import Activa

    def build(model_config):
        activa = Activa(ActivaConfig.from_dict(model_config))
        return activa, expected_param_shapes(activa)

    activa, params, info, _ = read_model_folder(path, MODEL_FORMAT, MODEL_FORMAT_VERSION, "ACTIVA", build)
    return FittedActiva(activa=activa, params=params, info=info)


def expected_param_shapes(activa: Activa):
    """Parameter shapes of ``activa`` (abstract initialisation: nothing is computed; remembered
    across ``activa`` commands by :mod:`activa_ppl.disk_memo`)."""
    from flax.traverse_util import flatten_dict, unflatten_dict

    def encode(shapes):
        return {k: [list(v.shape), np.dtype(v.dtype).str] for k, v in flatten_dict(shapes, sep="/").items()}

    def decode(flat):
        return unflatten_dict({k: jax.ShapeDtypeStruct(tuple(s), np.dtype(t)) for k, (s, t) in flat.items()},
                              sep="/")

    return memoized("param_shapes", activa.config.to_dict(),
                    lambda: jax.eval_shape(activa.init_params, jax.random.PRNGKey(0)), encode, decode)
