"""Reliability and security (issue 9): bad input, numerical faults, interrupted runs, untrusted
files, determinism. The summary with counts is docs/reliability.md.

Held elsewhere, and not repeated here:

* SIGKILL mid-run and a bit-identical resume: ``tests/test_training.py``
  (``test_resume_after_sigkill_is_bit_identical``); same seed → bit-identical training and a
  different seed → different parameters: ``test_same_seed_is_bit_identical`` and
  ``test_other_seed_differs`` there; same seed → identical prediction: ``test_predict_seed`` in
  ``tests/test_fitted.py``.
* Every single-byte flip of a safe array file refused or harmless, a pickle payload in a saved
  model's parameter file refused, failed model saves leaving the previous model whole:
  ``tests/test_fitted.py``.
* The table-driven bad-input cases of ``predict``, ``predict_batch``, the CSV reader and the
  dataset constructor: ``tests/test_fitted.py``, ``tests/test_cli.py``, ``tests/test_data.py``.

Here: property-based fuzzing (hypothesis) of every loader and of the prediction path, the
non-finite policies of ``train`` (rolled back, stopped or retried at a halved learning rate,
never written), corrupted and interrupted checkpoints, pickle payloads in a dataset folder and
in a training checkpoint, positive-definite covariances on extreme inputs, and, behind
``-m slow``, deeper fuzzing, a real divergence after a good checkpoint, a real retry, and
determinism across fresh interpreters.

Fast fuzz tests replay a fixed set of examples (``derandomize=True``); their ``_deep`` twins
(``-m slow``) draw new random examples on every run. Valid prediction inputs are drawn with
the two shapes (20, 3) and (5, 1) only, so that the jitted predictor compiles twice, not once
per example.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import activa_ppl as ap
from activa_ppl import loop, training
from activa_ppl.checkpoint import CheckpointError, atomic_write_bytes, load_arrays, save_arrays
from activa_ppl.cli import main
from activa_ppl.config import TrainConfig
from activa_ppl.csv_input import read_csv
from activa_ppl.data import InterventionalDataset, load_dataset
from activa_ppl.training import CHECKPOINT_NAME, METRICS_NAME, TrainingDiverged
from activa_ppl.validation import MAX_ABS_VALUE

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
FAST = settings(max_examples=150, derandomize=True, **_COMMON)
DEEP = settings(max_examples=1000, derandomize=False, **_COMMON)
FAST_SMALL = settings(max_examples=25, derandomize=True, **_COMMON)
DEEP_SMALL = settings(max_examples=300, derandomize=False, **_COMMON)

VALID_SHAPES = ((20, 3), (5, 1))  # (N, d) of valid observations: two compiles in all


class _Quiet:
    """A fixture value that hypothesis prints by name, not by its (huge) repr."""

    def __init__(self, value, name: str):
        self.value, self.name = value, name

    def __repr__(self) -> str:
        return self.name


@pytest.fixture(scope="module")
def model(tiny_fitted) -> _Quiet:
    """The session's untrained tiny model, printed as ``tiny_fitted`` in failure reports."""
    return _Quiet(tiny_fitted, "tiny_fitted")


def _fuzz(fast, deep, **strategies):
    """Turn a property into a fast test and a ``@pytest.mark.slow`` deep twin."""
    def make(body):
        quick = fast(given(**strategies)(body))
        thorough = pytest.mark.slow(deep(given(**strategies)(body)))
        return quick, thorough
    return make


def _assert_sound_mixture(mix, d: int):
    """Finite weights summing to 1, finite locations, symmetric positive-definite covariances."""
    weights, locs, cov = (np.asarray(x, dtype=np.float64) for x in (mix.weights, mix.locs, mix.covariances))
    assert np.isfinite(weights).all() and np.isfinite(locs).all() and np.isfinite(cov).all()
    assert locs.shape[-1] == d and cov.shape[-2:] == (d, d)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(cov, np.swapaxes(cov, -1, -2), rtol=1e-5, atol=1e-6)
    assert np.linalg.eigvalsh(cov).min() > 0
    assert np.isfinite(np.asarray(jnp.linalg.cholesky(mix.covariances))).all()  # float32, as used


# ================================================================ strategies: raw values ====
_SPECIAL = [0.0, -0.0, 1.0, 1e-30, 5e-324, 1e15, -1e15, 1.0000001e15, -1.0000001e15, 3.4e38, 1e300,
            math.nan, math.inf, -math.inf]
_FLOATS = st.one_of(st.floats(-10, 10), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(_SPECIAL))


