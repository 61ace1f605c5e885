"""Input checks shared by every public entry point (Python API, CLI, CSV reader).

Each check raises :class:`ValueError` with a message that names the argument and, where there
is one, the offending column, row or value.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import numpy as np

__all__ = ["as_observations", "resolve_targets", "check_intervention_index", "default_names"]


def default_names(d: int) -> tuple[str, ...]:
    """``("X0", …, "X{d-1}")``: the names of unnamed variables."""
    return tuple(f"X{j}" for j in range(d))


def as_observations(data: Any, name: str = "obs", min_samples: int = 2) -> tuple[np.ndarray, tuple[str, ...]]:
    """Validate a dataset of samples and return it as ``(array (N, d) float32, variable names)``.

    Args:
        data: ``(N, d)`` array-like, or a pandas DataFrame (its columns name the variables).
        name: the argument name used in error messages.
        min_samples: the least ``N`` accepted.
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
        names = tuple(columns)
        data = data.to_numpy(dtype=np.float64)
    try:
        array = np.asarray(data)
    except Exception as e:  # ragged lists and the like
        raise ValueError(f"{name}: cannot be read as a numeric array ({e})") from e
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{name}: expected numbers, got dtype {array.dtype}")
    if np.iscomplexobj(array):
        raise ValueError(f"{name}: complex values are not supported")
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a 2-d array (N samples, d variables), got shape {array.shape}")
    n, d = array.shape
    if d < 1:
        raise ValueError(f"{name}: has no variables (shape {array.shape})")
    if n < min_samples:
        raise ValueError(f"{name}: needs at least {min_samples} samples, got {n}")
    bad = ~np.isfinite(array)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        names_ = names or default_names(d)
        raise ValueError(
            f"{name}: {int(bad.sum())} non-finite value(s) (NaN or inf), first in column "
            f"{names_[col]!r} at row {row}"
        )
    big = np.abs(array) > 1e15
    if big.any():
        col = int(np.argwhere(big)[0][1])
        raise ValueError(f"{name}: values of magnitude > 1e15 in column {(names or default_names(d))[col]!r}")
    return array.astype(np.float32), names or default_names(d)


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
                    raise ValueError(f"{name}: unknown variable {t!r}; variables are {list(names)}")
                mask[list(names).index(t)] = True
            elif isinstance(t, numbers.Integral) and not isinstance(t, bool):
                if not 0 <= int(t) < d:
                    raise ValueError(f"{name}: variable index {int(t)} is out of range for {d} variables")
                mask[int(t)] = True
            else:
                raise ValueError(f"{name}: {t!r} is neither a variable name nor an index")
    if not mask.any():
        raise ValueError(f"{name}: no variable is targeted")
    return mask.astype(np.float32)


def check_intervention_index(index: Any, num_interventions: int, name: str = "intervention") -> int:
    """Check ``0 <= index < |I|`` and return it as an int."""
    if isinstance(index, bool) or not isinstance(index, numbers.Integral):
        raise ValueError(f"{name}: the intervention index must be an integer, got {index!r}")
    if not 0 <= int(index) < num_interventions:
        raise ValueError(
            f"{name}: intervention index {int(index)} is out of range; this model knows "
            f"|I| = {num_interventions} intervention value(s) (indices 0..{num_interventions - 1})"
        )
    return int(index)
