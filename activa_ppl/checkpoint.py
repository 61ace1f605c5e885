"""Safe on-disk array files: one ``.npz`` holding named arrays, JSON metadata and a checksum.

* **No code execution**: files are read with ``numpy.load(allow_pickle=False)``; object arrays,
  and so pickle payloads, are refused.
* **Integrity**: the metadata stores a SHA-256 over every array's name, dtype, shape and bytes;
  a truncated or altered file is refused with :class:`CheckpointError` (a ``ValueError``).
* **Atomic replacement**: a file is written to a temporary name in the same folder, flushed and
  fsync'ed, then ``os.replace``-d over the target, so a crash leaves either the old or the new
  file in place, never a half-written one.

Layout inside the ``.npz``: one entry per array under its own name, plus ``__meta__``, the UTF-8
JSON metadata as a ``uint8`` array. Metadata keys: ``format`` (``"activa_ppl.arrays"``),
``format_version`` (1), ``sha256`` and whatever the caller adds under ``meta``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["CheckpointError", "save_arrays", "load_arrays", "atomic_write_bytes", "array_digest", "file_sha256"]

FORMAT = "activa_ppl.arrays"
FORMAT_VERSION = 1
_META_KEY = "__meta__"


class CheckpointError(ValueError):
    """A file that is missing, truncated, corrupted, of the wrong format or unsafe to load."""


def array_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the sorted names, dtypes, shapes and raw bytes of ``arrays``."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(name.encode())
        digest.update(str(a.dtype).encode())
        digest.update(repr(a.shape).encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, write) -> None:
    """Write a file atomically: ``write(fileobj)`` fills a temp file that replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_arrays(path: str | os.PathLike, arrays: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> str:
    """Atomically write ``arrays`` (name → array) and JSON ``meta`` to the ``.npz`` at ``path``.

    Returns the SHA-256 digest stored in the file.
    """
    arrays = {str(k): np.asarray(v) for k, v in arrays.items()}
    for name, a in arrays.items():
        if name == _META_KEY:
            raise ValueError(f"array name {_META_KEY!r} is reserved")
        if a.dtype == object:
            raise ValueError(f"array {name!r} has dtype object, which cannot be stored safely")
    digest = array_digest(arrays)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "sha256": digest, "meta": dict(meta or {})}
    blob = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
    atomic_write_bytes(path, lambda f: np.savez(f, **arrays, **{_META_KEY: blob}))
    return digest


def load_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify a file written by :func:`save_arrays`.

    Returns:
        ``(arrays, meta)``.

    Raises:
        CheckpointError: the file is missing, not an ``.npz`` of this format, truncated,
            corrupted (checksum mismatch) or contains object (pickled) arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = list(npz.files)
            if _META_KEY not in names:
                raise CheckpointError(f"{path}: not an activa_ppl array file (no {_META_KEY} entry)")
            header = json.loads(npz[_META_KEY].tobytes().decode())
            arrays = {name: npz[name] for name in names if name != _META_KEY}
    except CheckpointError:
        raise
    except ValueError as e:  # numpy refuses object arrays when allow_pickle=False
        raise CheckpointError(f"{path}: refused to load ({e}); files holding pickled objects are never loaded") from e
    except (OSError, zipfile.BadZipFile, EOFError, KeyError, UnicodeDecodeError, json.JSONDecodeError,
            NotImplementedError, RuntimeError) as e:  # zipfile raises the last two on garbled headers
        raise CheckpointError(f"{path}: truncated or corrupted file ({type(e).__name__}: {e})") from e
    if not isinstance(header, dict) or not isinstance(header.get("meta", {}), dict):
        raise CheckpointError(f"{path}: malformed metadata (expected a JSON object)")
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {header.get('format')!r} is not {FORMAT!r}")
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {header.get('format_version')!r} is not supported")
    if array_digest(arrays) != header.get("sha256"):
        raise CheckpointError(f"{path}: checksum mismatch, the file is corrupted")
    return arrays, header.get("meta", {})
