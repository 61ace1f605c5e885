"""Saved-model folders and parameter files, shared by every model type (ACTIVA, MACE-TNP).

Layout of a saved model (a folder; also the layout of every model in the zoo)::

    <path>/config.json              format, model configuration, training summary, name and
                                    SHA-256 of the parameter file
    <path>/params-<sha256[:12]>.npz parameters (``<module>$params/<layer>/<name>``, and top-level
                                    ``param`` sites by their name, e.g. ``target_log_sd``),
                                    written by :func:`activa_ppl.checkpoint.save_arrays`

``config.json`` is the commit point: a save first writes the new parameter file under its own
content-addressed name (from a staging file of a unique name), then atomically replaces
``config.json``, then deletes the parameter file the replaced ``config.json`` named. An
interrupted save therefore always leaves a ``config.json`` that names a complete parameter
file, the old one or the new one. Saves into one folder hold :func:`~activa_ppl.checkpoint.folder_lock`,
so concurrent saves (threads or processes) run one after the other and the last one wins whole.
Only files this format wrote are ever removed: the parameter file no longer named, parameter
files left by a killed save (``params-<12 hex digits>.npz`` whose content hash matches its
name) and temporary files of killed writers; other files in the folder (a model card, a
``params-mybackup.npz``) are left alone.

A reader retries when ``config.json`` changes under it (a concurrent save committed), and reads
the parameter file only after checking each array's header against the shapes the configuration
implies (a forged file cannot make it allocate more).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from activa_ppl.checkpoint import (CheckpointError, atomic_write_bytes, content_addressed, file_sha256,
                                   folder_lock, load_arrays, remove_stale_temporaries, save_arrays)
from activa_ppl.validation import MAX_ABS_VALUE

_PARAMS_NAME = re.compile(r"^params-([0-9a-f]{12})\.npz$")

__all__ = ["write_model_folder", "read_model_folder", "read_model_config", "flatten_params", "unflatten_params",
           "check_params"]


def write_model_folder(path: str | os.PathLike, fmt: str, version: int, model_config: dict, params,
                       info: dict) -> Path:
    """Write a saved-model folder (the layout of the module docstring), shared by every model type.

    Under the folder's lock: the content-addressed parameter file is written first, then
    ``config.json`` atomically (the commit point), then the parameter file it no longer names
    and leftovers of killed saves are removed.

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
    with folder_lock(path):
        remove_stale_temporaries(path)
        previous = _committed_params(path)
        new_params, digest = content_addressed(
            path, "params-", ".npz", lambda staging: save_arrays(staging, flat, {"model_config": model_config}))
        try:
            config.update(params_file=new_params.name, params_sha256=digest)
            text = json.dumps(config, indent=2, sort_keys=True).encode()
            atomic_write_bytes(path / "config.json", lambda f: f.write(text))  # the commit point
        except BaseException:
            if new_params.name != _committed_params(path) and new_params.name != previous:
                new_params.unlink(missing_ok=True)
            raise
        for stale in path.glob("params-*.npz"):
            if stale != new_params and _written_by_us(stale, previous):
                stale.unlink(missing_ok=True)
    return path


def _written_by_us(file: Path, previous: str | None) -> bool:
    """Whether ``file`` is a parameter file of this format: the one the replaced ``config.json``
    named, or one whose name is the start of its content's SHA-256 (left by a killed save)."""
    match = _PARAMS_NAME.match(file.name)
    if match is None or file.is_symlink() or not file.is_file():
        return False
    return file.name == previous or file_sha256(file)[:12] == match.group(1)


def _committed_params(path: Path) -> str | None:
    """The parameter file named by ``path/config.json``, if it can be read."""
    try:
        return json.loads((path / "config.json").read_text()).get("params_file")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None


