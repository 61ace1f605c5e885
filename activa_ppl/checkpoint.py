"""Safe on-disk array files: one ``.npz`` holding named arrays, JSON metadata and a checksum.

* **No code execution**: files are read by :func:`read_npz`, which parses each entry's ``.npy``
  header first and refuses object dtypes (pickle payloads), entries that are not ``.npy``
  arrays and headers that declare more data than the entry holds, before reading any data;
  the data itself is read with ``allow_pickle=False``.
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

__all__ = ["CheckpointError", "save_arrays", "load_arrays", "read_npz", "atomic_write_bytes", "array_digest",
           "file_sha256"]

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


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of an untrusted ``.npz`` file without ever unpickling anything.

    Each zip entry must be a ``.npy`` array (format version 1.0 or 2.0). Its header is parsed
    first; object dtypes (the carrier of pickle payloads) and headers that declare more bytes
    than the entry holds (a memory bomb) are refused before any data is read. The data is then
    read with ``numpy.lib.format.read_array(allow_pickle=False)``.

    Returns:
        ``{name: array}``, names without the ``.npy`` suffix.

    Raises:
        CheckpointError: the file is missing, not a zip archive, truncated, corrupted, or
            holds anything but plain numeric arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy") or info.is_dir():
                    raise CheckpointError(f"{path}: entry {info.filename!r} is not a .npy array")
                name = info.filename[:-4]
                if name in arrays:
                    raise CheckpointError(f"{path}: duplicate entry {info.filename!r}")
                with archive.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        raise CheckpointError(f"{path}: entry {name!r} has unsupported .npy version {version}")
                    if dtype.hasobject:
                        raise CheckpointError(
                            f"{path}: entry {name!r} holds Python objects (dtype {dtype}); files holding "
                            "pickled objects are never loaded"
                        )
                    declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                    if declared > info.file_size - f.tell():
                        raise CheckpointError(f"{path}: entry {name!r} declares {declared} bytes of data "
                                              f"but holds {info.file_size - f.tell()}; truncated or forged")
                with archive.open(info) as f:
                    arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
    except CheckpointError:
        raise
    except Exception as e:  # anything a garbled zip or .npy header raises: zipfile, zlib, ast, numpy
        raise CheckpointError(f"{path}: truncated or corrupted file ({type(e).__name__}: {e})") from e
    return arrays


def load_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify a file written by :func:`save_arrays`.

    Returns:
        ``(arrays, meta)``.

    Raises:
        CheckpointError: the file is missing, not an ``.npz`` of this format, truncated,
            corrupted (checksum mismatch) or contains object (pickled) arrays.
    """
    path = Path(path)
    arrays = read_npz(path)
    if _META_KEY not in arrays:
        raise CheckpointError(f"{path}: not an activa_ppl array file (no {_META_KEY} entry)")
    blob = arrays.pop(_META_KEY)
    try:
        header = json.loads(blob.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
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