def _float_array(draw, shape, constant_columns=True, bad_values=None) -> np.ndarray:
    """A float64 array of ``shape``: ordinary, tiny or huge values, constant columns.

    ``bad_values``: True plants at least one NaN, inf or out-of-range value; False plants none;
    None mixes freely.
    """
    size = int(np.prod(shape))
    mode = draw(st.sampled_from(["normal", "scaled", "special"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if mode == "normal":
        array = rng.normal(size=shape)
    elif mode == "scaled":  # one scale for all: tiny or huge but valid magnitudes
        array = rng.normal(size=shape) * draw(st.sampled_from([1e-30, 1e-8, 1e6, 1e12, 6e13]))
    else:
        pool = _FLOATS if bad_values is None else st.one_of(
            st.floats(-MAX_ABS_VALUE, MAX_ABS_VALUE), st.sampled_from([v for v in _SPECIAL if _values_ok(v)]))
        array = np.array(draw(st.lists(pool, min_size=size, max_size=size)), dtype=np.float64).reshape(shape)
    array = np.asarray(array, dtype=np.float64)
    if constant_columns and array.ndim >= 1 and shape[-1] > 0 and draw(st.booleans()):
        j = draw(st.integers(0, shape[-1] - 1))
        array[..., j] = draw(st.sampled_from([0.0, 1.0, -7.5, 1e15]))
    if bad_values and size:
        position = np.unravel_index(draw(st.integers(0, size - 1)), array.shape)
        array[position] = draw(st.sampled_from([math.nan, math.inf, -math.inf, 1.0000001e15, -3e38, 1e300]))
    return array


def _values_ok(array) -> bool:
    with np.errstate(invalid="ignore", over="ignore"):
        a = np.asarray(array, dtype=np.float64)
        return bool(np.isfinite(a).all() and (np.abs(a) <= MAX_ABS_VALUE).all())


_GOOD_DTYPES = ["float64", "float64", "float32", "float16", "int64", "int32", "uint8", "bool"]
_BAD_DTYPES = ["complex128", "str", "object"]
_DTYPES = _GOOD_DTYPES + _BAD_DTYPES


def _cast(draw, array: np.ndarray, bad: bool | None = None) -> tuple[np.ndarray, bool]:
    """Cast to a random dtype (``bad``: a non-numeric one); return it and whether it is numeric."""
    dtype = draw(st.sampled_from(_DTYPES if bad is None else _BAD_DTYPES if bad else _GOOD_DTYPES))
    with np.errstate(invalid="ignore", over="ignore"):
        if dtype in ("int64", "int32", "uint8"):
            safe = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
            return np.clip(safe, np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype), True
        if dtype == "bool":
            return np.asarray(array > 0), True
        if dtype == "str":
            return np.asarray(array).astype(str), False
        if dtype == "object":
            out = np.empty(np.shape(array), dtype=object)
            out[...] = None
            return out, False
        return np.asarray(array).astype(dtype), dtype != "complex128"


_WRONG = st.one_of(st.just(frozenset()), st.frozensets(st.sampled_from(
    ["shape", "dtype", "values", "frame", "target", "intervention", "seed", "num_latents"]), min_size=1, max_size=2))


@st.composite
def predict_calls(draw):
    """Arguments of ``FittedActiva.predict`` (about half of them valid) and whether they are."""
    wrong = draw(_WRONG)
    if "shape" not in wrong:
        shape = draw(st.sampled_from(VALID_SHAPES))
    else:  # anything that is not (N >= 2, d >= 1)
        shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple).filter(
            lambda s: len(s) != 2 or s[0] < 2 or s[1] < 1))
    array, numeric = _cast(draw, _float_array(draw, shape, bad_values="values" in wrong), bad="dtype" in wrong)
    obs_ok = "shape" not in wrong and numeric and _values_ok(array)
    d = shape[1] if len(shape) == 2 else 1
    names = [f"X{j}" for j in range(max(d, 1))]
    obs = array
    if "shape" not in wrong and ("frame" in wrong or draw(st.booleans())):  # as a DataFrame
        names = draw(st.lists(st.sampled_from(["a", "b", "c", "gene 1", "7", "é"]), min_size=d, max_size=d,
                              unique="frame" not in wrong))
        obs = pd.DataFrame(array, columns=names)
        if "frame" in wrong and len(set(names)) == d:
            obs[obs.columns[0]] = "x"  # a text column
        obs_ok = obs_ok and "frame" not in wrong and array.dtype != bool  # bool columns are refused
    target_kind = draw(st.sampled_from(["bad_index", "bad_name", "empty", "bad_mask", "float", "none"]
                                       if "target" in wrong else ["index", "name", "mask", "list"]))
    target = {
        "index": draw(st.integers(0, max(d - 1, 0))),
        "name": names[draw(st.integers(0, len(names) - 1))],
        "mask": [j == 0 for j in range(d)],
        "list": [0, d - 1],
        "bad_index": draw(st.sampled_from([d, d + 3, -1])),
        "bad_name": "no such column",
        "empty": [],
        "bad_mask": [True] * (d + 1),
        "float": 0.5,
        "none": None,
    }[target_kind]
    target_ok = "target" not in wrong and not (target_kind == "name" and names.count(target) != 1)
    intervention = draw(st.sampled_from([1, -1, 0.0, True, "0"] if "intervention" in wrong else [0, np.int64(0)]))
    seed = draw(st.sampled_from([2**64, "x", 1.5, None, np.zeros(3, np.uint32)] if "seed" in wrong
                                else [0, 12345, 2**63 - 1, -5, np.int32(7), jax.random.PRNGKey(3)]))
    num_latents = draw(st.sampled_from([0, -2, 1.5, True, "3"] if "num_latents" in wrong else [None]))
    ok = obs_ok and target_ok and not wrong & {"intervention", "seed", "num_latents"}
    return dict(obs=obs, target=target, intervention=intervention, seed=seed,
                num_latents=num_latents), ok, d


def _predict_property(model, call):
    kwargs, ok, d = call
    try:
        mix = model.value.predict(**kwargs)
    except ValueError as e:
        assert not ok, f"valid input refused: {e}"
        argument = str(e).split(":")[0]
        assert argument in {"obs", "target", "intervention", "seed", "num_latents"}, str(e)
        event(f"refused, naming {argument}")
        return
    assert ok, "invalid input accepted"
    event("predicted")
    assert mix.batch_shape == () and mix.num_vars == d
    _assert_sound_mixture(mix, d)


test_fuzz_predict, test_fuzz_predict_deep = _fuzz(FAST, DEEP, call=predict_calls())(_predict_property)


@st.composite
def predict_batch_calls(draw):
    """Arguments of ``FittedActiva.predict_batch`` (about half valid) and whether they are."""
    wrong = draw(st.one_of(st.just(frozenset()), st.frozensets(st.sampled_from(
        ["shape", "dtype", "values", "targets", "index"]), min_size=1, max_size=2)))
    if "shape" not in wrong:
        n, d = draw(st.sampled_from(VALID_SHAPES))
        shape = (1, n, d)
    else:
        shape = draw(st.lists(st.integers(0, 3), min_size=0, max_size=4).map(tuple).filter(
            lambda s: len(s) != 3 or s[0] < 1 or s[1] < 2 or s[2] < 1))
    obs, numeric = _cast(draw, _float_array(draw, shape, bad_values="values" in wrong), bad="dtype" in wrong)
    ok = "shape" not in wrong and numeric and _values_ok(obs)
    q = shape[0] if len(shape) == 3 else 1
    d = shape[2] if len(shape) == 3 else 1  # 0 possible (an invalid shape)
    targets = np.zeros((q, d))
    targets[:, :1] = 1
    targets_kind = draw(st.sampled_from(["zero_row", "two", "nan", "shape", "text"] if "targets" in wrong
                                        else ["one", "all"]))
    if targets_kind == "all":
        targets[:] = 1
    elif targets_kind == "zero_row":
        targets[:1] = 0
    elif targets_kind == "two":
        targets[:1, :1] = 2
    elif targets_kind == "nan":
        targets[:1, :1] = np.nan
    elif targets_kind == "shape":
        targets = np.ones((q, d + 1))
    elif targets_kind == "text":
        targets = targets.astype(str)
    index = draw(st.sampled_from(
        [np.ones(q, np.int64), np.zeros(q), np.zeros(q + 1, np.int64), np.full(q, -1)] if "index" in wrong
        else [np.zeros(q, np.int64), np.zeros(q, np.int32), np.zeros(q, np.uint8)]))
    ok = ok and not wrong & {"targets", "index"}
    return dict(observational=obs, targets=targets, intervention_index=index), ok, d


def _predict_batch_property(model, call):
    kwargs, ok, d = call
    try:
        mix = model.value.predict_batch(**kwargs)
    except ValueError as e:
        assert not ok, f"valid input refused: {e}"
        argument = str(e).split(":")[0]
        assert argument in {"observational", "targets", "intervention_index"}, str(e)
        event(f"refused, naming {argument}")
        return
    assert ok, "invalid input accepted"
    event("predicted")
    _assert_sound_mixture(mix, d)


test_fuzz_predict_batch, test_fuzz_predict_batch_deep = _fuzz(
    FAST, DEEP, call=predict_batch_calls())(_predict_batch_property)


# ======================================================================= CSV through the CLI ====
_NAMES = ["a", "b", "gene_1", "X 2", "é", "7a", "long name"]
_BAD_CELLS = ["x", "1;5", "--1", "1_000", "0x10", "TRUE", "1 2", "nan(", "e5", "+-3"]
_NONFINITE_CELLS = ["nan", "NaN", "inf", "-inf", "1e400", "-1e999", "1e16", "-2e15"]
_READ_ERRORS = {"dup_header", "empty_name", "extra_field", "missing_field", "bad_cell", "empty_cell",
                "header_only", "empty_file", "invalid_utf8", "nul", "unclosed_quote"}
_LATER_ERRORS = {"nonfinite_cell", "one_row"}  # read fine, refused by the predict path
_HARMLESS = {"blank_lines", "bom", "crlf", "spaces", "quotes", "no_final_newline"}


@st.composite
def csv_files(draw):
    """A CSV of observational samples, mutated.

    Returns ``(bytes, names, values, exact, mutations)``: the header names and numbers written
    (``exact``: printed with all digits), and the set of mutations that took effect.
    """
    n, d = draw(st.sampled_from(VALID_SHAPES))
    names = draw(st.lists(st.sampled_from(_NAMES), min_size=d, max_size=d, unique=True))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.normal(size=(n, d)) * draw(st.sampled_from([1.0, 1e-6, 1e9]))
    exact = draw(st.booleans())
    fmt = repr if exact else (lambda v: f"{v:e}")
    wanted = draw(st.lists(st.sampled_from(sorted(_READ_ERRORS | _LATER_ERRORS | _HARMLESS)),
                           max_size=3, unique=True))
    done = set()
    if "one_row" in wanted or "header_only" in wanted:  # first: the other mutations see the rest
        n_rows = 0 if "header_only" in wanted else 1
        done.add("header_only" if n_rows == 0 else "one_row")
        values = values[:n_rows]
    cells = [list(names)] + [[fmt(float(v)) for v in row] for row in values]
    if "spaces" in wanted:
        cells, _ = [[f"  {c} " for c in row] for row in cells], done.add("spaces")
    if "quotes" in wanted:  # after the spaces: '"  1.5 "', quotes outermost
        cells, _ = [[f'"{c}"' for c in row] for row in cells], done.add("quotes")
    if "dup_header" in wanted:
        cells[0] = cells[0] + [cells[0][0]]
        cells[1:] = [row + ["0"] for row in cells[1:]]
        done.add("dup_header")
    if "empty_name" in wanted and len(cells[0]) > 1:  # (one empty name alone: a blank line)
        cells[0][draw(st.integers(0, len(cells[0]) - 1))] = "  "
        done.add("empty_name")
    free_lines = list(range(1, len(cells)))  # each line mutation gets a line of its own
    for kind in ("extra_field", "missing_field", "bad_cell", "empty_cell", "nonfinite_cell", "unclosed_quote"):
        if kind not in wanted or not free_lines:
            continue
        line = free_lines.pop(draw(st.integers(0, len(free_lines) - 1)))
        if kind in ("empty_cell", "missing_field") and len(cells[line]) == 1:
            continue  # a one-column row without its value is a blank line, which is skipped
        if kind == "extra_field":
            cells[line].append("1")
        elif kind == "missing_field":
            cells[line].pop()
        elif kind == "bad_cell":
            cells[line][0] = draw(st.sampled_from(_BAD_CELLS))
        elif kind == "empty_cell":
            cells[line][-1] = ""
        elif kind == "nonfinite_cell":
            cells[line][-1] = draw(st.sampled_from(_NONFINITE_CELLS))
        else:
            cells[line][0] = '"3'
        done.add(kind)
    lines = [",".join(row) for row in cells]
    if "blank_lines" in wanted:
        for _ in range(2):
            lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["", "   "])))
        done.add("blank_lines")
    newline = "\r\n" if "crlf" in wanted else "\n"
    text = newline.join(lines) + ("" if "no_final_newline" in wanted else newline)
    done |= {k for k in ("crlf", "no_final_newline") if k in wanted}
    if "empty_file" in wanted:
        text = draw(st.sampled_from(["", "\n", "\n\n  \n"]))
        done = {k for k in done if k in _HARMLESS} | {"empty_file"}
    data = text.encode("utf-8")
    if "bom" in wanted:
        data, _ = b"\xef\xbb\xbf" + data, done.add("bom")
    if "invalid_utf8" in wanted:
        data, _ = data + b"\xff\xfe\x00junk", done.add("invalid_utf8")
    if "nul" in wanted:
        data = data.replace(b",", b"\x00,", 1) if b"," in data else data + b"\x00"
        done.add("nul")
    return data, names, values, exact, done


