"""Small results remembered on disk between ``activa`` commands, so that a repeated command skips
work whose answer cannot have changed.

``activa predict`` turns this on next to JAX's persistent compilation cache
([`enable_compilation_cache`][activa_ppl.predict_report.enable_compilation_cache]): entries live
in ``<cache folder>/memo/`` as JSON files. Library calls in a Python session never read or write
them unless [`enable`][activa_ppl.disk_memo.enable] was called. What is remembered:

* the parameter shapes of a model configuration (an abstract initialisation, about a second),
  used to check a loaded model's parameter file (``activa_ppl.fitted.expected_param_shapes``);
* the training-data ranges reconstructed for older models by a fresh simulation
  (``activa_ppl.model_info.training_ranges``);
* the traced prediction of a model configuration and input shape, stored with ``jax.export``
  ([`activa_ppl.exported`][activa_ppl.exported], files ``predict-*.jaxexport``), so that a
  repeated ``activa predict`` neither traces the model nor imports Flax and NumPyro.

An entry's file name is the SHA-256 of what it was computed from: its kind, its key (a
JSON-ready value, e.g. the model configuration), the versions of ``activa_ppl``, JAX, Flax and
NumPy, and the source code of the package itself, so a changed library never reads a stale
entry. An unreadable or malformed entry is computed again and rewritten; writes are atomic.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

__all__ = ["enable", "entry_path", "folder", "memoized", "write_entry"]

_FOLDER: list[Path | None] = [None]


def enable(cache_folder: str | os.PathLike | None) -> Path | None:
    """Remember results in ``cache_folder/memo`` from now on (``None``: stop); returns that folder."""
    _FOLDER[0] = None if cache_folder is None else Path(cache_folder) / "memo"
    return _FOLDER[0]


def folder() -> Path | None:
    """The folder entries are read from and written to, or ``None`` when disabled."""
    return _FOLDER[0]


@functools.lru_cache(maxsize=1)
def _environment_digest() -> str:
    """SHA-256 of the package's source files and the versions of the libraries results depend on."""
    from importlib import metadata  # here, not at import: ``activa models`` imports this module

    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for name in ("jax", "jaxlib", "flax", "numpy", "numpyro"):
        try:
            digest.update(f"{name}={metadata.version(name)}\0".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}=none\0".encode())
    return digest.hexdigest()


def entry_path(kind: str, key: Any, suffix: str = ".json") -> Path | None:
    """The file of the entry ``(kind, key)`` (``None`` when disabled): ``<folder>/<kind>-<hash><suffix>``,
    the hash a SHA-256 of ``kind``, ``key`` (JSON-ready) and the library's code and versions."""
    where = _FOLDER[0]
    if where is None:
        return None
    name = hashlib.sha256(json.dumps([kind, key, _environment_digest()], sort_keys=True).encode()).hexdigest()
    return where / f"{kind}-{name[:32]}{suffix}"


def write_entry(path: Path, data: bytes) -> None:
    """Write ``data`` to the entry ``path`` atomically; a read-only or full cache folder only costs
    the recomputation next time (nothing is raised)."""
    import tempfile

    out = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=path.parent, suffix=".tmp", delete=False) as out:
            out.write(data)
        os.replace(out.name, path)
    except OSError:
        if out is not None:
            Path(out.name).unlink(missing_ok=True)


def memoized(kind: str, key: Any, compute: Callable[[], Any],
             encode: Callable[[Any], Any] = lambda x: x, decode: Callable[[Any], Any] = lambda x: x) -> Any:
    """``compute()``, or its remembered value for ``(kind, key)`` when enabled.

    Args:
        kind: what is remembered (part of the entry's name).
        key: JSON-ready value the result is a function of (with the library's code and versions).
        compute: computes the result.
        encode, decode: result -> JSON-ready value and back.
    """
    path = entry_path(kind, key)
    if path is None:
        return compute()
    try:
        return decode(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError):
        pass
    value = compute()
    write_entry(path, json.dumps(encode(value)).encode())
    return value
