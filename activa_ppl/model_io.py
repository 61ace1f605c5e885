"""Saved-model folders and parameter files, shared by every model type (ACTIVA, MACE-TNP).

Layout of a saved model (a folder; also the layout of every model in the zoo)::

    <path>/config.json              format, model configuration, training summary, name and
                                    SHA-256 of the parameter file
    <path>/params-<sha256[:12]>.npz parameters (``<module>$params/<layer>/<name>``), written by
                                    :func:`activa_ppl.checkpoint.save_arrays`

``config.json`` is the commit point: a save first writes the new parameter file under its own
content-addressed name, then atomically replaces ``config.json``, then deletes parameter files
that no longer belong to it. An interrupted save therefore always leaves a ``config.json`` that
names a complete parameter file, the old one or the new one. Other files in the folder (a
model card) are left alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from activa_ppl.checkpoint import CheckpointError, atomic_write_bytes, file_sha256, load_arrays, save_arrays

__all__ = ["write_model_folder", "read_model_folder", "flatten_params", "unflatten_params", "check_params"]


def write_model_folder(path: str | os.PathLike, fmt: str, version: int, model_config: dict, params,
                       info: dict) -> Path:
    """Write a saved-model folder (the layout of the module docstring), shared by every model type.

    The content-addressed parameter file is written first, then ``config.json`` atomically (the
    commit point), then parameter files it no longer names are removed.

    Args:
        path: the folder (created).
        fmt, version: the ``format`` and ``format_version`` entries of ``config.json``.
        model_config: JSON-serialisable architecture configuration.
        params: the parameter pytree (flattened with :func:`flatten_params`).
        info: JSON-serialisable training summary.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    flat = flatten_params(params)
    config = {"format": fmt, "format_version": version, "model_config": model_config, "info": info}
    json.dumps(config)  # fail early, before touching the folder, if info is not JSON
    staging = path / ".params.npz.staging"
    new_params = None
    try:
        save_arrays(staging, flat, {"model_config": model_config})
        digest = file_sha256(staging)
        new_params = path / f"params-{digest[:12]}.npz"
        os.replace(staging, new_params)
        config.update(params_file=new_params.name, params_sha256=digest)
        text = json.dumps(config, indent=2, sort_keys=True).encode()
        atomic_write_bytes(path / "config.json", lambda f: f.write(text))  # the commit point
    except BaseException:
        staging.unlink(missing_ok=True)
        if new_params is not None and new_params.name != _committed_params(path):
            new_params.unlink(missing_ok=True)
        raise
    for stale in path.glob("params-*.npz"):
        if stale != new_params:
            stale.unlink()
    return path


def _committed_params(path: Path) -> str | None:
    """The parameter file named by ``path/config.json``, if it can be read."""
    try:
        return json.loads((path / "config.json").read_text()).get("params_file")
    except (OSError, ValueError, AttributeError):
        return None


def read_model_folder(path: str | os.PathLike, fmt: str, version: int, kind: str):
    """Read a folder written by :func:`write_model_folder`, checking everything but the parameter
    shapes (which need the model: see :func:`check_params`).

    Args:
        path: the folder.
        fmt, version: the expected ``format`` and ``format_version``.
        kind: the model's name in error messages (e.g. ``"ACTIVA"``).

    Returns:
        ``(model_config dict, params pytree, info dict, config.json path)``.

    Raises:
        CheckpointError: missing files, invalid JSON, another format or version, checksum
            mismatch, an unsafe or corrupted parameter file.
    """
    path = Path(path)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{path}: not a saved {kind} model (no config.json)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{config_path}: not valid JSON ({e})") from e
    if not isinstance(config, dict) or config.get("format") != fmt or config.get("format_version") != version:
        found = (config.get("format"), config.get("format_version")) if isinstance(config, dict) else None
        article = "an" if kind[:1].upper() in "AEIOU" else "a"
        raise CheckpointError(f"{config_path}: not {article} {kind} model of a supported format and version "
                              f"(found {found}, expected {(fmt, version)})")
    params_name = config.get("params_file")
    if not isinstance(params_name, str) or Path(params_name).name != params_name:
        raise CheckpointError(f"{config_path}: invalid params_file entry {params_name!r}")
    params_path = path / params_name
    if not params_path.is_file():
        raise CheckpointError(f"{params_path}: missing (named by {config_path})")
    if file_sha256(params_path) != config.get("params_sha256"):
        raise CheckpointError(f"{params_path}: SHA-256 differs from config.json; the file is corrupted")
    arrays, _ = load_arrays(params_path)
    info = config.get("info", {})
    if not isinstance(info, dict):
        raise CheckpointError(f"{config_path}: 'info' must be a JSON object, got {type(info).__name__}")
    if "model_config" not in config:
        raise CheckpointError(f"{config_path}: no model_config entry")
    return config["model_config"], unflatten_params(arrays), info, config_path


def flatten_params(params) -> dict[str, np.ndarray]:
    """``{"<module>$params": {...}}`` → ``{"<module>$params/<layer>/<name>": array}`` (NumPy)."""
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def unflatten_params(flat: dict[str, np.ndarray]) -> dict:
    """Inverse of :func:`flatten_params` (JAX arrays)."""
    return traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()}, sep="/")


def check_params(expected_shapes, params, path) -> None:
    """Refuse parameters whose names, shapes or dtypes differ from ``expected_shapes`` (a pytree of
    ``jax.ShapeDtypeStruct``, e.g. from ``jax.eval_shape``) or that hold NaN/inf."""
    expected = traverse_util.flatten_dict(expected_shapes, sep="/")
    got = traverse_util.flatten_dict(params, sep="/")
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got)
                   if expected[k].shape != got[k].shape or expected[k].dtype != got[k].dtype)
    if missing or extra or wrong:
        raise CheckpointError(
            f"{path}: parameters do not fit the configuration "
            f"(missing {missing[:3]}, unexpected {extra[:3]}, wrong shape or dtype {wrong[:3]})"
        )
    non_finite = sorted(k for k, v in got.items() if not bool(jnp.all(jnp.isfinite(v))))
    if non_finite:
        raise CheckpointError(f"{path}: {len(non_finite)} parameter array(s) hold NaN or inf, "
                              f"e.g. {non_finite[:3]}; refusing a diverged model")