def _csv_property(model, csv_file):
    data, names, values, exact, mutations = csv_file
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "obs.csv", Path(tmp) / "samples.csv"
        path.write_bytes(data)
        read_fails = bool(mutations & _READ_ERRORS)
        # 1. The reader alone: ValueError naming the file, or exactly the numbers written.
        try:
            frame = read_csv(path)
        except ValueError as e:
            assert read_fails, f"valid CSV refused ({sorted(mutations)}): {e}"
            assert str(e).startswith(f"{path}:"), str(e)
        else:
            assert not read_fails, f"malformed CSV accepted: {sorted(mutations)}"
            assert list(frame.columns) == names and frame.shape == values.shape
            if "nonfinite_cell" not in mutations:
                if exact:
                    np.testing.assert_array_equal(frame.to_numpy(), values)
                else:
                    np.testing.assert_allclose(frame.to_numpy(), values, rtol=1e-6)
        # 2. The whole command: exit 0 with finite samples, or exit 2 with one error line.
        stderr = io.StringIO()
        with mock.patch("activa_ppl.zoo.resolve_model", return_value=model.value), \
                contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = main(["predict", "--model", "tiny", "--data", str(path), "--target", names[0],
                         "--num-samples", "8", "--out", str(out)])
        message = stderr.getvalue()
        event("exit 0" if code == 0 else "exit 2")
        if not mutations & (_READ_ERRORS | _LATER_ERRORS):
            assert code == 0, message
            samples = pd.read_csv(out)
            assert list(samples.columns) == names and np.isfinite(samples.to_numpy()).all()
        else:
            assert code == 2 and message.startswith("activa: error:") and message.count("\n") == 1, message


test_fuzz_csv_predict_cli, test_fuzz_csv_predict_cli_deep = _fuzz(
    FAST, DEEP, csv_file=csv_files())(_csv_property)


# ================================================================ dataset folders (loader) ====
def _small_dataset(**changes) -> InterventionalDataset:
    rng = np.random.default_rng(0)
    s, m, n, d = 4, 2, 3, 2
    targets = np.zeros((s, m, d), bool)
    targets[:, 0, 0] = targets[:, 1, 1] = True
    adjacency = np.zeros((s, d, d), np.int8)
    adjacency[:, 0, 1] = 1
    fields = dict(observational=rng.normal(size=(s, n, d)), interventional=rng.normal(size=(s, m, n, d)),
                  targets=targets, intervention_index=np.zeros((s, m), np.int32),
                  intervention_values=np.full((s, m), 5.0), adjacency=adjacency,
                  split=np.array([0, 0, 1, 2], np.int8), num_interventions=1,
                  variable_names=("u", "v"), metadata={"generator": "hand"},
                  extras={"w": rng.normal(size=(s, d, d))})
    fields.update(changes)
    return InterventionalDataset(**fields)


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dataset") / "ds"
    _small_dataset().save(path)
    return path


