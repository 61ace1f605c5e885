"""Input checks shared by every public entry point (Python API, CLI, CSV reader).

Each check raises :class:`ValueError` with a message that names the argument and, where there
is one, the offending column, row or value.

Limits that hold everywhere:

* values must be finite and of magnitude at most :data:`MAX_ABS_VALUE` (``1e15``): the network
  computes in float32, whose products of two values overflow beyond about ``1.8e19``, so larger
  inputs could only produce inf/NaN predictions;
* arrays must be numeric (integers, floats or booleans; no strings, objects or complex numbers).
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np

__all__ = ["MAX_ABS_VALUE", "MAX_INTERVENTIONS", "as_observations", "as_observation_batch", "as_target_masks",
           "as_intervention_indices", "resolve_targets", "check_intervention_index",
           "check_positive_int", "check_seed", "check_values", "default_names"]

#: The largest magnitude accepted in any data array (observations, interventional samples).
MAX_ABS_VALUE = 1e15
#: The most intervention values a dataset may declare (``num_interventions``; each is an
#: embedding row of the model).
MAX_INTERVENTIONS = 1 << 16


def default_names(d: int) -> tuple[str, ...]:
    """``("X0", …, "X{d-1}")``: the names of unnamed variables."""
    return tuple(f"X{j}" for j in range(d))


def _as_numeric_array(data: Any, name: str) -> np.ndarray:
    """``np.asarray(data)`` for numeric (integer, float or bool) data, else ValueError."""
    try:
        array = np.asarray(data)
    except Exception as e:  # ragged lists and the like
        raise ValueError(f"{name}: cannot be read as a numeric array ({e})") from e
    if np.iscomplexobj(array):
        raise ValueError(f"{name}: complex values are not supported")
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{name}: expected numbers, got dtype {array.dtype}")
    return array


def check_values(array: np.ndarray, name: str, axes: Sequence[str] = (),
                 names: Sequence[str] | None = None) -> None:
    """Refuse non-finite values and values of magnitude above :data:`MAX_ABS_VALUE`.

    The message names the first offending position: ``"<axis> <index>"`` for each axis named
    in ``axes``; when ``axes`` names all but the last axis, the last one is reported as the
    column, by name when ``names`` is given.

    Args:
        array: a numeric array (any shape; checked before any float32 conversion, so float64
            values beyond the float32 range are reported as too large, not as inf).
        name: the argument name used in error messages.
        axes: names of the axes (e.g. ``("query", "row")``, the last axis then being the
            variable column, or one name per axis).
        names: variable names (length ``array.shape[-1]``).
    """
    if array.size == 0 or array.dtype == bool:
        return
    if array.ndim == 0:
        array = array.reshape(1)

    def where(bad: np.ndarray) -> str:
        first = np.argwhere(bad)[0]
        if len(axes) == array.ndim:  # every axis named by the caller
            return ", ".join(f"{axis} {int(i)}" for axis, i in zip(axes, first))
        parts = [f"{axis} {int(i)}" for axis, i in zip(axes, first[:-1])]
        col = int(first[-1])
        parts.append(f"column {names[col]!r}" if names is not None else f"column {col}")
        return ", ".join(parts)

    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = ~np.isfinite(array)
        raise ValueError(f"{name}: {int(bad.sum())} non-finite value(s) (NaN or inf), first at "
                         f"{where(bad)}")
    limits = np.finfo(array.dtype) if np.issubdtype(array.dtype, np.floating) else np.iinfo(array.dtype)
    if float(limits.max) <= MAX_ABS_VALUE:  # float16, int32 and narrower: nothing can be too large
        return
    big = (array > MAX_ABS_VALUE) | (array < -MAX_ABS_VALUE)
    if big.any():
        raise ValueError(f"{name}: {int(big.sum())} value(s) of magnitude > {MAX_ABS_VALUE:g}, "
                         f"first at {where(big)}; rescale the data")


def as_observations(data: Any, name: str = "obs", min_samples: int = 2) -> tuple[np.ndarray, tuple[str, ...]]:
    """Validate a dataset of samples and return it as ``(array (N, d) float32, variable names)``.

    Args:
        data: ``(N, d)`` array-like, or a pandas DataFrame (its columns name the variables).
        name: the argument name used in error messages.
        min_samples: the least ``N`` accepted.

    Raises:
        ValueError: duplicate or non-numeric DataFrame columns, a non-numeric dtype, a shape
            other than ``(N >= min_samples, d >= 1)``, NaN/inf or values of magnitude above
            :data:`MAX_ABS_VALUE` (the message names the column and row).
    """
    names = None
    if hasattr(data, "columns") and hasattr(data, "to_numpy"):  # pandas DataFrame
        columns = [str(c) for c in data.columns]
        dup = sorted({c for c in columns if columns.count(c) > 1})
        if dup:
            raise ValueError(f"{name}: duplicate column names {dup}")
        import pandas as pd

        non_numeric = [str(c) for c, dt in zip(data.columns, data.dtypes)
                       if not pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt)]
        if non_numeric:
            raise ValueError(f"{name}: non-numeric columns {non_numeric}; every column must hold numbers")
        complex_cols = [str(c) for c, dt in zip(data.columns, data.dtypes)
                        if pd.api.types.is_complex_dtype(dt)]
        if complex_cols:
            raise ValueError(f"{name}: complex values in columns {complex_cols} are not supported")
        names = tuple(columns)
        data = data.to_numpy(dtype=np.float64)
    array = _as_numeric_array(data, name)
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a 2-d array (N samples, d variables), got shape {array.shape}")
    n, d = array.shape
    if d < 1:
        raise ValueError(f"{name}: has no variables (shape {array.shape})")
    if n < min_samples:
        raise ValueError(f"{name}: needs at least {min_samples} samples, got {n}")
    names = names or default_names(d)
    check_values(array, name, axes=("row",), names=names)
    return array.astype(np.float32), names


def as_observation_batch(data: Any, name: str = "observational", min_samples: int = 2) -> np.ndarray:
    """Validate a batch of ``Q`` observational datasets ``(Q, N, d)`` and return it as float32.

    Raises:
        ValueError: a non-numeric dtype, a shape other than ``(Q >= 1, N >= min_samples,
            d >= 1)``, NaN/inf or values of magnitude above :data:`MAX_ABS_VALUE` (the message
            names the query, row and column).
    """
    array = _as_numeric_array(data, name)
    if array.ndim != 3:
        raise ValueError(f"{name}: expected shape (Q, N, d), got {array.shape}")
    q, n, d = array.shape
    if q < 1:
        raise ValueError(f"{name}: holds no query (shape {array.shape})")
    if d < 1:
        raise ValueError(f"{name}: has no variables (shape {array.shape})")
    if n < min_samples:
        raise ValueError(f"{name}: needs at least {min_samples} samples per query, got {n}")
    check_values(array, name, axes=("query", "row"))
    return array.astype(np.float32)


def as_target_masks(targets: Any, num_queries: int, num_vars: int, name: str = "targets") -> np.ndarray:
    """Validate ``(Q, d)`` 0/1 target masks (at least one target per row); return float32."""
    array = _as_numeric_array(targets, name)
    if array.shape != (num_queries, num_vars):
        raise ValueError(f"{name}: expected shape {(num_queries, num_vars)} (Q, d), got {array.shape}")
    binary = (array == 0) | (array == 1)
    if not binary.all():
        q, j = np.argwhere(~binary)[0]
        raise ValueError(f"{name}: each row must be a 0/1 mask; query {q} has {array[q, j]!r} "
                         f"for variable {j}")
    empty = np.flatnonzero(array.sum(-1) == 0)
    if empty.size:
        raise ValueError(f"{name}: each row must target at least one variable; query {empty[0]} "
                         "targets none")
    return array.astype(np.float32)


def as_intervention_indices(index: Any, num_queries: int, num_interventions: int,
                            name: str = "intervention_index") -> np.ndarray:
    """Validate ``(Q,)`` integer intervention indices in ``0..num_interventions-1``; return int32."""
    array = _as_numeric_array(index, name)
    if array.shape != (num_queries,) or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name}: expected {num_queries} integers, got shape {array.shape} "
                         f"dtype {array.dtype}")
    bad = np.flatnonzero((array < 0) | (array >= num_interventions))
    if bad.size:
        raise ValueError(
            f"{name}: values must lie in 0..{num_interventions - 1} (this model knows |I| = "
            f"{num_interventions}); query {bad[0]} has {int(array[bad[0]])}"
        )
    return array.astype(np.int32)


def resolve_targets(target: Any, names: Sequence[str], name: str = "target") -> np.ndarray:
    """Turn a target specification into a ``(d,)`` float32 0/1 mask.

    ``target`` may be a variable index, a variable name, a list of either, or a boolean mask of
    length ``d``. At least one variable must be targeted.
    """
    d = len(names)
    if isinstance(target, (str, numbers.Integral)) and not isinstance(target, bool):
        items = [target]
    else:
        try:
            items = list(np.asarray(target).tolist()) if not isinstance(target, (list, tuple)) else list(target)
        except Exception as e:
            raise ValueError(f"{name}: cannot interpret {target!r} as target variable(s)") from e
    if items and all(isinstance(t, (bool, np.bool_)) for t in items):
        if len(items) != d:
            raise ValueError(f"{name}: boolean mask has length {len(items)} but there are {d} variables")
        mask = np.asarray(items, dtype=bool)
    else:
        mask = np.zeros(d, dtype=bool)
        for t in items:
            if isinstance(t, str):
                if t not in names:
                    raise ValueError(f"{name}: unknown variable {t!r:.60}; variables are {_listed(names)}")
                mask[list(names).index(t)] = True
            elif isinstance(t, numbers.Integral) and not isinstance(t, (bool, np.bool_)):
                if not 0 <= int(t) < d:
                    raise ValueError(f"{name}: variable index {int(t)} is out of range for {d} variables")
                mask[int(t)] = True
            else:
                raise ValueError(f"{name}: {t!r:.60} is neither a variable name nor an index")
    if not mask.any():
        raise ValueError(f"{name}: no variable is targeted")
    return mask.astype(np.float32)


def _listed(names: Sequence[str], most: int = 10) -> str:
    """``names`` as a list, the first ``most`` of them when there are more (one short line)."""
    shown = ", ".join(f"{n!r:.40}" for n in list(names)[:most])
    return f"[{shown}]" if len(names) <= most else f"[{shown}, ...] ({len(names)} in all)"


def check_intervention_index(index: Any, num_interventions: int, name: str = "intervention") -> int:
    """Check ``0 <= index < |I|`` and return it as an int."""
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, numbers.Integral):
        raise ValueError(f"{name}: the intervention index must be an integer, got {index!r}")
    if not 0 <= int(index) < num_interventions:
        raise ValueError(
            f"{name}: intervention index {int(index)} is out of range; this model knows "
            f"|I| = {num_interventions} intervention value(s) (indices 0..{num_interventions - 1})"
        )
    return int(index)


def check_positive_int(value: Any, name: str) -> int:
    """Check that ``value`` is an integer ``>= 1`` (not a bool) and return it as an int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def check_seed(seed: Any, name: str = "seed") -> Any:
    """Check that ``seed`` is an integer or a JAX PRNG key (raw ``uint32[2]`` or typed); return it."""
    if isinstance(seed, numbers.Integral) and not isinstance(seed, (bool, np.bool_)):
        if not -2**63 <= int(seed) < 2**63:
            raise ValueError(f"{name}: integer seed {int(seed)} is outside the signed 64-bit range")
        return seed
    import jax

    if isinstance(seed, (jax.Array, np.ndarray)):
        if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key) and seed.shape == ():
            return seed
        if seed.dtype == np.uint32 and seed.shape == (2,):
            return seed
    raise ValueError(f"{name}: expected an integer or a single JAX PRNG key, got {type(seed).__name__}"
                     + (f" of shape {seed.shape} dtype {seed.dtype}" if hasattr(seed, "shape") else ""))
