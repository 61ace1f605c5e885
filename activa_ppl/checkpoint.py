"""Safe on-disk array files: one ``.npz`` holding named arrays, JSON metadata and a checksum.

* **No code execution**: files are read by :func:`read_npz`, which parses each entry's ``.npy``
  header first and refuses object dtypes (pickle payloads), entries that are not ``.npy``
  arrays and headers that declare more data than the entry holds, before reading any data;
  the data itself is read with ``allow_pickle=False``.
* **Integrity**: the metadata stores a SHA-256 over every array's name, dtype, shape and bytes;
  a truncated or altered file is refused with :class:`CheckpointError` (a ``ValueError``).
* **Bounded memory**: before any data is read, each entry's header (shape, dtype) can be checked
  against the shapes the caller expects (``expected``), and every entry's size against its
  compressed size (:data:`MAX_EXPANSION`), so a small forged file (a zip bomb) is refused before
  it allocates; checksums are computed by streaming, without a second copy of the data.
* **Atomic replacement**: a file is written to a temporary name in the same folder, flushed and
  fsync'ed, then ``os.replace``-d over the target, so a crash leaves either the old or the new
  file in place, never a half-written one. The file gets the permissions the umask allows
  (``0666 & ~umask``), as a plain ``open`` would. :func:`folder_lock` serialises writers of one
  folder; :func:`remove_stale_temporaries` removes what killed writers left behind.

Layout inside the ``.npz``: one entry per array under its own name, plus ``__meta__``, the UTF-8
JSON metadata as a ``uint8`` array. Metadata keys: ``format`` (``"activa_ppl.arrays"``),
``format_version`` (1), ``sha256`` and whatever the caller adds under ``meta``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

try:  # POSIX; elsewhere folder_lock is a no-op
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

import numpy as np

__all__ = ["CheckpointError", "save_arrays", "load_arrays", "read_npz", "atomic_write_bytes", "array_digest",
           "file_sha256", "read_meta", "folder_lock", "remove_stale_temporaries", "content_addressed", "ArraySpec",
           "MAX_EXPANSION", "MAX_META_BYTES"]

FORMAT = "activa_ppl.arrays"
FORMAT_VERSION = 1
_META_KEY = "__meta__"
#: The most an entry of an ``.npz`` may expand over its compressed size (our writers store
#: uncompressed, ratio 1; a zip bomb expands a thousandfold and more).
MAX_EXPANSION = 64
#: The largest JSON metadata entry of a file written by :func:`save_arrays` (1 MiB).
MAX_META_BYTES = 1 << 20
#: ``(shape, dtype)`` an entry must have: ``shape`` a tuple whose ``None`` items are free (any
#: length), ``dtype`` a NumPy dtype string such as ``"<f4"`` (``None``: any dtype).
ArraySpec = tuple[Sequence[int | None], str | None]
# Temporary names of atomic_write_bytes and of content-addressed staging files.
_TEMPORARY = re.compile(r"^\..+\.(tmp|staging)$")


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
        digest.update(a.reshape(-1).view(np.uint8))  # the bytes in place: no copy (tobytes)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    """The process's umask (read from ``/proc`` where possible; setting it back is not atomic)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, write) -> None:
    """Write a file atomically: ``write(fileobj)`` fills a temp file that replaces ``path``.

    The file gets mode ``0666 & ~umask``, as a file created by ``open`` would (not the
    ``0600`` of a temporary file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
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


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the folder ``path`` (``flock`` on the folder itself, so no lock
    file is left behind): writers of one folder run one after the other, across processes.
    A no-op where ``fcntl`` is missing (Windows)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Remove the temporary files (``.<name>.<random>.tmp`` / ``.staging``) that writers killed
    mid-write left in the folder ``path``; call it holding :func:`folder_lock`. Returns their names."""
    removed = []
    for child in Path(path).iterdir():
        if _TEMPORARY.match(child.name) and child.is_file() and not child.is_symlink():
            child.unlink(missing_ok=True)
            removed.append(child.name)
    return removed


def content_addressed(folder: Path, prefix: str, suffix: str, write) -> tuple[Path, str]:
    """Write a file under its content's name ``<prefix><sha256[:12]><suffix>`` in ``folder``.

    ``write(path)`` fills a fresh, unique staging path (any failure removes it); the file is then
    hashed (streaming) and renamed. Returns ``(path, sha256)``.
    """
    fd, staging = tempfile.mkstemp(prefix=f".{prefix}", suffix=".staging", dir=folder)
    os.close(fd)
    staging = Path(staging)
    try:
        write(staging)
        digest = file_sha256(staging)
        target = folder / f"{prefix}{digest[:12]}{suffix}"
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return target, digest


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