class Payload:
    """Unpickling this object creates the file ``path`` (a stand-in for arbitrary code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _object_array(marker: Path, shape=(1,)) -> np.ndarray:
    array = np.empty(shape, dtype=object)
    array.flat[0] = Payload(marker)
    return array


def test_payload_is_live(tmp_path):
    """Control for the payload tests: numpy *would* run it if allowed to unpickle."""
    marker = tmp_path / "ran"
    np.savez(tmp_path / "p.npz", x=_object_array(marker))
    with np.load(tmp_path / "p.npz", allow_pickle=True) as npz:
        npz["x"]
    assert marker.exists()


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 10**12) | st.floats() | st.text(max_size=6),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                  max_size=3),
                     max_leaves=6)


def _rewrite_npz(path: Path, arrays: dict, members: dict[str, bytes] | None = None) -> None:
    """Write ``arrays`` as a plain (uncompressed) npz, plus raw ``members`` (duplicates allowed)."""
    with zipfile.ZipFile(path, "w") as zf, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Duplicate name", UserWarning)
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(array), allow_pickle=True)
            zf.writestr(name + ".npy", buf.getvalue())
        for name, blob in (members or {}).items():
            zf.writestr(name, blob)


@st.composite
def dataset_mutations(draw):
    """A function that damages a copy of a saved dataset folder, and its description."""
    kind = draw(st.sampled_from(["manifest_field", "array_spec", "manifest_text", "data_bytes",
                                 "data_array", "extra_member", "payload", "none"]))
    if kind == "manifest_field":
        key = draw(st.sampled_from(["format", "format_version", "sha256", "arrays", "num_interventions",
                                    "variable_names", "metadata", "extras", "num_scms"]))
        value = draw(_JSON)
        drop = draw(st.booleans())
        return kind, dict(key=key, value=value, drop=drop)
    if kind == "array_spec":
        key = draw(st.sampled_from(["observational", "targets", "split", "extra/w"]))
        return kind, dict(key=key, field=draw(st.sampled_from(["shape", "dtype"])), value=draw(_JSON))
    if kind == "manifest_text":
        return kind, dict(text=draw(st.sampled_from(["", "{", "[" * 5000, "null", "\xff", '{"format": 1}'])
                                    | st.binary(max_size=40)))
    if kind == "data_bytes":
        return kind, dict(how=draw(st.sampled_from(["truncate", "flip", "random", "empty"])),
                          pos=draw(st.floats(0, 1)), blob=draw(st.binary(max_size=64)),
                          fix_sha=draw(st.booleans()))
    if kind == "data_array":
        name = draw(st.sampled_from(["observational", "interventional", "targets", "intervention_index",
                                     "intervention_values", "adjacency", "split", "extra/w"]))
        shape = draw(st.sampled_from([(4, 3, 2), (4, 2, 3, 2), (4, 2, 2), (4, 2), (4,), (), (5, 3, 2), (0,)]))
        array, _ = _cast(draw, _float_array(draw, shape))
        if array.dtype.kind == "U" or array.dtype.kind == "O":
            array = np.zeros(shape, np.float32)
        return kind, dict(name=name, array=array)
    if kind == "extra_member":
        return kind, dict(member=draw(st.sampled_from(["evil.pkl", "observational.npy", "dir/", "x.npy"])),
                          blob=draw(st.binary(max_size=32)))
    if kind == "payload":  # an object array in place of any stored array
        return kind, dict(name=draw(st.sampled_from(["observational", "interventional", "targets", "split",
                                                     "adjacency", "extra/w"])),
                          size=draw(st.integers(1, 4)))
    return kind, {}


def _mutate_dataset(folder: Path, kind: str, spec: dict, marker: Path) -> None:
    manifest_path, data_path = folder / "manifest.json", folder / "data.npz"
    manifest = json.loads(manifest_path.read_text())

    def fix_sha():
        manifest["sha256"] = hashlib.sha256(data_path.read_bytes()).hexdigest()

    if kind == "manifest_field":
        if spec["drop"]:
            manifest.pop(spec["key"], None)
        else:
            manifest[spec["key"]] = spec["value"]
    elif kind == "array_spec":
        manifest["arrays"][spec["key"]][spec["field"]] = spec["value"]
    elif kind == "manifest_text":
        text = spec["text"]
        manifest_path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        return
    elif kind == "data_bytes":
        raw = data_path.read_bytes()
        pos = int(spec["pos"] * (len(raw) - 1))
        raw = {"truncate": raw[:pos], "flip": raw[:pos] + bytes([raw[pos] ^ 0x5A]) + raw[pos + 1:],
               "random": spec["blob"], "empty": b""}[spec["how"]]
        data_path.write_bytes(raw)
        if spec["fix_sha"]:
            fix_sha()
    elif kind in ("data_array", "extra_member", "payload"):
        with np.load(data_path) as npz:
            arrays = {k: npz[k] for k in npz.files}
        members = {}
        if kind == "data_array":
            arrays[spec["name"]] = spec["array"]
        elif kind == "extra_member":
            members[spec["member"]] = spec["blob"]
        else:
            arrays[spec.get("name", "observational")] = _object_array(marker, (spec.get("size", 4),))
        _rewrite_npz(data_path, arrays, members)
        manifest["arrays"] = {k: {"shape": list(np.shape(v)), "dtype": np.asarray(v).dtype.str}
                              for k, v in arrays.items()}
        fix_sha()
    manifest_path.write_text(json.dumps(manifest))


def _dataset_property(saved_dataset, mutation):
    kind, spec = mutation
    with tempfile.TemporaryDirectory() as tmp:
        folder, marker = Path(tmp) / "ds", Path(tmp) / "PWNED"
        shutil.copytree(saved_dataset, folder)
        _mutate_dataset(folder, kind, spec, marker)
        try:
            data = load_dataset(folder)
        except ValueError:
            assert kind != "none"
            event(f"{kind}: refused")
        else:  # accepted: then it is a sound dataset
            event(f"{kind}: loaded")
            assert kind not in ("extra_member", "payload", "manifest_text")
            assert kind != "data_bytes" or spec["fix_sha"]  # a flip in zip metadata can be harmless
            for name in ("observational", "interventional", "intervention_values"):
                array = getattr(data, name)
                assert array.dtype == np.float32 and _values_ok(array)
            assert data.targets.dtype == np.bool_ and data.split.dtype == np.int8
            assert len(data.variable_names) == data.num_vars
        assert not marker.exists(), "a pickle payload was executed"


test_fuzz_dataset_loader, test_fuzz_dataset_loader_deep = _fuzz(
    FAST, DEEP, mutation=dataset_mutations())(_dataset_property)


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
    array, dtype_ok = _cast(draw, _float_array(draw, shape))
    return {field: array}, None  # validity: too many rules to restate; soundness is checked


def _constructor_property(fields):
    changes, expected = fields
    try:
        data = _small_dataset(**changes)
    except ValueError as e:
        event("refused")
        assert expected is not True, str(e)
        assert any(name in str(e) for name in ("observational", "interventional", "intervention_values",
                                                 "intervention_index", "targets", "adjacency", "split")), str(e)
        return
    event("accepted")
    for name in ("observational", "interventional", "intervention_values"):
        assert _values_ok(getattr(data, name))
    assert set(np.unique(data.split)) <= {0, 1, 2}
    assert ((data.intervention_index >= 0) & (data.intervention_index < data.num_interventions)).all()


test_fuzz_dataset_constructor, test_fuzz_dataset_constructor_deep = _fuzz(
    FAST, DEEP, fields=dataset_fields())(_constructor_property)


# ===================================================================== model folders (load) ====
@pytest.fixture(scope="module")
def saved_model(tiny_fitted, tmp_path_factory) -> Path:
    return tiny_fitted.save(tmp_path_factory.mktemp("model") / "model")


@st.composite
def model_mutations(draw):
    kind = draw(st.sampled_from(["config_field", "model_config_field", "config_text", "params_bytes",
                                 "params_array", "payload", "none"]))
    if kind in ("config_field", "model_config_field"):
        key = draw(st.sampled_from(["format", "format_version", "model_config", "info", "params_file",
                                    "params_sha256"] if kind == "config_field" else
                                   ["embed_dim", "num_heads", "beta", "covariance_eps", "num_interventions",
                                    "unknown_field"]))
        return kind, dict(key=key, value=draw(_JSON), drop=draw(st.booleans()))
    if kind == "config_text":
        return kind, dict(text=draw(st.sampled_from(["", "{", "[" * 5000, "null", "[]"]) | st.binary(max_size=30)))
    if kind == "params_bytes":
        return kind, dict(pos=draw(st.floats(0, 1)), truncate=draw(st.booleans()), fix_sha=draw(st.booleans()))
    if kind == "params_array":
        return kind, dict(how=draw(st.sampled_from(["nan", "inf", "huge", "shape", "dtype", "drop", "extra"])),
                          index=draw(st.integers(0, 10**6)))
    if kind == "payload":  # an object array in place of any parameter array
        return kind, dict(index=draw(st.integers(0, 10**6)))
    return kind, {}


def _model_property(saved_model, mutation):
    kind, spec = mutation
    with tempfile.TemporaryDirectory() as tmp:
        folder, marker = Path(tmp) / "model", Path(tmp) / "PWNED"
        shutil.copytree(saved_model, folder)
        config_path = folder / "config.json"
        config = json.loads(config_path.read_text())
        params_path = folder / config["params_file"]
        if kind == "config_field":
            config.pop(spec["key"], None) if spec["drop"] else config.__setitem__(spec["key"], spec["value"])
        elif kind == "model_config_field":
            mc = config["model_config"]
            mc.pop(spec["key"], None) if spec["drop"] else mc.__setitem__(spec["key"], spec["value"])
        elif kind == "params_bytes":
            raw = params_path.read_bytes()
            pos = int(spec["pos"] * (len(raw) - 1))
            raw = raw[:pos] if spec["truncate"] else raw[:pos] + bytes([raw[pos] ^ 0x21]) + raw[pos + 1:]
            params_path.write_bytes(raw)
        elif kind in ("params_array", "payload"):
            arrays, meta = load_arrays(params_path)
            name = sorted(arrays)[spec.get("index", 0) % len(arrays)]
            if kind == "payload":
                _rewrite_npz(params_path, {**arrays, name: _object_array(marker)})
            else:
                how, a = spec["how"], arrays[name]
                arrays[name] = {"nan": np.full_like(a, np.nan), "inf": np.full_like(a, np.inf),
                                "huge": np.full_like(a, 3e38), "shape": np.zeros(a.shape + (2,), a.dtype),
                                "dtype": a.astype(np.float64), "drop": None, "extra": a}[how]
                if how == "drop":
                    del arrays[name]
                if how == "extra":
                    arrays[name + "_extra"] = a
                save_arrays(params_path, arrays, meta)
        if kind in ("params_bytes", "params_array", "payload") and spec.get("fix_sha", True):
            config["params_sha256"] = hashlib.sha256(params_path.read_bytes()).hexdigest()
        if kind == "config_text":
            text = spec["text"]
            config_path.write_bytes(text if isinstance(text, bytes) else text.encode())
        else:
            config_path.write_text(json.dumps(config))
        try:
            fitted = ap.load(folder)
        except CheckpointError:
            assert kind != "none"
            event(f"{kind}: refused")
        except ValueError as e:
            raise AssertionError(f"ValueError that is not a CheckpointError: {e}") from e
        else:
            event(f"{kind}: loaded")
            assert kind in ("none", "config_field", "model_config_field", "params_array", "params_bytes")
            leaves = jax.tree_util.tree_leaves(fitted.params)
            assert all(np.isfinite(np.asarray(x)).all() for x in leaves)
            assert isinstance(fitted.info, dict)
        assert not marker.exists(), "a pickle payload was executed"


test_fuzz_model_loader, test_fuzz_model_loader_deep = _fuzz(
    FAST_SMALL, DEEP_SMALL, mutation=model_mutations())(_model_property)


# ============================================================================ ArviZ (observed) ====
def _arviz_property(call):
    from activa_ppl.arviz_io import to_inference_data
    from activa_ppl.mixture import GaussianMixture

    observed, ok = call  # ok None: either outcome is right (numeric text is read as numbers)
    mix = GaussianMixture.gaussian(np.zeros(2), np.eye(2)).with_names(["a", "b"])
    try:
        idata = to_inference_data(mix, observed, num_draws=3, num_chains=1)
    except ValueError:
        assert ok is not True
        event("refused")
        return
    assert ok is not False
    event("converted")
    assert np.isfinite(np.asarray(idata.log_likelihood["joint"])).all() or not _values_ok(observed)


@st.composite
def arviz_observed(draw):
    valid_shape = draw(st.booleans())
    shape = (draw(st.integers(1, 6)), 2) if valid_shape else draw(
        st.lists(st.integers(0, 3), max_size=4).map(tuple).filter(lambda s: len(s) != 2 or s[1] != 2))
    array = _float_array(draw, shape, constant_columns=False)
    kind = draw(st.sampled_from(["float64", "float32", "int64", "str", "bool"]))
    if kind == "str":
        return array.astype(str), None
    with np.errstate(invalid="ignore", over="ignore"):
        array = array.astype(kind) if kind != "int64" else np.nan_to_num(array).clip(-1e9, 1e9).astype(kind)
    finite = bool(np.isfinite(np.asarray(array, dtype=np.float64)).all())
    return array, valid_shape and finite


test_fuzz_arviz_observed, test_fuzz_arviz_observed_deep = _fuzz(
    FAST_SMALL, DEEP_SMALL, call=arviz_observed())(_arviz_property)


# ============================================================ positive-definite covariances ====
def _extreme(kind: str) -> np.ndarray:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 3))
    if kind == "all_constant":
        return np.full((20, 3), 2.5)
    if kind == "one_constant":
        x[:, 1] = -4.0
        return x
    if kind == "zeros":
        return np.zeros((20, 3))
    if kind == "max_magnitude":
        return np.sign(x) * MAX_ABS_VALUE
    if kind == "huge":
        return x * 6e13
    if kind == "tiny":
        return x * 1e-30
    if kind == "mixed_scales":
        return x * np.array([MAX_ABS_VALUE / 10, 1.0, 1e-15])
    if kind == "duplicate_columns":
        return np.repeat(x[:, :1], 3, axis=1)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["all_constant", "one_constant", "zeros", "max_magnitude", "huge", "tiny",
                                  "mixed_scales", "duplicate_columns"])
@pytest.mark.parametrize("target", [0, [0, 2]])
def test_covariances_positive_definite_on_extreme_inputs(tiny_fitted, kind, target):
    obs = _extreme(kind)
    mix = tiny_fitted.predict(obs, target=target, seed=3)
    _assert_sound_mixture(mix, 3)
    assert np.isfinite(np.asarray(mix.log_prob(jnp.asarray(obs[:5], jnp.float32)))).all()


def test_values_just_above_the_limit_are_refused(tiny_fitted):
    obs = _extreme("max_magnitude")
    obs[7, 2] = -MAX_ABS_VALUE * 1.01
    with pytest.raises(ValueError, match=r"obs: 1 value\(s\) of magnitude > 1e\+15, first at row 7, column 'X2'"):
        tiny_fitted.predict(obs, target=0)
    batch = obs[None].astype(np.float64)
    batch[0, 3, 0] = 1e300  # beyond float32: reported as too large, not as inf after a cast
    with pytest.raises(ValueError, match=r"observational: 2 value\(s\) of magnitude .* query 0, row 3, column 0"):
        tiny_fitted.predict_batch(batch, np.eye(3)[:1], np.zeros(1, int))


def test_predict_batch_names_each_argument(tiny_fitted):
    obs = _extreme("one_constant")[None]
    cases = [
        (dict(observational=np.zeros((0, 20, 3))), "observational: holds no query"),
        (dict(targets=np.array([[0.0, 0.5, 0.0]])), "targets: each row must be a 0/1 mask; query 0"),
        (dict(targets=np.array([["1", "0", "0"]])), "targets: expected numbers"),
        (dict(intervention_index=np.array([1])), r"intervention_index: values must lie in 0..0 .* query 0 has 1"),
        (dict(seed="x"), "seed: expected an integer or a single JAX PRNG key"),
        (dict(seed=jax.random.split(jax.random.PRNGKey(0), 3)), "seed: expected an integer"),
        (dict(num_latents=-1), "num_latents: expected a positive integer"),
        (dict(variable_names=["a", "b"]), "variable_names: expected 3 names"),
    ]
    for change, message in cases:
        kwargs = dict(observational=obs, targets=np.eye(3)[:1], intervention_index=np.zeros(1, int))
        kwargs.update(change)
        with pytest.raises(ValueError, match=message):
            tiny_fitted.predict_batch(**kwargs)


# ==================================================================== the CSV reader, directly ====
@pytest.mark.parametrize("content, message", [
    (b"a,b\n1,2,3\n4,5,6\n", "line 2 has 3 field(s) but the header names 2 columns"),
    (b"a,b\n1,2\n4\n", "line 3 has 1 field(s)"),
    (b"a,,c\n1,2,3\n", "column 2 of the header has no name"),
    (b"a,b\n1,\n3,4\n", "column 'b' has an empty cell on line 2"),
    (b"a,b\n1,2\n3,x7\n", "column 'b' is non-numeric: line 3 holds 'x7'"),
    (b"a,b\n1,1_000\n3,4\n", "column 'b' is non-numeric"),
    (b"a,b\n\xff\xfe1,2\n", "not UTF-8 text"),
    (b"a,b\n1,2\x00\n", "NUL bytes"),
    (b"  \n\n", "the file is empty"),
    (b"1.5,2\n3,4\n", "the first line holds numbers (1.5, 2), not column names"),
])
def test_read_csv_names_line_and_column(tmp_path, content, message):
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(message)):
        read_csv(path)


def test_read_csv_accepts_common_dialects(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b'\xef\xbb\xbf a , "b"\r\n\r\n"1.5", 2\r\n-3e2,inf\r\n')  # BOM, CRLF, quotes, spaces
    frame = read_csv(path)
    assert list(frame.columns) == ["a", "b"]
    np.testing.assert_array_equal(frame.to_numpy(), [[1.5, 2.0], [-300.0, np.inf]])
    with pytest.raises(ValueError, match="not a regular file"):
        read_csv(tmp_path)


# ======================================================================= other entry points ====
def test_run_evaluation_bad_input(tmp_path, saved_dataset, saved_model):
    from activa_ppl.report import run_evaluation

    broken = tmp_path / "broken"
    shutil.copytree(saved_dataset, broken)
    (broken / "data.npz").write_bytes(b"PK\x03\x04 not a zip")
    two = tmp_path / "two"
    _small_dataset(num_interventions=2, intervention_index=np.ones((4, 2), np.int32)).save(two)
    corrupt_model = tmp_path / "corrupt_model"
    shutil.copytree(saved_model, corrupt_model)
    for p in corrupt_model.glob("params-*.npz"):
        p.write_bytes(p.read_bytes()[:100])
    cases = [
        ([str(broken)], ["gaussian-conditional"], {}, "checksum mismatch"),
        ([str(saved_dataset / "manifest.json")], ["gaussian-conditional"], {}, "is not a directory"),
        ([str(saved_dataset)], ["no-such-method"], {}, "unknown method"),
        ([str(saved_dataset)], ["gaussian-conditional"], {"split": "training"}, "split must be one of"),
        ([str(saved_dataset)], ["gaussian-conditional"], {"max_scms": 0}, "max_scms must be positive"),
        ([str(saved_dataset)], [f"activa:{corrupt_model}"], {}, "SHA-256 differs"),
        ([str(two)], [f"activa:{saved_model}"], {}, r"intervention_index: values must lie in 0..0"),
    ]
    for datasets, methods, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            run_evaluation(datasets, methods, tmp_path / "out", progress=False, figure_scms=0, **kwargs)


def test_dataset_constructor_messages():
    with pytest.raises(ValueError, match=r"observational: 1 value\(s\) of magnitude > 1e\+15, first at scm 2"):
        obs = np.zeros((4, 3, 2))
        obs[2, 1, 0] = 1e300
        _small_dataset(observational=obs)
    with pytest.raises(ValueError, match="interventional: 1 non-finite value.*scm 0, query 1, sample 2"):
        inter = np.zeros((4, 2, 3, 2))
        inter[0, 1, 2, 1] = np.nan
        _small_dataset(interventional=inter)
    with pytest.raises(ValueError, match="observational cannot be read as an array"):
        _small_dataset(observational=[[[1.0, 2.0]], [[1.0]]])


def test_cli_reports_unwritable_output_and_divergence(tmp_path, saved_dataset, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        assert main(["simulate", "--num-scms", "5", "--num-samples", "3", "--out", str(blocker / "sub")]) == 2

        def diverging(*args, **kwargs):
            raise TrainingDiverged("non-finite loss (nan) at step 3; stopped, last good state is step 2")

        monkeypatch.setattr(training, "train", diverging)
        assert main(["train", "--data", str(saved_dataset), "--out", str(tmp_path / "m"), "--preset", "tiny",
                     "--quiet"]) == 2
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 2 and all(line.startswith("activa: error:") for line in lines)
    assert "Not a directory" in lines[0]
    assert lines[1].startswith("activa: error: training diverged: non-finite loss (nan) at step 3")


def test_pickle_payload_in_dataset_folder_refused(saved_dataset, tmp_path):
    """An attacker controlling both files (checksum and manifest updated) gets nowhere."""
    for where in ("core", "extra"):
        folder, marker = tmp_path / where, tmp_path / f"PWNED-{where}"
        shutil.copytree(saved_dataset, folder)
        if where == "core":
            _mutate_dataset(folder, "payload", {}, marker)
        else:
            with np.load(folder / "data.npz") as npz:
                arrays = {k: npz[k] for k in npz.files}
            arrays["extra/evil"] = _object_array(marker, (4,))
            _rewrite_npz(folder / "data.npz", arrays)
            manifest = json.loads((folder / "manifest.json").read_text())
            manifest["arrays"]["extra/evil"] = {"shape": [4], "dtype": "|O"}
            manifest["extras"].append("evil")
            manifest["sha256"] = hashlib.sha256((folder / "data.npz").read_bytes()).hexdigest()
            (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match="pickled objects are never loaded"):
            load_dataset(folder)
        assert not marker.exists()


# ===================================================================== training: numerical faults ====
LR = 5e-4
FAKE_CONFIG = TrainConfig(num_steps=6, eval_every=2, batch_size=4, learning_rate=LR, num_validation_tasks=4,
                          seed=0)


@pytest.fixture(scope="module")
def small_data():
    return ap.simulate.linear_dataset(num_scms=20, num_vars=2, num_samples=10, seed=0)


def _install_fake_chunks(monkeypatch, fault=lambda step, lr: None):
    """Replace the compiled SVI chunk by cheap arithmetic on the real state (no compile).

    Each chunk moves every float leaf by ``-lr * length / 100`` (so the result depends on the
    learning rate) and counts steps; ``fault(step, lr)`` may return ``"loss"`` (NaN loss) or
    ``"params"`` (NaN parameters, finite loss). Returns the list of ``(step, lr)`` of every
    chunk run.
    """
    real = training.svi_chunks
    log = []

    def fake_svi_chunks(activa, config, num_tasks):
        chunks = real(activa, config, num_tasks)
        lr = config.learning_rate

        def run(length, state, *arrays):
            step = int(state.optim_state[0])
            log.append((step, lr))
            floats = lambda f: lambda x: f(x) if jnp.issubdtype(x.dtype, jnp.floating) else x  # noqa: E731
            new = jax.tree_util.tree_map(floats(lambda x: x - lr * length / 100), state)
            i, opt = new.optim_state
            losses = np.full(length, 100.0 / (1 + step), np.float32)
            kind = fault(step, lr)
            if kind == "loss":
                losses[-1] = np.nan
            elif kind == "params":
                opt = jax.tree_util.tree_map(floats(lambda x: x * np.nan), opt)
            return new._replace(optim_state=(i + length, opt)), jnp.asarray(losses)

        return chunks._replace(run=run)

    monkeypatch.setattr(training, "svi_chunks", fake_svi_chunks)
    return log


def _checkpoint_is_finite(path: Path) -> dict:
    arrays, meta = load_arrays(path)
    assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")
    return meta


def _metrics(workdir: Path) -> list[dict]:
    lines = (workdir / METRICS_NAME).read_text().splitlines()
    return [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl")) for line in lines]


def _same_params(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.mark.parametrize("kind", ["loss", "params", "valid_nll"])
def test_nonfinite_chunk_rolls_back_and_stops(tiny_activa, small_data, tmp_path, monkeypatch, kind):
    runs = _install_fake_chunks(monkeypatch, lambda step, lr: kind if step == 4 else None)
    if kind == "valid_nll":
        real_nll, calls = training.validation_nll, []

        def nll(*args):
            calls.append(1)
            return jnp.nan if len(calls) == 3 else real_nll(*args)

        monkeypatch.setattr(training, "validation_nll", nll)
    with pytest.raises(TrainingDiverged) as info:
        ap.train(tiny_activa, small_data, config=FAKE_CONFIG, workdir=tmp_path, progress=False)
    message = str(info.value)
    expected = {"loss": r"non-finite loss \(nan\) at step 6", "params": "non-finite parameters",
                "valid_nll": r"non-finite validation NLL \(nan\) after step 6"}[kind]
    assert re.search(expected, message), message
    assert "last good state is step 4" in message and "on_nonfinite='retry'" in message
    assert runs == [(0, LR), (2, LR), (4, LR)]
    # The last good checkpoint (step 4) is there, finite; the log stops at step 4; no temp files.
    meta = _checkpoint_is_finite(tmp_path / CHECKPOINT_NAME)
    assert meta["step"] == 4 and info.value.step == 4 and info.value.checkpoint == tmp_path / CHECKPOINT_NAME
    assert [r["step"] for r in _metrics(tmp_path)] == [2, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME, METRICS_NAME]
    # The exception carries the best parameters so far: those of the checkpoint, finite.
    fitted = info.value.fitted
    arrays, _ = load_arrays(tmp_path / CHECKPOINT_NAME)
    best = training.unflatten_params({k[5:]: v for k, v in arrays.items() if k.startswith("best/")})
    assert _same_params(fitted.params, best) and fitted.info["best_step"] == meta["best_step"]


def test_retry_halves_learning_rate_and_resumes_bit_identically(tiny_activa, small_data, tmp_path, monkeypatch,
                                                                 caplog):
    runs = _install_fake_chunks(monkeypatch, lambda step, lr: "loss" if step == 2 and lr == LR else None)
    with caplog.at_level(logging.WARNING, logger="activa_ppl.loop"):
        full = ap.train(tiny_activa, small_data, config=FAKE_CONFIG, workdir=tmp_path / "full", progress=False,
                        on_nonfinite="retry")
    assert runs == [(0, LR), (2, LR), (2, LR / 2), (4, LR / 2)]
    assert [r.getMessage() for r in caplog.records] == [
        "ACTIVA training: non-finite loss (nan) at step 4; rolled back to step 2 and retrying with learning "
        "rate 0.00025 (was 0.0005; retry 1 of 3)"]
    assert [r["learning_rate"] for r in _metrics(tmp_path / "full")] == [LR, LR / 2, LR / 2]
    assert full.info["nonfinite_retries"] == 1 and full.info["final_learning_rate"] == LR / 2
    meta = _checkpoint_is_finite(tmp_path / "full" / CHECKPOINT_NAME)
    assert meta["lr_scale"] == 0.5 and meta["retries"] == 1
    # Interrupted after the retry (a shorter run), then resumed: it continues at the halved rate.
    runs.clear()
    short = dataclasses.replace(FAKE_CONFIG, num_steps=4)
    ap.train(tiny_activa, small_data, config=short, workdir=tmp_path / "resumed", progress=False,
             on_nonfinite="retry")
    resumed = ap.train(tiny_activa, small_data, config=FAKE_CONFIG, workdir=tmp_path / "resumed", progress=False,
                       on_nonfinite="retry")
    assert runs == [(0, LR), (2, LR), (2, LR / 2), (4, LR / 2)]
    assert _same_params(resumed.params, full.params)
    a, meta_a = load_arrays(tmp_path / "full" / CHECKPOINT_NAME)
    b, meta_b = load_arrays(tmp_path / "resumed" / CHECKPOINT_NAME)
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    for key in ("step", "best_step", "best_nll", "lr_scale", "retries"):
        assert meta_a[key] == meta_b[key], key


def test_retry_gives_up_after_max_retries(tiny_activa, small_data, tmp_path, monkeypatch, caplog):
    runs = _install_fake_chunks(monkeypatch, lambda step, lr: "params" if step >= 2 else None)
    with caplog.at_level(logging.WARNING, logger="activa_ppl.loop"), pytest.raises(TrainingDiverged) as info:
        ap.train(tiny_activa, small_data, config=FAKE_CONFIG, workdir=tmp_path, progress=False,
                 on_nonfinite="retry", max_retries=2)
    assert runs == [(0, LR), (2, LR), (2, LR / 2), (2, LR / 4)]
    assert len(caplog.records) == 2
    assert "gave up after 2 retries with halved learning rates (last 0.000125)" in str(info.value)
    assert _checkpoint_is_finite(tmp_path / CHECKPOINT_NAME)["step"] == 2 and info.value.step == 2
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(info.value.fitted.params))


def test_train_policy_arguments_are_checked(tiny_activa, small_data):
    with pytest.raises(ValueError, match="on_nonfinite must be one of"):
        ap.train(tiny_activa, small_data, num_steps=1, on_nonfinite="ignore", progress=False)
    with pytest.raises(ValueError, match="max_retries must be a non-negative integer"):
        ap.train(tiny_activa, small_data, num_steps=1, on_nonfinite="retry", max_retries=-1, progress=False)


def test_real_overflow_stops_without_writing_nan(tiny_activa, small_data, tmp_path):
    """Data at the accepted magnitude limit (1e15) overflows the float32 loss: a real fault."""
    scale = 0.99 * MAX_ABS_VALUE / max(np.abs(small_data.observational).max(),
                                       np.abs(small_data.interventional).max())
    huge = dataclasses.replace(small_data, observational=np.asarray(small_data.observational) * scale,
                               interventional=np.asarray(small_data.interventional) * scale)
    config = dataclasses.replace(FAKE_CONFIG, num_steps=4)
    with pytest.raises(TrainingDiverged, match=r"non-finite (loss|parameters).* step \d; stopped, last good "
                                               "state is step 0; no non-finite value was written") as info:
        ap.train(tiny_activa, huge, config=config, workdir=tmp_path, progress=False)
    assert info.value.step == 0 and info.value.checkpoint is None
    assert not (tmp_path / CHECKPOINT_NAME).exists() and not (tmp_path / METRICS_NAME).exists()
    fitted = info.value.fitted  # nothing completed: the initial parameters, finite
    assert fitted.info["best_step"] == -1
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(fitted.params))


# ======================================================== checkpoints: corrupt, interrupted, unsafe ====
@pytest.fixture
def finished_run(tiny_activa, small_data, tmp_path, monkeypatch):
    """A (fake-chunk) run of 4 steps with its checkpoint; returns (workdir, fitted, bytes)."""
    _install_fake_chunks(monkeypatch)
    config = dataclasses.replace(FAKE_CONFIG, num_steps=4)
    fitted = ap.train(tiny_activa, small_data, config=config, workdir=tmp_path, progress=False)
    return tmp_path, fitted, (tmp_path / CHECKPOINT_NAME).read_bytes(), config


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[: len(raw) // 2], "truncated or corrupted"),
    (lambda raw: raw[:-40], "truncated or corrupted"),
    (lambda raw: raw[:300] + bytes([raw[300] ^ 0x04]) + raw[301:], "corrupted|checksum"),
    (lambda raw: b"", "truncated or corrupted"),
])
def test_corrupted_checkpoint_refused_and_left_alone(tiny_activa, small_data, finished_run, damage, message):
    workdir, fitted, good, config = finished_run
    bad = damage(good)
    (workdir / CHECKPOINT_NAME).write_bytes(bad)
    with pytest.raises(CheckpointError, match=message):
        ap.train(tiny_activa, small_data, config=config, workdir=workdir, progress=False)
    assert (workdir / CHECKPOINT_NAME).read_bytes() == bad  # not overwritten, not deleted
    (workdir / CHECKPOINT_NAME).write_bytes(good)  # the good copy resumes (here: nothing left to do)
    again = ap.train(tiny_activa, small_data, config=config, workdir=workdir, progress=False)
    assert _same_params(again.params, fitted.params)


def test_checkpoint_with_nan_state_is_refused(tiny_activa, small_data, finished_run):
    workdir, _, _, config = finished_run
    arrays, meta = load_arrays(workdir / CHECKPOINT_NAME)
    first = sorted(k for k in arrays if k.startswith("state/") and arrays[k].dtype.kind == "f")[0]
    arrays[first] = np.full_like(arrays[first], np.nan)
    save_arrays(workdir / CHECKPOINT_NAME, arrays, meta)  # a valid checksum over NaN values
    with pytest.raises(CheckpointError, match="holds NaN/inf values; refusing to resume"):
        ap.train(tiny_activa, small_data, config=dataclasses.replace(config, num_steps=6), workdir=workdir,
                 progress=False)


def test_interrupted_checkpoint_write_keeps_the_previous_one(tiny_activa, small_data, tmp_path, monkeypatch):
    """A crash while the step-4 checkpoint is written leaves the step-2 one, whole; resuming
    from it ends where an uninterrupted run ends."""
    _install_fake_chunks(monkeypatch)
    real_save = loop.save_arrays

    def crash_during_write(path, arrays, meta=None):
        if meta["step"] == 4:
            def half(f):
                f.write(b"PK\x03\x04 half of a checkpoint")
                raise OSError("No space left on device (simulated)")
            atomic_write_bytes(path, half)
        return real_save(path, arrays, meta)

    monkeypatch.setattr(loop, "save_arrays", crash_during_write)
    with pytest.raises(OSError, match="No space left"):
        ap.train(tiny_activa, small_data, config=FAKE_CONFIG, workdir=tmp_path / "a", progress=False)
    assert _checkpoint_is_finite(tmp_path / "a" / CHECKPOINT_NAME)["step"] == 2
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [CHECKPOINT_NAME, METRICS_NAME]
    monkeypatch.setattr(loop, "save_arrays", real_save)
    resumed = ap.train(tiny_activa, small_data, config=FAKE_CONFIG, workdir=tmp_path / "a", progress=False)
    straight = ap.train(tiny_activa, small_data, config=FAKE_CONFIG, workdir=tmp_path / "b", progress=False)
    assert _same_params(resumed.params, straight.params)
    assert [r["step"] for r in _metrics(tmp_path / "a")] == [2, 4, 6]


def test_pickle_payload_in_training_checkpoint_refused(tiny_activa, small_data, finished_run):
    workdir, _, _, config = finished_run
    marker = workdir / "PWNED"
    arrays, meta = load_arrays(workdir / CHECKPOINT_NAME)
    header = {"format": "activa_ppl.arrays", "format_version": 1, "sha256": "0" * 64, "meta": meta}
    arrays["state/0000"] = _object_array(marker)
    arrays["__meta__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    _rewrite_npz(workdir / CHECKPOINT_NAME, arrays)
    with pytest.raises(CheckpointError, match="pickled objects are never loaded"):
        ap.train(tiny_activa, small_data, config=config, workdir=workdir, progress=False)
    assert not marker.exists()


# ================================================================================ slow tier ====
@pytest.mark.slow
def test_real_divergence_after_a_good_checkpoint(tiny_activa, small_data, tmp_path):
    """A real run checkpoints step 2; resumed on data at the magnitude limit it overflows:
    stopped, the step-2 checkpoint untouched; under "retry" it gives up after the retries."""
    config = dataclasses.replace(FAKE_CONFIG, num_steps=2)
    ap.train(tiny_activa, small_data, config=config, workdir=tmp_path, progress=False)
    good = (tmp_path / CHECKPOINT_NAME).read_bytes()
    scale = 0.99 * MAX_ABS_VALUE / max(np.abs(small_data.observational).max(),
                                       np.abs(small_data.interventional).max())
    huge = dataclasses.replace(small_data, observational=np.asarray(small_data.observational) * scale,
                               interventional=np.asarray(small_data.interventional) * scale)
    with pytest.raises(TrainingDiverged, match="last good state is step 2"):
        ap.train(tiny_activa, huge, config=FAKE_CONFIG, workdir=tmp_path, progress=False)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == good
    with pytest.raises(TrainingDiverged, match="gave up after 1 retry"):
        ap.train(tiny_activa, huge, config=FAKE_CONFIG, workdir=tmp_path, progress=False,
                 on_nonfinite="retry", max_retries=1)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == good


@pytest.mark.slow
def test_real_retry_recovers(tiny_activa, small_data, tmp_path, monkeypatch):
    """The real compiled chunk, with its result poisoned once at the original learning rate:
    the retry recompiles at half the rate and the run finishes with finite parameters."""
    real = training.svi_chunks

    def poisoned(activa, config, num_tasks):
        chunks = real(activa, config, num_tasks)
        if config.learning_rate != LR:
            return chunks

        def run(length, state, *arrays):
            new, losses = chunks.run(length, state, *arrays)
            return (new, losses.at[-1].set(jnp.nan)) if int(state.optim_state[0]) == 2 else (new, losses)

        return chunks._replace(run=run)

    monkeypatch.setattr(training, "svi_chunks", poisoned)
    fitted = ap.train(tiny_activa, small_data, config=FAKE_CONFIG, workdir=tmp_path, progress=False,
                      on_nonfinite="retry")
    assert fitted.info["nonfinite_retries"] == 1 and fitted.info["num_steps"] == 6
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(fitted.params))
    assert [r["learning_rate"] for r in _metrics(tmp_path)] == [LR, LR / 2, LR / 2]


DETERMINISM_SCRIPT = """
import os, sys
os.environ["JAX_PLATFORMS"] = "cpu"
import numpy as np
import activa_ppl as ap
data = ap.simulate.linear_dataset(num_scms=30, num_vars=2, num_samples=10, seed=0)
fitted = ap.train(ap.Activa(ap.ActivaConfig.preset("tiny")), data, num_steps=6, eval_every=3, batch_size=4,
                  num_validation_tasks=4, seed=5, progress=False)
fitted.save(sys.argv[1])
mix = fitted.predict(data.observational[0], target=0, seed=9)
np.savez(sys.argv[2], weights=np.asarray(mix.weights), locs=np.asarray(mix.locs),
         covariances=np.asarray(mix.covariances), samples=np.asarray(mix.sample(50, 1)))
"""


@pytest.mark.slow
def test_same_seed_is_bit_identical_across_interpreters(tmp_path):
    """Two fresh interpreters (different hash seeds): identical parameter files and predictions."""
    repo_root = str(Path(ap.__file__).resolve().parents[1])
    procs = []
    for i in range(2):
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONHASHSEED=str(i + 1), PYTHONPATH=repo_root)
        procs.append(subprocess.Popen([sys.executable, "-c", DETERMINISM_SCRIPT, str(tmp_path / f"model{i}"),
                                       str(tmp_path / f"pred{i}.npz")], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT))
    for proc in procs:
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out.decode()[-3000:]
    params = [next((tmp_path / f"model{i}").glob("params-*.npz")).read_bytes() for i in range(2)]
    assert params[0] == params[1]
    with np.load(tmp_path / "pred0.npz") as a, np.load(tmp_path / "pred1.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)