def read_model_folder(path: str | os.PathLike, fmt: str, version: int, kind: str,
                      build: Callable[[dict], tuple[Any, Any]]):
    """Read a folder written by :func:`write_model_folder`.

    Args:
        path: the folder.
        fmt, version: the expected ``format`` and ``format_version``.
        kind: the model's name in error messages (e.g. ``"ACTIVA"``).
        build: ``build(model_config) -> (model, expected parameter shapes)``, the shapes a pytree
            of ``jax.ShapeDtypeStruct`` (``jax.eval_shape`` of the initialisation); its
            ``TypeError``/``ValueError``/``KeyError``/``OverflowError`` become
            :class:`CheckpointError`. The parameter file's array headers are checked against
            these shapes before any data is read.

    Returns:
        ``(model, params pytree, info dict, config.json path)``.

    Raises:
        CheckpointError: missing files, invalid JSON, another format or version, an invalid
            model configuration, checksum mismatch, an unsafe, corrupted or mis-shaped parameter
            file, a parameter file that is a link leaving the folder, NaN/inf or values of
            magnitude above 1e15.
    """
    path = Path(path)
    for attempt in range(3):  # a concurrent save may replace config.json between our two reads
        config, config_path = _read_config(path, fmt, version, kind)
        params_path = path / config["params_file"]
        try:
            if not params_path.is_file():
                raise CheckpointError(f"{params_path}: missing (named by {config_path})")
            if file_sha256(params_path) != config.get("params_sha256"):
                raise CheckpointError(f"{params_path}: SHA-256 differs from config.json; the file is corrupted")
        except (CheckpointError, OSError):
            if attempt < 2 and _read_config_text(config_path) != config.get("_text"):
                continue
            raise
        break
    _check_numbers(config["model_config"], config_path)
    try:
        model, shapes = build(config["model_config"])
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise CheckpointError(f"{config_path}: invalid model_config ({type(e).__name__}: {e})") from e
    expected = _flatten(shapes)
    arrays, _ = load_arrays(params_path, {k: (tuple(v.shape), np.dtype(v.dtype).str)
                                          for k, v in expected.items()})
    params = unflatten_params(arrays)
    check_params(shapes, params, path)
    return model, params, config["info"], config_path


def read_model_config(path: str | os.PathLike, fmt: str, version: int, kind: str) -> dict:
    """The checked ``config.json`` of a saved-model folder (``format``, ``model_config``, ``info``,
    ``params_file``, ...), without reading the parameters; raises as :func:`read_model_folder`
    does for the configuration file (the parameter file is checked only by that function)."""
    config, config_path = _read_config(Path(path), fmt, version, kind)
    _check_numbers(config["model_config"], config_path)
    return {k: v for k, v in config.items() if k != "_text"}


def _check_numbers(model_config, config_path: Path) -> None:
    """Refuse numbers in ``model_config`` that float32 cannot hold (a ``prior_variance`` of 1e300
    would only surface as non-finite predictions)."""
    items = model_config.items() if isinstance(model_config, dict) else ()
    for key, value in items:
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, float) and (abs(v) > MAX_ABS_VALUE or 0 < abs(v) < np.finfo(np.float32).tiny):
                raise CheckpointError(f"{config_path}: invalid model_config (field {key!r} = {v!r} is beyond "
                                      f"what float32 computes with; magnitudes up to {MAX_ABS_VALUE:g})")


def _read_config_text(config_path: Path) -> str | None:
    try:
        return config_path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None


