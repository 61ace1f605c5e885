"""The on-disk format of an :class:`~activa_ppl.data.InterventionalDataset`: a folder holding
``data-<sha256[:12]>.npz`` (NumPy arrays, never pickled) and ``manifest.json`` (format, shapes,
dtypes, metadata, and the name and SHA-256 of the data file).

``manifest.json`` is the commit point, as ``config.json`` is for a saved model
(:mod:`activa_ppl.model_io`): a save writes the arrays under their own content-addressed name,
then replaces ``manifest.json`` atomically, then removes the data file the replaced manifest
named. A save killed at any moment leaves the old dataset or the new one, whole. Saves into one
folder hold :func:`~activa_ppl.checkpoint.folder_lock`; only files this format wrote are removed.
Format version 1 (older releases) named its data file ``data.npz``; it is still read.

Reading checks every array's ``.npy`` header against the manifest before any data is read, so
a forged file cannot make the reader allocate more than the manifest declares (and the
manifest's sizes are bounded by :data:`MAX_DATASET_BYTES`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import IO

import numpy as np

from activa_ppl.checkpoint import (atomic_write_bytes, content_addressed, file_sha256, folder_lock, read_npz,
                                   remove_stale_temporaries)

__all__ = ["DATA_FILE", "MANIFEST_FILE", "MAX_DATASET_BYTES", "write_dataset_folder", "read_dataset_folder"]

#: The data file of format version 1 (since version 2 the data file is content-addressed).
DATA_FILE = "data.npz"
MANIFEST_FILE = "manifest.json"
#: The most a manifest may declare for all arrays together (64 GiB): a larger claim is refused
#: before anything is read.
MAX_DATASET_BYTES = 64 << 30
_DATA_NAME = re.compile(r"^data-([0-9a-f]{12})\.npz$")


def write_dataset_folder(path: str | os.PathLike, arrays: dict[str, np.ndarray], fields: dict) -> None:
    """Write ``arrays`` to ``path/data-<sha256[:12]>.npz``, then ``path/manifest.json`` (``fields``
    plus the data file's name, SHA-256 and every array's shape and dtype), the commit point;
    then remove the data file the replaced manifest named (module docstring)."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)

    def write_npz(staging: Path) -> None:
        def write(handle: IO[bytes]) -> None:
            np.savez(handle, **{key: np.ascontiguousarray(value) for key, value in arrays.items()})

        atomic_write_bytes(staging, write)

    with folder_lock(directory):
        remove_stale_temporaries(directory)
        previous = _committed_data_file(directory)
        data_path, digest = content_addressed(directory, "data-", ".npz", write_npz)
        manifest = {
            **fields,
            "data_file": data_path.name,
            "sha256": digest,
            "arrays": {key: {"shape": [int(n) for n in value.shape], "dtype": value.dtype.str}
                       for key, value in arrays.items()},
        }
        text = json.dumps(manifest, indent=2, allow_nan=False) + "\n"
        try:
            atomic_write_bytes(directory / MANIFEST_FILE, lambda h: h.write(text.encode("utf-8")))  # commit
        except BaseException:
            if data_path.name not in (previous, _committed_data_file(directory)):
                data_path.unlink(missing_ok=True)
            raise
        for stale in list(directory.glob("data*.npz")):
            if stale != data_path and _written_by_us(stale, previous):
                stale.unlink(missing_ok=True)


def _written_by_us(file: Path, previous: str | None) -> bool:
    """The data file the replaced manifest named, or a content-addressed one left by a killed save."""
    match = _DATA_NAME.match(file.name)
    if file.is_symlink() or not file.is_file() or (match is None and file.name != previous):
        return False
    return file.name == previous or file_sha256(file)[:12] == match.group(1)


def _committed_data_file(directory: Path) -> str | None:
    """The data file named by ``directory/manifest.json``, if it can be read."""
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
        name = manifest.get("data_file", DATA_FILE)
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return name if name == DATA_FILE or (isinstance(name, str) and _DATA_NAME.match(name)) else None


