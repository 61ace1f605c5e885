"""Helpers that several test modules import (fixtures live in ``conftest.py``; these are plain
functions and constants because hypothesis strategies and module-level test definitions need
them at import time).

Fuzz tests: :func:`fuzz` turns a property into a fast test, which replays a fixed set of
examples (``derandomize=True``), and a ``_deep`` twin behind ``-m slow``, which draws new random
examples on every run. Valid prediction inputs are drawn with the shapes of
:data:`VALID_SHAPES` only, so that the jitted predictor compiles twice, not once per example.
"""

from __future__ import annotations

import io
import json
import math
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activa_ppl.data import InterventionalDataset
from activa_ppl.validation import MAX_ABS_VALUE

# ======================================================================== fuzz settings ====
_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
FAST = settings(max_examples=150, derandomize=True, **_COMMON)
DEEP = settings(max_examples=1000, derandomize=False, **_COMMON)
FAST_SMALL = settings(max_examples=25, derandomize=True, **_COMMON)
DEEP_SMALL = settings(max_examples=300, derandomize=False, **_COMMON)

VALID_SHAPES = ((20, 3), (5, 1))  # (N, d) of valid observations: two compiles in all


def fuzz(fast, deep, **strategies):
    """Turn a property into a fast test and a ``@pytest.mark.slow`` deep twin."""
    def make(body):
        quick = fast(given(**strategies)(body))
        thorough = pytest.mark.slow(deep(given(**strategies)(body)))
        return quick, thorough
    return make


# ================================================================ strategies: raw values ====
_SPECIAL = [0.0, -0.0, 1.0, 1e-30, 5e-324, 1e15, -1e15, 1.0000001e15, -1.0000001e15, 3.4e38, 1e300,
            math.nan, math.inf, -math.inf]
_FLOATS = st.one_of(st.floats(-10, 10), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(_SPECIAL))


def float_array(draw, shape, constant_columns=True, bad_values=None) -> np.ndarray:
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
            st.floats(-MAX_ABS_VALUE, MAX_ABS_VALUE), st.sampled_from([v for v in _SPECIAL if values_ok(v)]))
        array = np.array(draw(st.lists(pool, min_size=size, max_size=size)), dtype=np.float64).reshape(shape)
    array = np.asarray(array, dtype=np.float64)
    if constant_columns and array.ndim >= 1 and shape[-1] > 0 and draw(st.booleans()):
        j = draw(st.integers(0, shape[-1] - 1))
        array[..., j] = draw(st.sampled_from([0.0, 1.0, -7.5, 1e15]))
    if bad_values and size:
        position = np.unravel_index(draw(st.integers(0, size - 1)), array.shape)
        array[position] = draw(st.sampled_from([math.nan, math.inf, -math.inf, 1.0000001e15, -3e38, 1e300]))
    return array


def values_ok(array) -> bool:
    """Whether every value is finite and of magnitude at most ``MAX_ABS_VALUE``."""
    with np.errstate(invalid="ignore", over="ignore"):
        a = np.asarray(array, dtype=np.float64)
        return bool(np.isfinite(a).all() and (np.abs(a) <= MAX_ABS_VALUE).all())


_GOOD_DTYPES = ["float64", "float64", "float32", "float16", "int64", "int32", "uint8", "bool"]
_BAD_DTYPES = ["complex128", "str", "object"]
_DTYPES = _GOOD_DTYPES + _BAD_DTYPES


def cast(draw, array: np.ndarray, bad: bool | None = None) -> tuple[np.ndarray, bool]:
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


# Any JSON value, for damaging manifest and config fields.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**12) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)


# ======================================================================== datasets ====
def small_dataset(**changes) -> InterventionalDataset:
    """A 4-SCM, 2-variable dataset built by hand (one SCM per split); ``changes`` replace fields."""
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


def dataset_file(folder: Path) -> Path:
    """The data file a saved dataset's ``manifest.json`` names (``data-<sha256[:12]>.npz``)."""
    return Path(folder) / json.loads((Path(folder) / "manifest.json").read_text())["data_file"]


# ===================================================================== concurrency ====
def save_concurrently(objects, folder: Path, times: int = 5) -> list[Exception]:
    """Each of ``objects`` saved ``times`` times into ``folder`` from its own thread, all at once;
    returns the exceptions raised."""
    import threading

    errors: list[Exception] = []

    def writer(obj):
        try:
            for _ in range(times):
                obj.save(folder)
        except Exception as e:  # noqa: BLE001 (returned)
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(obj,)) for obj in objects]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


# ======================================================================= zip bombs ====
def write_zip_bomb(zf: zipfile.ZipFile, name: str, shape: tuple, dtype: str = "<f4") -> None:
    """Add a deflated all-zero ``.npy`` member ``name`` of ``shape`` to ``zf``: the header
    declares the full size, the file stays about a thousandth of it."""
    info = zipfile.ZipInfo(name + ".npy")
    info.compress_type = zipfile.ZIP_DEFLATED
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    with zf.open(info, "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False, "shape": shape})
        block = bytes(1 << 24)
        for start in range(0, nbytes, len(block)):
            f.write(block[:min(len(block), nbytes - start)])


# ================================================================= pickle payloads ====
class Payload:
    """Unpickling this object creates the file ``path`` (a stand-in for arbitrary code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def object_array(marker: Path, shape=(1,)) -> np.ndarray:
    """An object array whose first element is a :class:`Payload` creating ``marker``."""
    array = np.empty(shape, dtype=object)
    array.flat[0] = Payload(marker)
    return array


def rewrite_npz(path: Path, arrays: dict, members: dict[str, bytes] | None = None) -> None:
    """Write ``arrays`` as a plain (uncompressed) npz, plus raw ``members`` (duplicates allowed)."""
    with zipfile.ZipFile(path, "w") as zf, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Duplicate name", UserWarning)
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(array), allow_pickle=True)
            zf.writestr(name + ".npy", buf.getvalue())
        for name, blob in (members or {}).items():
            zf.writestr(name, blob)


def check_value_option_config(name: str) -> None:
    """A bool ``ActivaConfig`` option that needs ``intervention_values`` (``regression_context``,
    ``regression_residual``, ``exact_targets``): refused without the values or as a non-bool,
    left out of the files of models without it, and round-tripped through them when on."""
    import activa_ppl as ap

    with pytest.raises(ValueError, match=f"{name}=True\\) needs intervention_values"):
        ap.ActivaConfig(**{name: True})
    with pytest.raises(ValueError, match=f"{name} must be a bool"):
        ap.ActivaConfig(**{name: 1}, intervention_values=(5.0,))
    assert name not in ap.ActivaConfig().to_dict()  # files of models without it
    on = ap.ActivaConfig(**{name: True}, intervention_values=(5.0,))
    assert on.to_dict()[name] is True
    assert ap.ActivaConfig.from_dict(on.to_dict()) == on
