"""The on-disk format of an :class:`~activa_ppl.data.InterventionalDataset`: a folder holding
``data.npz`` (NumPy arrays, never pickled) and ``manifest.json`` (format, shapes, dtypes,
metadata and the SHA-256 of ``data.npz``), each written atomically.
"""

from __future__ import annotations

import json
import os
from typing import IO

import numpy as np

from activa_ppl.checkpoint import atomic_write_bytes, file_sha256, read_npz

__all__ = ["DATA_FILE", "MANIFEST_FILE", "write_dataset_folder", "read_dataset_folder"]

DATA_FILE = "data.npz"
MANIFEST_FILE = "manifest.json"


def _shape_str(array: np.ndarray) -> str:
    return "(" + ", ".join(str(n) for n in array.shape) + ")"


def write_dataset_folder(path: str | os.PathLike, arrays: dict[str, np.ndarray], fields: dict) -> None:
    """Write ``arrays`` to ``path/data.npz`` and then ``path/manifest.json`` (``fields`` plus the
    data file's name, SHA-256 and every array's shape and dtype). Each file is written
    atomically (temp file in the same directory, flush, fsync, ``os.replace``)."""
    directory = os.fspath(path)
    os.makedirs(directory, exist_ok=True)
    data_path = os.path.join(directory, DATA_FILE)

    def write_npz(handle: IO[bytes]) -> None:
        np.savez(handle, **{key: np.ascontiguousarray(value) for key, value in arrays.items()})

    atomic_write_bytes(data_path, write_npz)
    manifest = {
        **fields,
        "data_file": DATA_FILE,
        "sha256": file_sha256(data_path),
        "arrays": {key: {"shape": [int(n) for n in value.shape], "dtype": value.dtype.str}
                   for key, value in arrays.items()},
    }
    text = json.dumps(manifest, indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(os.path.join(directory, MANIFEST_FILE), lambda h: h.write(text.encode("utf-8")))


def read_dataset_folder(path: str | os.PathLike, format_name: str, format_version: int):
    """Read and verify a folder written by :func:`write_dataset_folder`.

    Returns:
        ``(arrays, manifest, data_path)``.

    Raises:
        ValueError: a missing folder or file, an unparsable manifest or one of another format or
            version, a checksum mismatch, or arrays whose names, shapes or dtypes differ from the
            manifest's (entries holding Python objects are refused before being read).
    """
    directory = os.fspath(path)
    manifest_path = os.path.join(directory, MANIFEST_FILE)
    data_path = os.path.join(directory, DATA_FILE)
    if not os.path.exists(directory):
        raise ValueError(f"dataset directory {directory!r} does not exist")
    if not os.path.isdir(directory):
        raise ValueError(f"dataset path {directory!r} is not a directory (expected a folder holding "
                         f"{DATA_FILE} and {MANIFEST_FILE})")
    for required in (manifest_path, data_path):
        if not os.path.isfile(required):
            raise ValueError(f"dataset file {required!r} is missing")
    try:
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError, RecursionError) as err:
        raise ValueError(f"cannot parse {manifest_path!r}: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != format_name:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ValueError(f"{manifest_path!r} has format {found!r}, expected {format_name!r}")
    if manifest.get("format_version") != format_version:
        raise ValueError(
            f"{manifest_path!r} has format_version {manifest.get('format_version')!r}; "
            f"this library reads version {format_version}"
        )
    _check_manifest(manifest, manifest_path)
    digest = file_sha256(data_path)
    if digest != manifest["sha256"]:
        raise ValueError(
            f"checksum mismatch for {data_path!r}: sha256 {digest} != manifest {manifest['sha256']}"
        )
    expected = manifest["arrays"]
    arrays = read_npz(data_path)  # never unpickles; CheckpointError is a ValueError
    if set(arrays) != set(expected):
        raise ValueError(
            f"{data_path!r} holds arrays {sorted(arrays)}, manifest lists {sorted(expected)}"
        )
    for key, array in arrays.items():
        spec = expected[key]
        if list(array.shape) != list(spec["shape"]) or array.dtype.str != spec["dtype"]:
            raise ValueError(
                f"array {key!r} has shape {_shape_str(array)} dtype {array.dtype.str}, "
                f"manifest says shape {tuple(spec['shape'])} dtype {spec['dtype']}"
            )
    return arrays, manifest, data_path


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
    for key, spec in arrays.items():
        if not (isinstance(spec, dict) and isinstance(spec.get("dtype"), str)
                and isinstance(spec.get("shape"), list)
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in spec["shape"])):
            raise ValueError(f"{manifest_path!r}: arrays[{key!r}] must be {{'shape': [non-negative ints], "
                             f"'dtype': str}}, got {spec!r:.80}")
    names = manifest["variable_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        fail("variable_names", "a list of strings")
    extras = manifest["extras"]
    if not isinstance(extras, list) or not all(isinstance(n, str) for n in extras):
        fail("extras", "a list of strings")


