"""Tests of activa_ppl.data: InterventionalDataset validation, views, tasks and save/load."""

from __future__ import annotations

import json
import os
import re

import networkx as nx
import numpy as np
import pytest
from hypothesis import event
from hypothesis import strategies as st

from activa_ppl.data import (
    FORMAT_NAME,
    InterventionalDataset,
    TaskArrays,
    load_dataset,
)
from helpers import DEEP, FAST, cast, dataset_file, float_array, fuzz, small_dataset, values_ok

S, M, N_OBS, N_INT, D = 5, 3, 4, 6, 4


def _fields(seed: int = 0) -> dict:
    """Keyword arguments of a small valid dataset; SCM s has the chain 0 -> 1 -> 2 and isolated 3."""
    rng = np.random.default_rng(seed)
    adjacency = np.zeros((S, D, D), dtype=np.int8)
    adjacency[:, 0, 1] = 1
    adjacency[:, 1, 2] = 1
    targets = np.zeros((S, M, D), dtype=bool)
    for m in range(M):
        targets[:, m, m] = True
    return dict(
        observational=rng.normal(size=(S, N_OBS, D)).astype(np.float32),
        interventional=rng.normal(size=(S, M, N_INT, D)).astype(np.float32),
        targets=targets,
        intervention_index=rng.integers(0, 2, size=(S, M)).astype(np.int32),
        intervention_values=rng.normal(size=(S, M)).astype(np.float32),
        adjacency=adjacency,
        split=np.array([0, 1, 2, 0, 2], dtype=np.int8),
        num_interventions=2,
        variable_names=("a", "b", "c", "d"),
        metadata={"generator": "hand", "params": {"p": 0.3, "range": [0.5, 2.0]}, "seed": 7},
        extras={
            "weights": rng.normal(size=(S, D, D)),
            "codes": np.arange(S, dtype=np.int16),
            "flags": rng.random((S, 2)) < 0.5,
        },
    )


@pytest.fixture
def dataset() -> InterventionalDataset:
    return InterventionalDataset(**_fields())