def _read_config(path: Path, fmt: str, version: int, kind: str) -> tuple[dict, Path]:
    """``config.json`` parsed and checked (its text kept under ``"_text"``), and its path."""
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{path}: not a saved {kind} model (no config.json)")
    if config_path.stat().st_size > (1 << 20):
        raise CheckpointError(f"{config_path}: larger than 1 MiB; not a config.json this library wrote")
    text = _read_config_text(config_path)
    try:
        if text is None:
            raise ValueError("not UTF-8 text")
        config = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSON syntax, Unicode, integers over 4300 digits
        raise CheckpointError(f"{config_path}: not valid JSON ({e})") from e
    if not isinstance(config, dict) or config.get("format") != fmt or config.get("format_version") != version:
        found = (config.get("format"), config.get("format_version")) if isinstance(config, dict) else None
        article = "an" if kind[:1].upper() in "AEIOU" else "a"
        raise CheckpointError(f"{config_path}: not {article} {kind} model of a supported format and version "
                              f"(found {found}, expected {(fmt, version)})")
    params_name = config.get("params_file")
    if not isinstance(params_name, str) or Path(params_name).name != params_name or params_name in ("", ".", ".."):
        raise CheckpointError(f"{config_path}: invalid params_file entry {params_name!r}")
    params_path = path / params_name
    if params_path.is_symlink() and params_path.resolve().parent != path.resolve():
        raise CheckpointError(f"{params_path}: a link to {params_path.resolve()}, outside the model folder; "
                              "refusing to follow it")
    info = config.get("info", {})
    if not isinstance(info, dict):
        raise CheckpointError(f"{config_path}: 'info' must be a JSON object, got {type(info).__name__}")
    if "model_config" not in config:
        raise CheckpointError(f"{config_path}: no model_config entry")
    return {**config, "info": info, "_text": text}, config_path


def _flatten(tree, prefix: str = "") -> dict[str, Any]:
    """Nested mappings → ``{"a/b/c": leaf}`` (what Flax's ``flatten_dict(tree, sep="/")`` gives,
    here so that loading a model does not import Flax); empty mappings are dropped."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        flat.update(_flatten(value, path + "/") if isinstance(value, Mapping) else {path: value})
    return flat


def _unflatten(flat: Mapping[str, Any]) -> dict:
    """Inverse of :func:`_flatten`."""
    tree: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def flatten_params(params) -> dict[str, np.ndarray]:
    """``{"<module>$params": {...}}`` → ``{"<module>$params/<layer>/<name>": array}`` (NumPy)."""
    return {k: np.asarray(v) for k, v in _flatten(params).items()}


def unflatten_params(flat: dict[str, np.ndarray]) -> dict:
    """Inverse of :func:`flatten_params` (JAX arrays; one batched transfer, not one per array)."""
    return _unflatten(jax.device_put(dict(flat)))


def check_params(expected_shapes, params, path) -> None:
    """Refuse parameters whose names, shapes or dtypes differ from ``expected_shapes`` (a pytree of
    ``jax.ShapeDtypeStruct``, e.g. from ``jax.eval_shape``) or that hold NaN/inf or values of
    magnitude above :data:`~activa_ppl.validation.MAX_ABS_VALUE`."""
    expected = _flatten(expected_shapes)
    got = _flatten(params)
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got)
                   if expected[k].shape != got[k].shape or expected[k].dtype != got[k].dtype)
    if missing or extra or wrong:
        raise CheckpointError(
            f"{path}: parameters do not fit the configuration "
            f"(missing {missing[:3]}, unexpected {extra[:3]}, wrong shape or dtype {wrong[:3]})"
        )
    # NumPy, not jnp: one eager jnp op per array shape would compile ~90 tiny XLA programs (3 s)
    got = {k: np.asarray(v) for k, v in got.items()}
    non_finite = sorted(k for k, v in got.items() if not np.isfinite(v).all())
    if non_finite:
        raise CheckpointError(f"{path}: {len(non_finite)} parameter array(s) hold NaN or inf, "
                              f"e.g. {non_finite[:3]}; refusing a diverged model")
    huge = sorted(k for k, v in got.items() if v.size and float(np.abs(v).max()) > MAX_ABS_VALUE)
    if huge:
        raise CheckpointError(f"{path}: {len(huge)} parameter array(s) hold values of magnitude above "
                              f"{MAX_ABS_VALUE:g}, e.g. {huge[:3]}; refusing a diverged or forged model")