def read_dataset_folder(path: str | os.PathLike, format_name: str, format_version: int):
    """Read and verify a folder written by :func:`write_dataset_folder`.

    Args:
        path: the folder.
        format_name: the expected ``format``.
        format_version: the newest ``format_version`` read (older ones are read too).

    Returns:
        ``(arrays, manifest, data_path)``.

    Raises:
        ValueError: a missing folder or file, an unparsable manifest or one of another format or
            version, a data file name that is not this format's, a checksum mismatch, arrays
            whose names, shapes or dtypes differ from the manifest's (checked from each entry's
            header, before its data is read; entries holding Python objects are refused), or
            sizes beyond :data:`MAX_DATASET_BYTES`.
    """
    directory = os.fspath(path)
    manifest_path = os.path.join(directory, MANIFEST_FILE)
    if not os.path.exists(directory):
        raise ValueError(f"dataset directory {directory!r} does not exist")
    if not os.path.isdir(directory):
        raise ValueError(f"dataset path {directory!r} is not a directory (expected a folder holding "
                         f"{MANIFEST_FILE} and its data file)")
    if not os.path.isfile(manifest_path):
        raise ValueError(f"dataset file {manifest_path!r} is missing")
    for attempt in range(3):  # a concurrent save may replace the manifest between our two reads
        manifest = _read_manifest(manifest_path, format_name, format_version)
        data_path = os.path.join(directory, manifest["data_file"])
        try:
            if not os.path.isfile(data_path):
                raise ValueError(f"dataset file {data_path!r} is missing")
            digest = file_sha256(data_path)
            if digest != manifest["sha256"]:
                raise ValueError(f"checksum mismatch for {data_path!r}: sha256 {digest} != manifest "
                                 f"{manifest['sha256']}")
        except (ValueError, OSError):
            if attempt < 2 and _committed_data_file(Path(directory)) != manifest["data_file"]:
                continue
            raise
        break
    expected = {key: (tuple(spec["shape"]), spec["dtype"]) for key, spec in manifest["arrays"].items()}
    arrays = read_npz(data_path, expected)  # never unpickles; CheckpointError is a ValueError
    return arrays, manifest, data_path


def _read_manifest(manifest_path: str, format_name: str, format_version: int) -> dict:
    """The parsed and checked manifest (``data_file`` filled in for version 1)."""
    try:
        if os.path.getsize(manifest_path) > (16 << 20):
            raise ValueError("larger than 16 MiB")
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError, RecursionError) as err:
        raise ValueError(f"cannot parse {manifest_path!r}: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != format_name:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ValueError(f"{manifest_path!r} has format {found!r}, expected {format_name!r}")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= format_version:
        raise ValueError(
            f"{manifest_path!r} has format_version {version!r}; "
            f"this library reads versions 1 to {format_version}"
        )
    name = manifest.setdefault("data_file", DATA_FILE) if version == 1 else manifest.get("data_file")
    if not (name == DATA_FILE if version == 1 else isinstance(name, str) and _DATA_NAME.match(name)):
        raise ValueError(f"{manifest_path!r}: field 'data_file' must name this format's data file "
                         f"({'data.npz' if version == 1 else 'data-<12 hex digits>.npz'}), got {name!r:.80}")
    _check_manifest(manifest, manifest_path)
    return manifest


def _check_manifest(manifest: dict, manifest_path: str) -> None:
    """Check the types of the manifest fields that :meth:`InterventionalDataset.load` reads."""
    def fail(field: str, expected: str) -> None:
        raise ValueError(f"{manifest_path!r}: field {field!r} must be {expected}, "
                         f"got {manifest.get(field)!r:.80}")

    for key in ("sha256", "arrays", "num_interventions", "variable_names", "metadata", "extras"):
        if key not in manifest:
            raise ValueError(f"{manifest_path!r} lacks the field {key!r}")
    if not isinstance(manifest["sha256"], str):
        fail("sha256", "a hex string")
    arrays = manifest["arrays"]
    if not isinstance(arrays, dict):
        fail("arrays", "an object {name: {shape, dtype}}")
    total = 0.0
    for key, spec in arrays.items():
        if not (isinstance(spec, dict) and isinstance(spec.get("dtype"), str)
                and isinstance(spec.get("shape"), list)
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in spec["shape"])):
            raise ValueError(f"{manifest_path!r}: arrays[{key!r}] must be {{'shape': [non-negative ints], "
                             f"'dtype': str}}, got {spec!r:.80}")
        try:
            itemsize = np.dtype(spec["dtype"]).itemsize
        except (TypeError, ValueError) as err:
            raise ValueError(f"{manifest_path!r}: arrays[{key!r}] has an invalid dtype {spec['dtype']!r:.40}") from err
        total += int(np.prod(spec["shape"], dtype=np.float64)) * itemsize
    shape = arrays.get("interventional", {}).get("shape", [])  # (S, M, N_int, d)
    for field, axis in (("num_scms", 0), ("num_queries", 1), ("num_vars", 3)):
        if field in manifest and len(shape) == 4 and manifest[field] != shape[axis]:
            raise ValueError(f"{manifest_path!r}: field {field!r} is {manifest[field]!r:.40}, but the "
                             f"interventional array has shape {tuple(shape)} (S, M, N_int, d)")
    if total > MAX_DATASET_BYTES:
        raise ValueError(f"{manifest_path!r}: its arrays would take {total / 2**30:.3g} GiB, more than the "
                         f"{MAX_DATASET_BYTES / 2**30:g} GiB a dataset may hold; refusing before reading")
    names = manifest["variable_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        fail("variable_names", "a list of strings")
    extras = manifest["extras"]
    if not isinstance(extras, list) or not all(isinstance(n, str) for n in extras):
        fail("extras", "a list of strings")


