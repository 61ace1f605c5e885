"""A trained ACTIVA model: prediction, saving and loading.

Saved model layout (a folder, also the layout of every model in the zoo)::

    <path>/config.json   format, ActivaConfig, training summary, SHA-256 of params.npz
    <path>/params.npz    parameters (``<module>$params/<layer>/<name>``) via activa_ppl.checkpoint

Saving writes a complete new folder beside the target and swaps it in, so an interrupted save
never leaves a half-written model where a good one was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from activa_ppl.checkpoint import CheckpointError, load_arrays, save_arrays
from activa_ppl.config import ActivaConfig
from activa_ppl.mixture import GaussianMixture, as_prng_key
from activa_ppl.model import MODULES, Activa, predictive_mixture
from activa_ppl.validation import as_observations, check_intervention_index, resolve_targets

__all__ = ["FittedActiva", "load"]

MODEL_FORMAT = "activa_ppl.model"
MODEL_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True, eq=False)
class FittedActiva:
    """ACTIVA with trained parameters.

    Attributes:
        activa: the :class:`~activa_ppl.model.Activa` (architecture and objective).
        params: the SVI parameters, ``{"<module>$params": flax params}``.
        info: JSON-serialisable training summary (steps, best validation NLL, data, wall time).
    """

    activa: Activa
    params: dict
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def config(self) -> ActivaConfig:
        """The model's :class:`ActivaConfig`."""
        return self.activa.config

    def predict(self, obs: Any, target: Any, intervention: int = 0, seed: Any = 0,
                num_latents: int | None = None) -> GaussianMixture:
        """Predict p(V | do(V_target = v_intervention)) from observational samples, zero-shot.

        Args:
            obs: ``(N, d)`` observational samples, an array or a pandas DataFrame (whose column
                names then name the variables).
            target: the intervened variable(s): an index, a column name, a list of them, or a
                boolean mask of length d.
            intervention: the index i of the intervention value (0 ≤ i < |I|).
            seed: int or PRNG key for the latent draws.
            num_latents: S, latent draws (default ``config.num_predictive_latents``).

        Returns:
            :class:`GaussianMixture` over all d variables with S·B components.
        """
        array, names = as_observations(obs, "obs")
        mask = resolve_targets(target, names, "target")
        index = check_intervention_index(intervention, self.config.num_interventions, "intervention")
        mix = self.predict_batch(array[None], mask[None], np.array([index]), seed=seed,
                                 num_latents=num_latents)
        return mix[0].with_names(names)

    def predict_batch(self, observational: Any, targets: Any, intervention_index: Any, seed: Any = 0,
                      num_latents: int | None = None, variable_names=None) -> GaussianMixture:
        """Predict many queries at once (one compiled call).

        Args:
            observational: ``(Q, N, d)`` observational datasets.
            targets: ``(Q, d)`` 0/1 target masks.
            intervention_index: ``(Q,)`` intervention indices.

        Returns:
            batched :class:`GaussianMixture` with batch shape ``(Q,)``.
        """
        obs = np.asarray(observational, dtype=np.float32)
        targets = np.asarray(targets, dtype=np.float32)
        index = np.asarray(intervention_index)
        if obs.ndim != 3:
            raise ValueError(f"observational: expected shape (Q, N, d), got {obs.shape}")
        q, n, d = obs.shape
        if n < 2:
            raise ValueError(f"observational: needs at least 2 samples per query, got {n}")
        if targets.shape != (q, d):
            raise ValueError(f"targets: expected shape {(q, d)}, got {targets.shape}")
        if index.shape != (q,) or not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"intervention_index: expected {q} integers, got shape {index.shape} dtype {index.dtype}")
        if not np.all(np.isfinite(obs)):
            raise ValueError("observational: contains NaN or inf")
        if np.any((index < 0) | (index >= self.config.num_interventions)):
            raise ValueError(
                f"intervention_index: values must lie in 0..{self.config.num_interventions - 1}"
            )
        if not np.all((targets == 0) | (targets == 1)) or np.any(targets.sum(-1) == 0):
            raise ValueError("targets: each row must be a 0/1 mask with at least one target")
        return predictive_mixture(
            self.activa, self.params, as_prng_key(seed), jnp.asarray(obs), jnp.asarray(targets),
            jnp.asarray(index, jnp.int32), num_latents or self.config.num_predictive_latents,
            variable_names=variable_names,
        )

    # -- persistence -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``params.npz`` into the folder ``path`` (replaced whole)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(self.params, sep="/").items()}
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            save_arrays(tmp / "params.npz", flat, {"model_config": self.config.to_dict()})
            config = {
                "format": MODEL_FORMAT,
                "format_version": MODEL_FORMAT_VERSION,
                "model_config": self.config.to_dict(),
                "info": self.info,
                "params_sha256": _file_sha256(tmp / "params.npz"),
            }
            with open(tmp / "config.json", "w") as f:
                json.dump(config, f, indent=2, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load(path: str | os.PathLike) -> FittedActiva:
    """Load a model saved by :meth:`FittedActiva.save` (never executes code from the files).

    Raises:
        CheckpointError: missing files, wrong format, checksum mismatch, or parameters that do
            not fit the configuration.
    """
    path = Path(path)
    config_path, params_path = path / "config.json", path / "params.npz"
    if not config_path.is_file() or not params_path.is_file():
        raise CheckpointError(f"{path}: not a saved ACTIVA model (needs config.json and params.npz)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_path}: not valid JSON ({e})") from e
    if config.get("format") != MODEL_FORMAT or config.get("format_version") != MODEL_FORMAT_VERSION:
        raise CheckpointError(f"{config_path}: unsupported format {config.get('format')!r} "
                              f"version {config.get('format_version')!r}")
    if _file_sha256(params_path) != config.get("params_sha256"):
        raise CheckpointError(f"{params_path}: SHA-256 differs from config.json; the file is corrupted")
    arrays, _ = load_arrays(params_path)
    try:
        activa = Activa(ActivaConfig.from_dict(config["model_config"]))
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{config_path}: invalid model_config ({e})") from e
    params = traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in arrays.items()}, sep="/")
    _check_params(activa, params, path)
    return FittedActiva(activa=activa, params=params, info=config.get("info", {}))


def expected_param_shapes(activa: Activa, num_vars: int = 2, num_samples: int = 4):
    """Parameter shapes of ``activa`` (from an abstract initialisation; nothing is computed)."""
    cfg = activa.config
    obs = jnp.zeros((1, num_samples, num_vars))
    rep = jnp.zeros((1, num_samples, num_vars, cfg.num_interventions))
    h = jnp.zeros((1, num_vars, cfg.embed_dim))
    inputs = {
        "obs_embedding": (obs, rep), "int_embedding": (obs, rep), "prior": (h,),
        "decoder": (jnp.zeros((1, num_vars)),), "posterior": (h, h),
    }
    key = jax.random.PRNGKey(0)
    return {
        f"{name}$params": jax.eval_shape(lambda: activa.modules[name].init(key, *inputs[name])["params"])
        for name in MODULES
    }


def _check_params(activa: Activa, params, path) -> None:
    expected = traverse_util.flatten_dict(expected_param_shapes(activa), sep="/")
    got = traverse_util.flatten_dict(params, sep="/")
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k].shape != got[k].shape)
    if missing or extra or wrong:
        raise CheckpointError(
            f"{path}: parameters do not fit the configuration "
            f"(missing {missing[:3]}, unexpected {extra[:3]}, wrong shape {wrong[:3]})"
        )