def _assert_bit_equal(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def test_properties_and_dtypes(dataset):
    assert (dataset.num_scms, dataset.num_queries, dataset.num_vars) == (S, M, D)
    assert dataset.observational.dtype == np.float32
    assert dataset.targets.dtype == np.bool_
    assert dataset.intervention_index.dtype == np.int32
    assert dataset.adjacency.dtype == np.int8
    assert dataset.split.dtype == np.int8
    assert not dataset.observational.flags.writeable
    assert "S=5" in repr(dataset)


def test_default_variable_names_and_coercion():
    fields = _fields()
    fields.pop("variable_names")
    fields["targets"] = fields["targets"].astype(np.float64)
    fields["observational"] = fields["observational"].astype(np.float64)
    ds = InterventionalDataset(**fields)
    assert ds.variable_names == ("X0", "X1", "X2", "X3")
    assert ds.targets.dtype == np.bool_ and ds.observational.dtype == np.float32


def test_metadata_is_json_normalised():
    fields = _fields()
    fields["metadata"] = {"range": (0.5, 2.0)}
    assert InterventionalDataset(**fields).metadata == {"range": [0.5, 2.0]}


def test_save_load_round_trip_is_bit_exact(dataset, tmp_path):
    path = tmp_path / "ds"
    dataset.save(path)
    assert sorted(os.listdir(path)) == [dataset_file(path).name, "manifest.json"]
    assert re.fullmatch(r"data-[0-9a-f]{12}\.npz", dataset_file(path).name)
    loaded = load_dataset(path)
    for name in ("observational", "interventional", "targets", "intervention_index",
                 "intervention_values", "adjacency", "split"):
        _assert_bit_equal(getattr(dataset, name), getattr(loaded, name))
    assert sorted(loaded.extras) == sorted(dataset.extras)
    for key in dataset.extras:
        _assert_bit_equal(dataset.extras[key], loaded.extras[key])
    assert loaded.metadata == dataset.metadata
    assert loaded.variable_names == dataset.variable_names
    assert loaded.num_interventions == dataset.num_interventions
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == FORMAT_NAME and manifest["format_version"] == 2
    assert manifest["arrays"]["interventional"]["shape"] == [S, M, N_INT, D]
    assert "extra/weights" in manifest["arrays"]
    # Saving again over an existing directory works and leaves no temp files behind.
    InterventionalDataset.load(path).save(path)
    assert sorted(os.listdir(path)) == [dataset_file(path).name, "manifest.json"]


def test_load_refuses_checksum_mismatch(dataset, tmp_path):
    dataset.save(tmp_path)
    data = bytearray(dataset_file(tmp_path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    dataset_file(tmp_path).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        InterventionalDataset.load(tmp_path)


@pytest.mark.parametrize("missing", ["data", "manifest.json"])
def test_load_refuses_missing_file(dataset, tmp_path, missing):
    dataset.save(tmp_path)
    os.remove(dataset_file(tmp_path) if missing == "data" else tmp_path / missing)
    with pytest.raises(ValueError, match="missing"):
        InterventionalDataset.load(tmp_path)


def test_load_refuses_missing_directory(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(tmp_path / "nope")


@pytest.mark.parametrize(
    "field, value, match",
    [("format", "something.else", "format"), ("format_version", 99, "format_version")],
)
def test_load_refuses_wrong_format(dataset, tmp_path, field, value, match):
    dataset.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest[field] = value
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=match):
        InterventionalDataset.load(tmp_path)


def test_load_refuses_manifest_shape_mismatch(dataset, tmp_path):
    dataset.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["arrays"]["observational"]["shape"] = [1, 2, 3]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="observational"):
        InterventionalDataset.load(tmp_path)


def test_tasks_shapes_and_order(dataset):
    tasks = dataset.tasks(split=None)
    assert isinstance(tasks, TaskArrays)
    T = S * M
    assert tasks.observational.shape == (T, N_OBS, D) and tasks.observational.dtype == np.float32
    assert tasks.interventional.shape == (T, N_INT, D) and tasks.interventional.dtype == np.float32
    assert tasks.targets.shape == (T, D) and tasks.targets.dtype == np.float32
    assert set(np.unique(tasks.targets)) <= {0.0, 1.0}
    for name in ("intervention_index", "scm", "query"):
        assert getattr(tasks, name).shape == (T,) and getattr(tasks, name).dtype == np.int32
    for t in range(T):
        s, m = divmod(t, M)
        assert tasks.scm[t] == s and tasks.query[t] == m
        np.testing.assert_array_equal(tasks.observational[t], dataset.observational[s])
        np.testing.assert_array_equal(tasks.interventional[t], dataset.interventional[s, m])
        np.testing.assert_array_equal(tasks.targets[t], dataset.targets[s, m])
        assert tasks.intervention_index[t] == dataset.intervention_index[s, m]


def test_tasks_default_split_is_train(dataset):
    tasks = dataset.tasks()
    train = np.flatnonzero(dataset.split == 0)
    np.testing.assert_array_equal(tasks.scm, np.repeat(train, M))
    np.testing.assert_array_equal(tasks.query, np.tile(np.arange(M), train.size))
    np.testing.assert_array_equal(tasks.interventional[M], dataset.interventional[train[1], 0])
    assert dataset.tasks("valid").observational.shape == (M, N_OBS, D)


def test_subset(dataset):
    test = dataset.subset("test")
    assert test.num_scms == 2 and (test.split == 2).all()
    np.testing.assert_array_equal(test.observational, dataset.observational[[2, 4]])
    np.testing.assert_array_equal(test.extras["weights"], dataset.extras["weights"][[2, 4]])
    picked = dataset.subset(np.array([3, 0]))
    np.testing.assert_array_equal(picked.interventional, dataset.interventional[[3, 0]])
    np.testing.assert_array_equal(picked.extras["codes"], [3, 0])
    assert picked.metadata == dataset.metadata and picked.variable_names == dataset.variable_names
    masked = dataset.subset(dataset.split == 1)
    assert masked.num_scms == 1
    with pytest.raises(ValueError, match="split"):
        dataset.subset("training")


def test_graph_and_descendants_on_chain(dataset):
    graph = dataset.graph(0)
    assert isinstance(graph, nx.DiGraph)
    assert sorted(graph.nodes) == [0, 1, 2, 3] and sorted(graph.edges) == [(0, 1), (1, 2)]
    np.testing.assert_array_equal(dataset.descendants(0, [1, 0, 0, 0]), [False, True, True, False])
    np.testing.assert_array_equal(dataset.descendants(0, [0, 1, 0, 0]), [False, False, True, False])
    np.testing.assert_array_equal(dataset.descendants(0, [0, 0, 1, 0]), [False] * 4)
    np.testing.assert_array_equal(dataset.descendants(0, [0, 0, 0, 1]), [False] * 4)
    # Union over targets, targets themselves excluded.
    np.testing.assert_array_equal(
        dataset.descendants(0, np.array([True, True, False, False])), [False, False, True, False]
    )


def _with(**changes) -> dict:
    fields = _fields()
    fields.update(changes)
    return fields


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(observational=np.zeros((S, N_OBS), np.float32)), "observational"),
        (dict(interventional=np.zeros((S + 1, M, N_INT, D), np.float32)), "interventional"),
        (dict(interventional=np.zeros((S, M, N_INT, D + 1), np.float32)), "interventional"),
        (dict(targets=np.zeros((S, M, D + 1), bool)), "targets"),
        (dict(targets=np.full((S, M, D), 0.5)), "targets"),
        (dict(intervention_index=np.zeros((S, M + 1), np.int32)), "intervention_index"),
        (dict(intervention_index=np.full((S, M), 2, np.int32)), "intervention_index"),
        (dict(intervention_values=np.zeros((S,), np.float32)), "intervention_values"),
        (dict(adjacency=np.zeros((S, D, D + 1), np.int8)), "adjacency"),
        (dict(adjacency=np.broadcast_to(np.eye(D, dtype=np.int8), (S, D, D))), "adjacency"),
        (dict(split=np.zeros((S + 1,), np.int8)), "split"),
        (dict(split=np.full((S,), 3, np.int8)), "split"),
        (dict(num_interventions=0), "num_interventions"),
        (dict(variable_names=("a", "b")), "variable_names"),
        (dict(metadata={"x": object()}), "metadata"),
        (dict(metadata={"x": float("nan")}), "metadata"),
        (dict(extras={"w": np.zeros((S + 1, 2))}), "extras"),
        (dict(extras={"bad/name": np.zeros((S,))}), "extras"),
        (dict(extras={"obj": np.array([None] * S, dtype=object)}), "extras"),
    ],
)
def test_validation_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        InterventionalDataset(**_with(**changes))


