"""Interventional datasets: S causal models, each with observational data and M interventional queries.

The central container is :class:`InterventionalDataset`, an immutable bundle of numpy arrays that
holds, for every structural causal model (SCM) ``s``:

* one observational dataset ``observational[s]: (N_obs, d)``;
* ``M`` interventional datasets ("queries") ``interventional[s, m]: (N_int, d)``, each generated
  under ``do(V_t = v_i)`` with target mask ``targets[s, m]: (d,)`` and intervention identifier
  ``intervention_index[s, m]`` (the index ``i`` of the value ``v_i`` in the intervention set ``I``);
* the ground-truth graph ``adjacency[s]: (d, d)`` and its train/valid/test ``split[s]``.

Datasets are stored on disk without pickle as a directory holding ``data-<sha256[:12]>.npz`` (all
arrays) and ``manifest.json`` (format, shapes, dtypes, names, metadata, and the name and SHA-256
of the data file; the commit point of a save, :mod:`activa_ppl.dataset_io`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import networkx as nx
import numpy as np

from activa_ppl._version import __version__
from activa_ppl.dataset_io import read_dataset_folder, write_dataset_folder
from activa_ppl.validation import MAX_INTERVENTIONS, check_values

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SPLIT_CODES",
    "InterventionalDataset",
    "TaskArrays",
    "library_version",
    "load_dataset",
]

#: Value of the ``format`` field of ``manifest.json``.
FORMAT_NAME = "activa_ppl.InterventionalDataset"
#: Value of the ``format_version`` field of ``manifest.json`` written by this module.
FORMAT_VERSION = 2
#: Mapping from split name to the int8 code stored in :attr:`InterventionalDataset.split`.
SPLIT_CODES: Mapping[str, int] = {"train": 0, "valid": 1, "test": 2}

_EXTRA_PREFIX = "extra/"
_EXTRA_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")

# (field name, dtype) of the core arrays, in the order they are written to the data file.
_CORE_ARRAYS: tuple[tuple[str, type], ...] = (
    ("observational", np.float32),
    ("interventional", np.float32),
    ("targets", np.bool_),
    ("intervention_index", np.int32),
    ("intervention_values", np.float32),
    ("adjacency", np.int8),
    ("split", np.int8),
)


def library_version() -> str:
    """Return the activa_ppl version string (``activa_ppl.__version__``)."""
    return __version__


class TaskArrays(NamedTuple):
    """Dataset flattened over (scm, query) pairs; ``T = S_split * M``, task ``t = s_local * M + m``.

    Fields:
        observational: (T, N_obs, d) float32, observational data of the task's SCM (repeated M times).
        interventional: (T, N_int, d) float32, samples of the query's interventional distribution.
        targets: (T, d) float32, 0/1 intervention target mask.
        intervention_index: (T,) int32, index ``i`` of the intervention value ``v_i``.
        scm: (T,) int32, index of the task's SCM in the dataset ``tasks`` was called on.
        query: (T,) int32, index ``m`` of the query within its SCM.
    """

    observational: np.ndarray
    interventional: np.ndarray
    targets: np.ndarray
    intervention_index: np.ndarray
    scm: np.ndarray
    query: np.ndarray


def _readonly(array: np.ndarray) -> np.ndarray:
    """Return a read-only view of ``array`` (no copy; the caller's array keeps its flags)."""
    view = array.view()
    view.flags.writeable = False
    return view


def _as_array(name: str, value: Any) -> np.ndarray:
    """``np.asarray(value)``, with a ValueError naming the field for ragged or unreadable input."""
    try:
        return np.asarray(value)
    except Exception as err:  # ragged nested lists, objects whose __array__ fails
        raise ValueError(f"{name} cannot be read as an array ({err})") from err


def _expect_shape(name: str, array: np.ndarray, shape: tuple, symbolic: str) -> None:
    """Raise a ValueError naming the field unless ``array.shape == shape``."""
    if array.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {symbolic} = {tuple(shape)}, got {_shape_str(array)}")


def _shape_str(array: np.ndarray) -> str:
    return str(tuple(int(n) for n in array.shape))


def _as_binary(name: str, value: Any, dtype: type) -> np.ndarray:
    """Convert a bool or 0/1-valued array to ``dtype``, refusing any other value."""
    array = _as_array(name, value)
    if array.dtype != np.bool_:
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{name} must be a bool or 0/1 numeric array, got dtype {array.dtype}")
        if array.size and not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must only contain 0/1 (or bool) values")
    return array.astype(dtype, copy=False)


def _is_acyclic(adjacency: np.ndarray) -> np.ndarray:
    """Per-graph acyclicity of ``adjacency: (S, d, d)`` 0/1 matrices; returns (S,) bool.

    A directed graph on d nodes is acyclic iff its adjacency matrix is nilpotent (A^d == 0); paths
    are tracked as booleans so nothing overflows.
    """
    num_scms, d, _ = adjacency.shape
    if d == 0 or num_scms == 0:
        return np.ones(num_scms, dtype=bool)
    adj = adjacency.astype(np.float32)
    reach = adj.copy()  # reach[s, a, b] > 0 iff a walk of the current length a -> b exists
    for _ in range(d - 1):
        reach = (np.matmul(reach, adj) > 0).astype(np.float32)
        if not reach.any():
            break
    return ~reach.reshape(num_scms, -1).any(axis=1)


def _json_normalise(name: str, value: Any) -> Any:
    """Round-trip ``value`` through strict JSON (tuples become lists); ValueError if impossible."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be JSON-serialisable (no NaN/inf): {err}") from err


@dataclasses.dataclass(frozen=True, eq=False)
class InterventionalDataset:
    """S causal models, each with one observational dataset and M interventional datasets (queries).

    Attributes:
        observational: (S, N_obs, d) float32, observational samples of each SCM.
        interventional: (S, M, N_int, d) float32, samples of each query's interventional distribution.
        targets: (S, M, d) bool, intervention target mask t of each query.
        intervention_index: (S, M) int32, index i in {0..|I|-1} of the intervention value v_i.
        intervention_values: (S, M) float32, nominal value v_i of do(V_t = v_i) (privileged
            information, only for baselines).
        adjacency: (S, d, d) int8, ``adjacency[s, a, b] == 1`` iff edge V_a -> V_b; acyclic, zero
            diagonal.
        split: (S,) int8, 0 train, 1 valid, 2 test (see :data:`SPLIT_CODES`).
        num_interventions: |I|, the number of distinct intervention values.
        variable_names: length-d tuple of names; empty (the default) means ("X0", "X1", ...).
        metadata: JSON-serialisable dict (generator name, parameters, seed, library version); it
            is normalised through JSON on construction, so tuples become lists.
        extras: name -> array with leading axis S (e.g. ``weights: (S, d, d)``, noise parameters).

    Arrays are converted to the dtypes above (bool/0-1 only for masks) and stored as read-only
    views; construction raises ValueError naming the offending field and shapes when the arrays
    are inconsistent, non-finite, of magnitude above 1e15 (:data:`activa_ppl.validation.MAX_ABS_VALUE`)
    or out of range.
    """

    observational: np.ndarray
    interventional: np.ndarray
    targets: np.ndarray
    intervention_index: np.ndarray
    intervention_values: np.ndarray
    adjacency: np.ndarray
    split: np.ndarray
    num_interventions: int
    variable_names: tuple[str, ...] = ()
    metadata: dict = dataclasses.field(default_factory=dict)
    extras: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        """Validate and normalise all fields (see the class docstring)."""
        setf = object.__setattr__

        obs = _as_array("observational", self.observational)
        if obs.dtype.kind not in "biuf":
            raise ValueError(f"observational must be numeric, got dtype {obs.dtype}")
        check_values(obs, "observational", axes=("scm", "sample"))
        obs = obs.astype(np.float32, copy=False)
        if obs.ndim != 3:
            raise ValueError(f"observational must have shape (S, N_obs, d), got {_shape_str(obs)}")
        num_scms, _, d = obs.shape

        inter = _as_array("interventional", self.interventional)
        if inter.dtype.kind not in "biuf":
            raise ValueError(f"interventional must be numeric, got dtype {inter.dtype}")
        check_values(inter, "interventional", axes=("scm", "query", "sample"))
        inter = inter.astype(np.float32, copy=False)
        if inter.ndim != 4 or inter.shape[0] != num_scms or inter.shape[3] != d:
            raise ValueError(
                f"interventional must have shape (S, M, N_int, d) = ({num_scms}, M, N_int, {d}) "
                f"to match observational {_shape_str(obs)}, got {_shape_str(inter)}"
            )
        num_queries = inter.shape[1]
        if d < 1 or obs.shape[1] < 1 or inter.shape[2] < 1:
            raise ValueError(f"a dataset needs d >= 1, N_obs >= 1 and N_int >= 1; got observational "
                             f"{_shape_str(obs)}, interventional {_shape_str(inter)}")

        targets = _as_binary("targets", self.targets, np.bool_)
        _expect_shape("targets", targets, (num_scms, num_queries, d), "(S, M, d)")

        index = _as_array("intervention_index", self.intervention_index)
        if index.dtype.kind not in "iu" and not (index.size == 0 and index.dtype.kind == "f"):
            raise ValueError(f"intervention_index must be an integer array, got dtype {index.dtype}")
        index = index.astype(np.int32, copy=False)
        _expect_shape("intervention_index", index, (num_scms, num_queries), "(S, M)")

        values = _as_array("intervention_values", self.intervention_values)
        if values.dtype.kind not in "biuf":
            raise ValueError(f"intervention_values must be numeric, got dtype {values.dtype}")
        check_values(values, "intervention_values", axes=("scm", "query"))
        values = values.astype(np.float32, copy=False)
        _expect_shape("intervention_values", values, (num_scms, num_queries), "(S, M)")

        adjacency = _as_binary("adjacency", self.adjacency, np.int8)
        _expect_shape("adjacency", adjacency, (num_scms, d, d), "(S, d, d)")

        split = _as_array("split", self.split)
        if split.dtype.kind not in "iu" and not (split.size == 0 and split.dtype.kind == "f"):
            raise ValueError(f"split must be an integer array, got dtype {split.dtype}")
        if split.shape != (num_scms,):
            raise ValueError(f"split must have shape (S,) = ({num_scms},), got {_shape_str(split)}")
        if split.size and not np.isin(split, (0, 1, 2)).all():
            raise ValueError("split must only contain 0 (train), 1 (valid) or 2 (test)")
        split = split.astype(np.int8, copy=False)

        if isinstance(self.num_interventions, (bool, np.bool_)) or not isinstance(
            self.num_interventions, (int, np.integer)
        ):
            raise ValueError(f"num_interventions must be an int, got {self.num_interventions!r}")
        num_interventions = int(self.num_interventions)
        if not 1 <= num_interventions <= MAX_INTERVENTIONS:
            raise ValueError(f"num_interventions must lie in 1..{MAX_INTERVENTIONS}, got {num_interventions}")
        if index.size and (index.min() < 0 or index.max() >= num_interventions):
            raise ValueError(
                f"intervention_index values must lie in [0, num_interventions={num_interventions}), "
                f"got range [{index.min()}, {index.max()}]"
            )

        for name, array in (("observational", obs), ("interventional", inter),
                            ("intervention_values", values)):
            if not np.isfinite(array).all():
                raise ValueError(f"{name} {_shape_str(array)} contains non-finite values")

        if d and np.diagonal(adjacency, axis1=1, axis2=2).any():
            raise ValueError("adjacency must have a zero diagonal (no self-loops)")
        cyclic = np.flatnonzero(~_is_acyclic(adjacency))
        if cyclic.size:
            raise ValueError(f"adjacency must be acyclic; SCMs {cyclic[:10].tolist()} have cycles")

        names = self.variable_names
        if names is None or len(names) == 0:
            names = tuple(f"X{j}" for j in range(d))
        else:
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise ValueError("variable_names must be a sequence of str")
            names = tuple(names)
        if len(names) != d:
            raise ValueError(f"variable_names must have length d = {d}, got {len(names)}")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"variable_names must be distinct; duplicates {dup}")

        if not isinstance(self.metadata, Mapping):
            raise ValueError(f"metadata must be a dict, got {type(self.metadata).__name__}")
        metadata = _json_normalise("metadata", dict(self.metadata))

        if not isinstance(self.extras, Mapping):
            raise ValueError(f"extras must be a dict, got {type(self.extras).__name__}")
        extras: dict[str, np.ndarray] = {}
        for key, value in self.extras.items():
            if not isinstance(key, str) or not _EXTRA_NAME_RE.match(key):
                raise ValueError(f"extras key {key!r} must match {_EXTRA_NAME_RE.pattern}")
            array = _as_array(f"extras[{key!r}]", value)
            if array.dtype.kind in "OV":
                raise ValueError(f"extras[{key!r}] has unsupported dtype {array.dtype} (no objects)")
            if array.ndim == 0 or array.shape[0] != num_scms:
                raise ValueError(
                    f"extras[{key!r}] must have leading axis S = {num_scms}, got {_shape_str(array)}"
                )
            extras[key] = _readonly(array)

        setf(self, "observational", _readonly(obs))
        setf(self, "interventional", _readonly(inter))
        setf(self, "targets", _readonly(targets))
        setf(self, "intervention_index", _readonly(index))
        setf(self, "intervention_values", _readonly(values))
        setf(self, "adjacency", _readonly(adjacency))
        setf(self, "split", _readonly(split))
        setf(self, "num_interventions", num_interventions)
        setf(self, "variable_names", names)
        setf(self, "metadata", metadata)
        setf(self, "extras", extras)

    def __repr__(self) -> str:
        """Short summary (sizes only, no array contents)."""
        counts = np.bincount(self.split, minlength=3)
        return (
            f"InterventionalDataset(S={self.num_scms}, M={self.num_queries}, d={self.num_vars}, "
            f"N_obs={self.observational.shape[1]}, N_int={self.interventional.shape[2]}, "
            f"|I|={self.num_interventions}, train/valid/test={counts[0]}/{counts[1]}/{counts[2]}, "
            f"generator={self.metadata.get('generator')!r}, extras={sorted(self.extras)})"
        )

    @property
    def num_scms(self) -> int:
        """S, the number of causal models."""
        return int(self.observational.shape[0])

    @property
    def num_vars(self) -> int:
        """d, the number of variables of every causal model."""
        return int(self.observational.shape[2])

    @property
    def num_queries(self) -> int:
        """M, the number of interventional datasets (queries) per causal model."""
        return int(self.interventional.shape[1])

    def _split_indices(self, split: str | Sequence[int] | np.ndarray | None) -> np.ndarray:
        """SCM indices (int64, ascending for names) selected by a split name, index array or mask."""
        if split is None:
            return np.arange(self.num_scms)
        if isinstance(split, str):
            if split not in SPLIT_CODES:
                raise ValueError(f"split must be one of {sorted(SPLIT_CODES)}, got {split!r}")
            return np.flatnonzero(self.split == SPLIT_CODES[split])
        index = np.asarray(split)
        if index.dtype == np.bool_:
            if index.shape != (self.num_scms,):
                raise ValueError(
                    f"a boolean split mask must have shape ({self.num_scms},), got {_shape_str(index)}"
                )
            return np.flatnonzero(index)
        if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):
            raise ValueError(f"split index array must be 1-D integer, got {index.dtype} {_shape_str(index)}")
        index = index.astype(np.int64)
        if index.size and (index.min() < -self.num_scms or index.max() >= self.num_scms):
            raise ValueError(f"split indices out of range for S = {self.num_scms}")
        return index % max(self.num_scms, 1)

    def subset(self, split: str | Sequence[int] | np.ndarray) -> InterventionalDataset:
        """New dataset with only some SCMs.

        Args:
            split: "train", "valid" or "test" (SCMs with that split code, in dataset order), an
                integer index array (SCMs in that order, repeats allowed) or an (S,) bool mask.

        Returns:
            Dataset of the selected SCMs, including their extras; metadata and names are kept.
        """
        index = self._split_indices(split)
        return InterventionalDataset(
            observational=self.observational[index],
            interventional=self.interventional[index],
            targets=self.targets[index],
            intervention_index=self.intervention_index[index],
            intervention_values=self.intervention_values[index],
            adjacency=self.adjacency[index],
            split=self.split[index],
            num_interventions=self.num_interventions,
            variable_names=self.variable_names,
            metadata=self.metadata,
            extras={key: value[index] for key, value in self.extras.items()},
        )

    def graph(self, s: int) -> nx.DiGraph:
        """Causal graph of SCM ``s`` as a networkx DiGraph on nodes 0..d-1 (edge a -> b iff adjacency[s, a, b])."""
        graph = nx.DiGraph()
        graph.add_nodes_from(range(self.num_vars))
        sources, sinks = np.nonzero(self.adjacency[s])
        graph.add_edges_from(zip(sources.tolist(), sinks.tolist()))
        return graph

    def descendants(self, s: int, target_mask: np.ndarray | Sequence[bool]) -> np.ndarray:
        """Union of the descendants of the targets in SCM ``s``, targets themselves excluded.

        Args:
            s: SCM index.
            target_mask: (d,) bool or 0/1 mask of intervened variables.

        Returns:
            (d,) bool mask of variables that are (direct or indirect) descendants of some target
            and are not targets themselves.
        """
        mask = np.asarray(target_mask)
        if mask.shape != (self.num_vars,):
            raise ValueError(f"target_mask must have shape (d,) = ({self.num_vars},), got {_shape_str(mask)}")
        mask = _as_binary("target_mask", mask, np.bool_)
        graph = self.graph(s)
        result = np.zeros(self.num_vars, dtype=bool)
        for target in np.flatnonzero(mask).tolist():
            for node in nx.descendants(graph, target):
                result[node] = True
        result[mask] = False
        return result

    def tasks(self, split: str | Sequence[int] | np.ndarray | None = "train") -> TaskArrays:
        """Flatten the selected SCMs over (scm, query) pairs into :class:`TaskArrays`.

        Args:
            split: as in :meth:`subset`; ``None`` selects all SCMs.

        Returns:
            TaskArrays with T = S_split * M rows ordered SCM-major: row ``k * M + m`` is query
            ``m`` of the k-th selected SCM. ``observational (T, N_obs, d)``, ``interventional
            (T, N_int, d)``, ``targets (T, d)`` float32, ``intervention_index (T,)``, ``scm (T,)``
            and ``query (T,)`` int32.
        """
        index = self._split_indices(split)
        num_queries = self.num_queries
        num_tasks = index.size * num_queries
        d = self.num_vars
        return TaskArrays(
            observational=np.repeat(self.observational[index], num_queries, axis=0),
            interventional=self.interventional[index].reshape(num_tasks, self.interventional.shape[2], d),
            targets=self.targets[index].reshape(num_tasks, d).astype(np.float32),
            intervention_index=self.intervention_index[index].reshape(num_tasks).astype(np.int32),
            scm=np.repeat(index, num_queries).astype(np.int32),
            query=np.tile(np.arange(num_queries, dtype=np.int32), index.size),
        )

    def _arrays(self) -> dict[str, np.ndarray]:
        """All arrays keyed by their name in the data file (core fields, then ``extra/<name>``)."""
        arrays = {name: getattr(self, name) for name, _ in _CORE_ARRAYS}
        for key in sorted(self.extras):
            arrays[_EXTRA_PREFIX + key] = self.extras[key]
        return arrays

    def save(self, path: str | os.PathLike) -> None:
        """Write the dataset to directory ``path`` (created if needed) without pickle.

        Writes ``data-<sha256[:12]>.npz`` (core arrays plus ``extra/<name>``), then the commit
        point ``manifest.json`` (format, S/M/d, every array's shape and dtype, num_interventions,
        variable_names, metadata, library version, the data file's name and SHA-256): a killed
        save leaves the old or the new dataset (:func:`activa_ppl.dataset_io.write_dataset_folder`).
        """
        write_dataset_folder(path, self._arrays(), {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "library_version": library_version(),
            "num_scms": self.num_scms,
            "num_queries": self.num_queries,
            "num_vars": self.num_vars,
            "num_interventions": self.num_interventions,
            "variable_names": list(self.variable_names),
            "extras": sorted(self.extras),
            "metadata": self.metadata,
        })

    @classmethod
    def load(cls, path: str | os.PathLike) -> InterventionalDataset:
        """Read a dataset written by :meth:`save`, bit-exactly.

        :func:`activa_ppl.dataset_io.read_dataset_folder` verifies the files, the format name and
        version, the SHA-256 of the data file and the shapes and dtypes listed in the manifest
        (never unpickling) and the manifest's S/M/d; here the core arrays' presence and dtypes
        and the extras are checked. Raises ValueError on any mismatch.
        """
        arrays, manifest, data_path = read_dataset_folder(path, FORMAT_NAME, FORMAT_VERSION)
        for name, dtype in _CORE_ARRAYS:
            if name not in arrays:
                raise ValueError(f"{data_path!r} lacks the array {name!r}")
            if arrays[name].dtype != np.dtype(dtype):
                raise ValueError(f"array {name!r} has dtype {arrays[name].dtype}, expected {np.dtype(dtype)}")
        extras = {key[len(_EXTRA_PREFIX):]: value for key, value in arrays.items()
                  if key.startswith(_EXTRA_PREFIX)}
        if sorted(extras) != sorted(manifest["extras"]):
            raise ValueError(f"extras in {data_path!r} do not match the manifest's list")
        return cls(
            **{name: arrays[name] for name, _ in _CORE_ARRAYS},
            num_interventions=manifest["num_interventions"],
            variable_names=tuple(manifest["variable_names"]),
            metadata=manifest["metadata"],
            extras=extras,
        )


def load_dataset(path: str | os.PathLike) -> InterventionalDataset:
    """Read a dataset directory written by :meth:`InterventionalDataset.save` (same as ``InterventionalDataset.load``)."""
    return InterventionalDataset.load(path)
