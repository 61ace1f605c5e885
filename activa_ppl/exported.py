"""Stored traced predictions: a repeated ``activa predict`` without tracing the model, and
without importing Flax or NumPyro.

``activa predict`` gets its model from :func:`open_model`. With the cache on (the command turns
it on with [`enable_compilation_cache`][activa_ppl.predict_report.enable_compilation_cache];
library calls never use it unless [`disk_memo.enable`][activa_ppl.disk_memo.enable] was
called) that is an :class:`ExportedActiva`, which reads only the model's ``config.json``. Its
:meth:`~ExportedActiva.predict` checks the query exactly as
[`FittedActiva.predict`][activa_ppl.fitted.FittedActiva.predict] does (same messages and
warnings), then

* finds the stored prediction for this model configuration, padded input shape and number of
  latent draws (``<cache folder>/memo/predict-<hash>.jaxexport``, named like the other
  [`disk_memo`][activa_ppl.disk_memo] entries: also by the library's code, the versions of
  JAX, Flax, NumPy and NumPyro, and the JAX settings a trace depends on), deserializes it with
  ``jax.export`` and calls it on the model's parameters, read and checked as
  [`load`][activa_ppl.fitted.load] does (against the shapes the entry was traced with). No
  Flax model is built; JAX's persistent compilation cache then supplies the compiled code;
* otherwise loads the model ([`load`][activa_ppl.fitted.load]), traces its prediction with
  ``jax.export.export``, stores it and calls it: the computation of ``FittedActiva.predict``
  (the same trace; equal bit for bit on CPU, tested).

An entry that cannot be read, fails its checksum, was stored under another key, or does not fit
the call (parameter names, shapes, dtypes) is traced and written again. When the trace cannot be
stored (the ``flatbuffers`` package that ``jax.export`` serializes with is missing, a read-only
folder) or a stored one fails to run, the model's own ``predict`` answers. Every path returns
the answer of ``FittedActiva.predict``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

from activa_ppl import disk_memo
from activa_ppl.config import ActivaConfig
from activa_ppl.fitted import (MODEL_FORMAT, MODEL_FORMAT_VERSION, FittedActiva, _bucketed, _check_predict_memory,
                               _checked_query, _Query, _single_query_arrays)
from activa_ppl.mixture import GaussianMixture, as_prng_key
from activa_ppl.model_io import read_model_config, read_model_folder
from activa_ppl.zoo import _load_named, locate_model

__all__ = ["ENTRY_KIND", "ExportedActiva", "open_model"]

#: Kind (file-name prefix) of the stored predictions in the cache's ``memo/`` folder.
ENTRY_KIND = "predict"
_SUFFIX = ".jaxexport"
_MAGIC = b"activa_ppl.exported 1"
_LOADED: dict[Path, Any] = {}  # entry file -> jax.export.Exported, read once per process


def open_model(name_or_path) -> FittedActiva | ExportedActiva:
    """The model ``activa predict`` answers with: an :class:`ExportedActiva` when the cache is on
    ([`disk_memo.folder`][activa_ppl.disk_memo.folder] set), else
    [`resolve_model`][activa_ppl.zoo.resolve_model] ``(name_or_path)``; looked up as that does.

    Raises:
        CheckpointError, ValueError: as :func:`~activa_ppl.zoo.resolve_model`.
    """
    path, name = locate_model(name_or_path)
    if disk_memo.folder() is not None:
        try:
            return ExportedActiva(path, name)
        except (TypeError, ValueError, KeyError, OverflowError):
            pass  # an unreadable folder: loading it raises the error of the normal path
    return _load_named(path, name)


class ExportedActiva:
    """A saved ACTIVA model that answers single queries through stored traced predictions (see
    the module docstring).

    Has what ``activa predict`` uses of :class:`~activa_ppl.fitted.FittedActiva` (``predict``,
    ``config``, ``info``) with the same checks, warnings and answers; the model itself is loaded
    only when a query has no usable stored prediction.

    Args:
        path: the saved-model folder.
        name: its name (``info["model_name"]`` unless the folder records one).

    Raises:
        CheckpointError, TypeError, ValueError, KeyError, OverflowError: an unreadable
            ``config.json`` or model configuration.
    """

    def __init__(self, path, name: str):
        self.path = Path(path)
        saved = read_model_config(self.path, MODEL_FORMAT, MODEL_FORMAT_VERSION, "ACTIVA")
        self._saved = (saved["model_config"], json.dumps(saved["info"], sort_keys=True))
        self._config = ActivaConfig.from_dict(saved["model_config"])
        self._info = dict(saved["info"])
        self._info.setdefault("model_name", name)
        self._name = name
        self._fitted: FittedActiva | None = None
        self._params = None

    @property
    def config(self) -> ActivaConfig:
        """The model's :class:`~activa_ppl.config.ActivaConfig`."""
        return self._config

    @property
    def info(self) -> dict:
        """The training summary of ``config.json`` (with ``model_name``)."""
        return self._info

    def __repr__(self) -> str:
        return f"ExportedActiva({self._name!r}, {self.path})"

    def predict(self, obs: Any, target: Any, intervention: Any = 0, seed: Any = 0,
                num_latents: int | None = None, bucket: bool = True) -> GaussianMixture:
        """[`FittedActiva.predict`][activa_ppl.fitted.FittedActiva.predict]: same arguments,
        checks, warnings and answer, through a stored traced prediction when there is one."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            q = _checked_query(self._config, self._info, obs, target, intervention, seed, num_latents)
        padded, sample_mask = _bucketed(q.obs[None], bucket)
        _check_predict_memory(self._config, padded.shape, q.num_latents)
        args = (as_prng_key(q.seed), jnp.asarray(padded), jnp.asarray(q.mask[None]),
                jnp.asarray(np.array([q.index], np.int32))) + tuple(jnp.asarray(m) for m in sample_mask)
        arrays = self._exported_call(q, args)
        if arrays is None:  # the model's own predict answers, and warns itself
            return self._model().predict(obs, target, intervention, seed, num_latents, bucket)
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        weights, locs, covariances = arrays
        return GaussianMixture(weights=weights, locs=locs, covariances=covariances, variable_names=q.names,
                               intervention=q.label)

    def _model(self) -> FittedActiva:
        """The loaded model (once)."""
        if self._fitted is None:
            self._fitted = _load_named(self.path, self._name)
        return self._fitted

    def _exported_call(self, q: _Query, args: tuple):
        """The stored (or newly stored) prediction's ``(weights, locs, covariances)``, or ``None``
        when there is none to call (the caller then predicts the normal way)."""
        key = _entry_key(self._config, q.num_latents, args)
        path = None if key is None else disk_memo.entry_path(ENTRY_KIND, key, _SUFFIX)
        if path is None:
            return None
        exported = _read_entry(path, key)
        params = None if exported is None else self._checked_params(exported)
        if params is None or not _fits(exported, params, args):
            params = self._model().params
            if not _fits(exported, params, args):
                exported = _export(self._model(), q.num_latents, args)
                if exported is None or not _fits(exported, params, args):
                    return None
                _write_entry(path, key, exported)
        try:
            return exported.call(params, *args)
        except Exception:  # noqa: BLE001 - whatever went wrong, the normal path answers (or raises)
            _LOADED.pop(path, None)
            path.unlink(missing_ok=True)  # traced again next time
            return None

    def _checked_params(self, exported):
        """The parameters read and checked against the shapes ``exported`` was traced with, or
        ``None`` when the folder changed since ``config.json`` was read or does not fit."""
        if self._params is None:
            def build(model_config):
                if model_config != self._saved[0]:
                    raise ValueError("config.json changed while it was read")
                avals = jax.tree_util.tree_unflatten(exported.in_tree, exported.in_avals)
                expected = avals[0][0]  # ((params, key, obs, targets, index, *mask), {})
                if not isinstance(expected, dict):
                    raise TypeError("the entry's parameters are not a dict")
                return None, expected

            try:
                _, params, info, _ = read_model_folder(self.path, MODEL_FORMAT, MODEL_FORMAT_VERSION, "ACTIVA",
                                                       build)
            except (TypeError, ValueError, KeyError, IndexError, OverflowError, OSError):
                return None  # loading the model the normal way raises its error, if any
            if json.dumps(info, sort_keys=True) != self._saved[1]:
                return None
            self._params = params
        return self._params


def _entry_key(config: ActivaConfig, num_latents: int, args: tuple) -> dict | None:
    """What a stored prediction is a function of (with the library's code and versions), or
    ``None`` for inputs it is not stored for (a typed PRNG key)."""
    if jax.dtypes.issubdtype(args[0].dtype, jax.dtypes.prng_key):
        return None
    settings = {name: str(getattr(jax.config, name)) for name in
                ("jax_enable_x64", "jax_default_prng_impl", "jax_default_matmul_precision")}
    return {"config": config.to_dict(), "num_latents": int(num_latents), "backend": jax.default_backend(),
            "inputs": [[list(a.shape), np.dtype(a.dtype).str] for a in args], "jax": settings}


def _fits(exported, params, args: tuple) -> bool:
    """Whether ``exported`` was traced for inputs of the tree, shapes and dtypes of ``(params, *args)``."""
    if exported is None:
        return False
    leaves, tree = jax.tree_util.tree_flatten(((params, *args), {}))
    return (tree == exported.in_tree and len(leaves) == len(exported.in_avals)
            and all(tuple(leaf.shape) == tuple(aval.shape) and np.dtype(leaf.dtype) == np.dtype(aval.dtype)
                    for leaf, aval in zip(leaves, exported.in_avals)))


def _export(fitted: FittedActiva, num_latents: int, args: tuple):
    """``jax.export`` of ``fitted``'s single-query prediction at the shapes of ``args``, or
    ``None`` when it cannot be serialized here."""
    if importlib.util.find_spec("flatbuffers") is None:  # jax.export's serialization needs it
        return None
    activa = fitted.activa

    def single_query(params, key, observational, targets, index, *mask):
        return _single_query_arrays(activa, params, key, observational, targets, index, num_latents, *mask)

    try:
        return export.export(jax.jit(single_query))(fitted.params, *args)
    except Exception:  # noqa: BLE001 - not exportable: the normal path answers (or raises)
        return None


def _header(key: dict, payload: bytes) -> bytes:
    """``magic, SHA-256 of (key, payload), key`` lines that open an entry file."""
    key_line = json.dumps(key, sort_keys=True).encode()
    digest = hashlib.sha256(key_line + b"\n" + payload).hexdigest().encode()
    return b"\n".join([_MAGIC, digest, key_line]) + b"\n"


def _write_entry(path: Path, key: dict, exported) -> None:
    """Store ``exported`` under ``path`` (atomically; nothing is raised)."""
    try:
        payload = bytes(exported.serialize())
    except Exception:  # noqa: BLE001 - an unserializable trace is simply not stored
        return
    disk_memo.write_entry(path, _header(key, payload) + payload)
    _LOADED[path] = exported


def _read_entry(path: Path, key: dict):
    """The ``jax.export.Exported`` stored under ``path`` for ``key``, else ``None`` (missing,
    unreadable, failing its checksum, stored for another key, not deserializable)."""
    if path in _LOADED:
        return _LOADED[path]
    try:
        data = path.read_bytes()
    except OSError:
        return None
    payload = data.split(b"\n", 3)[-1]
    if data != _header(key, payload) + payload:  # another format, key or a damaged file
        return None
    try:
        exported = export.deserialize(bytearray(payload))
    except Exception:  # noqa: BLE001 - a damaged entry is traced and written again
        return None
    _LOADED[path] = exported
    return exported