def read_npz(path: str | os.PathLike, expected: Mapping[str, ArraySpec] | None = None) -> dict[str, np.ndarray]:
    """Read every array of an untrusted ``.npz`` file without ever unpickling anything.

    Each zip entry must be a ``.npy`` array (format version 1.0 or 2.0). Its header is parsed
    first; object dtypes (the carrier of pickle payloads), headers that declare more bytes than
    the entry holds, entries that expand more than :data:`MAX_EXPANSION` times over their
    compressed size (a zip bomb) and, with ``expected``, entries whose name, shape or dtype
    differ from the expected ones are refused before any data is read. The data is then read
    with ``numpy.lib.format.read_array(allow_pickle=False)``.

    Args:
        path: the file.
        expected: ``{name: (shape, dtype)}`` (:data:`ArraySpec`): the entries the file must
            hold, exactly; ``None``: any plain arrays.

    Returns:
        ``{name: array}``, names without the ``.npy`` suffix.

    Raises:
        CheckpointError: the file is missing, not a zip archive, truncated, corrupted, holds
            anything but plain numeric arrays, or arrays other than ``expected``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            names = [info.filename[:-4] for info in infos]
            if expected is not None and sorted(names) != sorted(expected):
                missing, extra = sorted(set(expected) - set(names)), sorted(set(names) - set(expected))
                raise CheckpointError(f"{path}: arrays do not fit the expected ones (missing {missing[:3]}, "
                                      f"unexpected {extra[:3]})")
            for info in infos:
                name = _check_entry(archive, info, path, arrays, expected, path.stat().st_size)
                with archive.open(info) as f:
                    arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
    except CheckpointError:
        raise
    except Exception as e:  # anything a garbled zip or .npy header raises: zipfile, zlib, ast, numpy
        raise CheckpointError(f"{path}: truncated or corrupted file ({type(e).__name__}: {e})") from e
    return arrays


def _check_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, seen: Mapping,
                 expected: Mapping[str, ArraySpec] | None, file_size: int) -> str:
    """Check one entry's name, sizes and ``.npy`` header (nothing of its data is read); return its name."""
    if not info.filename.endswith(".npy") or info.is_dir():
        raise CheckpointError(f"{path}: entry {info.filename!r} is not a .npy array")
    name = info.filename[:-4]
    if name in seen:
        raise CheckpointError(f"{path}: duplicate entry {info.filename!r}")
    if info.compress_size > file_size or info.file_size > MAX_EXPANSION * info.compress_size + (1 << 16) or (
            info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size):
        raise CheckpointError(f"{path}: entry {name!r} claims {info.file_size} bytes from {info.compress_size} "
                              f"stored in a file of {file_size} (expanding more than {MAX_EXPANSION}x); "
                              "refusing a forged file or zip bomb")
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise CheckpointError(f"{path}: entry {name!r} has unsupported .npy version {version}")
        if dtype.hasobject:
            raise CheckpointError(
                f"{path}: entry {name!r} holds Python objects (dtype {dtype}); files holding "
                "pickled objects are never loaded"
            )
        declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        held = info.file_size - f.tell()
    if declared > held:
        raise CheckpointError(f"{path}: entry {name!r} declares {declared} bytes of data "
                              f"but holds {held}; truncated or forged")
    if expected is not None:
        want_shape, want_dtype = expected[name]
        fits = len(shape) == len(want_shape) and all(w is None or w == n for w, n in zip(want_shape, shape))
        if not fits or (want_dtype is not None and dtype.str != np.dtype(want_dtype).str):
            want = "(" + ", ".join("*" if n is None else str(n) for n in want_shape) + ")"
            raise CheckpointError(f"{path}: arrays do not fit the expected ones: entry {name!r} has shape "
                                  f"{tuple(shape)} dtype {dtype.str}, expected shape {want} dtype {want_dtype or 'any'}")
    return name


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` of a file written by :func:`save_arrays`, reading nothing but its metadata
    entry (not verified against the checksum: :func:`load_arrays` does that).

    Raises:
        CheckpointError: the file is missing, unsafe, corrupted or of another format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(_META_KEY + ".npy")
            _check_entry(archive, info, path, {}, {_META_KEY: ((None,), "|u1")}, path.stat().st_size)
            with archive.open(info) as f:
                blob = np.lib.format.read_array(f, allow_pickle=False)
    except CheckpointError:
        raise
    except KeyError as e:
        raise CheckpointError(f"{path}: not an activa_ppl array file (no {_META_KEY} entry)") from e
    except Exception as e:  # a garbled zip or .npy header
        raise CheckpointError(f"{path}: truncated or corrupted file ({type(e).__name__}: {e})") from e
    return _parse_meta(path, blob)


def _parse_meta(path: Path, blob: np.ndarray) -> dict[str, Any]:
    """The ``meta`` of a metadata entry, its format and version checked; the header's
    ``sha256`` is returned under ``"__sha256__"``."""
    if blob.size > MAX_META_BYTES:
        raise CheckpointError(f"{path}: metadata of {blob.size} bytes (more than {MAX_META_BYTES}); forged")
    try:
        header = json.loads(blob.tobytes().decode())
    except (ValueError, RecursionError) as e:  # JSON and Unicode errors, over-long integers
        raise CheckpointError(f"{path}: truncated or corrupted file ({type(e).__name__}: {e})") from e
    if not isinstance(header, dict) or not isinstance(header.get("meta", {}), dict):
        raise CheckpointError(f"{path}: malformed metadata (expected a JSON object)")
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {header.get('format')!r} is not {FORMAT!r}")
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {header.get('format_version')!r} is not supported")
    return {**header.get("meta", {}), "__sha256__": header.get("sha256")}


def load_arrays(path: str | os.PathLike,
                expected: Mapping[str, ArraySpec] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify a file written by :func:`save_arrays`.

    Args:
        path: the file.
        expected: the arrays it must hold (as in :func:`read_npz`; the metadata entry, at most
            :data:`MAX_META_BYTES`, is added here), checked before any data is read.

    Returns:
        ``(arrays, meta)``.

    Raises:
        CheckpointError: the file is missing, not an ``.npz`` of this format, truncated,
            corrupted (checksum mismatch) or contains object (pickled) arrays.
    """
    path = Path(path)
    if expected is not None:
        expected = {**expected, _META_KEY: ((None,), "|u1")}
    arrays = read_npz(path, expected)
    if _META_KEY not in arrays:
        raise CheckpointError(f"{path}: not an activa_ppl array file (no {_META_KEY} entry)")
    meta = _parse_meta(path, arrays.pop(_META_KEY))
    if array_digest(arrays) != meta.pop("__sha256__"):
        raise CheckpointError(f"{path}: checksum mismatch, the file is corrupted")
    return arrays, meta