@pytest.mark.parametrize("name", ["observational", "interventional", "intervention_values"])
def test_validation_rejects_non_finite(name):
    fields = _fields()
    array = np.array(fields[name])
    array.flat[0] = np.nan
    with pytest.raises(ValueError, match=name):
        InterventionalDataset(**_with(**{name: array}))


def test_validation_rejects_cyclic_adjacency():
    adjacency = _fields()["adjacency"].copy()
    adjacency[1, 2, 0] = 1  # 0 -> 1 -> 2 -> 0
    with pytest.raises(ValueError, match="acyclic"):
        InterventionalDataset(**_with(adjacency=adjacency))


def test_frozen(dataset):
    with pytest.raises(AttributeError):
        dataset.num_interventions = 3


# ------------------------------------------------ constructor: messages and fuzzing ----
def test_dataset_constructor_messages():
    with pytest.raises(ValueError, match=r"observational: 1 value\(s\) of magnitude > 1e\+15, first at scm 2"):
        obs = np.zeros((4, 3, 2))
        obs[2, 1, 0] = 1e300
        small_dataset(observational=obs)
    with pytest.raises(ValueError, match="interventional: 1 non-finite value.*scm 0, query 1, sample 2"):
        inter = np.zeros((4, 2, 3, 2))
        inter[0, 1, 2, 1] = np.nan
        small_dataset(interventional=inter)
    with pytest.raises(ValueError, match="observational cannot be read as an array"):
        small_dataset(observational=[[[1.0, 2.0]], [[1.0]]])


@st.composite
def dataset_fields(draw):
    """Keyword arguments of InterventionalDataset, one field damaged (or none)."""
    field = draw(st.sampled_from(["observational", "interventional", "intervention_values",
                                  "intervention_index", "targets", "adjacency", "split", "none"]))
    shapes = {"observational": (4, 3, 2), "interventional": (4, 2, 3, 2), "intervention_values": (4, 2),
              "intervention_index": (4, 2), "targets": (4, 2, 2), "adjacency": (4, 2, 2), "split": (4,)}
    if field == "none":
        return {}, True
    shape = shapes[field] if draw(st.booleans()) else draw(st.lists(st.integers(0, 4), max_size=4).map(tuple))
    array, dtype_ok = cast(draw, float_array(draw, shape))
    return {field: array}, None  # validity: too many rules to restate; soundness is checked


def _constructor_property(fields):
    changes, expected = fields
    try:
        data = small_dataset(**changes)
    except ValueError as e:
        event("refused")
        assert expected is not True, str(e)
        assert any(name in str(e) for name in ("observational", "interventional", "intervention_values",
                                                 "intervention_index", "targets", "adjacency", "split")), str(e)
        return
    event("accepted")
    for name in ("observational", "interventional", "intervention_values"):
        assert values_ok(getattr(data, name))
    assert set(np.unique(data.split)) <= {0, 1, 2}
    assert ((data.intervention_index >= 0) & (data.intervention_index < data.num_interventions)).all()


test_fuzz_dataset_constructor, test_fuzz_dataset_constructor_deep = fuzz(
    FAST, DEEP, fields=dataset_fields())(_constructor_property)
