"""Reading observational samples from a CSV file, with errors that name the file, line and column.

:func:`read_csv` is the reader of ``activa predict --data``: it accepts the common dialects
(byte-order mark, CRLF line ends, blank lines, spaces around fields, double quotes) and refuses
a malformed file with one ``ValueError`` naming the file and, where there is one, the line and
column. It imports only the standard library at module level (NumPy and pandas on first use).
"""

from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["MAX_CSV_CELLS", "read_csv"]

#: The most cells (rows x columns) :func:`read_csv` reads; a larger file is refused from its line
#: count and header before its rows are parsed (ten million cells: 80 MB as float64).
MAX_CSV_CELLS = 10**7


def read_csv(path, max_cells: int = MAX_CSV_CELLS):
    """Read a CSV of observational samples (header row of variable names) with clear errors.

    The file must be UTF-8 text (a byte-order mark is allowed) whose first non-blank line names
    the variables; every further non-blank line holds one sample with one number per column.
    Blank lines are skipped, spaces around fields are ignored, fields may be double-quoted
    (strictly: a quote must close before the next delimiter). ``nan``/``inf`` parse as numbers
    (and are refused later, by :func:`activa_ppl.validation.as_observations`, with their column
    and row).

    Memory stays proportional to the file: rows are parsed into floats one at a time, and a file
    of more than ``max_cells`` cells is refused from its line count before any row is parsed.

    Returns:
        ``pandas.DataFrame`` of float64 columns named by the header (names stripped of
        surrounding spaces).

    Raises:
        ValueError: a message naming the file and, where there is one, the line and column:
            missing file, not UTF-8 text, NUL bytes, malformed quoting (with its line), an empty
            file, a header without rows, an empty or duplicate column name or one holding
            control characters (terminal escapes), more than ``max_cells`` cells, a first line of
            numbers only (no header), a line whose field
            count differs from the header's, an empty cell, or a cell that is not a number.
    """
    import io

    import numpy as np
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    if path.stat().st_size > 64 * max_cells:
        raise ValueError(f"{path}: {path.stat().st_size:,} bytes, more than a CSV of {max_cells:,} cells "
                         "(the most read) needs; predict from a subsample")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save the CSV as UTF-8") from e
    if "\x00" in text:
        raise ValueError(f"{path}: contains NUL bytes; not a text CSV file")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, skipinitialspace=True)
    rows = _rows(reader, path)
    header = next(rows, None)
    if header is None:
        raise ValueError(f"{path}: the file is empty")
    names = [c.strip() for c in header[1]]
    _check_header(names, path)
    bound = max(text.count("\n"), text.count("\r")) + 1  # at least the number of rows
    if (bound - 1) * len(names) > max_cells:
        raise ValueError(f"{path}: {bound - 1:,} lines x {len(names):,} columns is more than the {max_cells:,} "
                         "cells read at most; predict from a subsample")
    values = np.empty((bound, len(names)), dtype=np.float64)
    count = 0
    for number, row in rows:
        if len(row) != len(names):
            raise ValueError(f"{path}: line {number} has {len(row)} field(s) but the header names "
                             f"{len(names)} columns")
        for j, (name, cell) in enumerate(zip(names, row)):
            values[count, j] = _number(cell.strip(), name, number, path)
        count += 1
    if not count:
        raise ValueError(f"{path}: has a header but no rows")
    return pd.DataFrame(values[:count], columns=names)


def _rows(reader, path):
    """``(line number, fields)`` of each non-blank line, malformed quoting reported with its line."""
    try:
        for row in reader:
            if row and not (len(row) == 1 and not row[0].strip()):
                yield reader.line_num, row
    except csv.Error as e:
        raise ValueError(f"{path}: malformed CSV on line {reader.line_num} ({e})") from e


def _check_header(names: list[str], path) -> None:
    """Refuse empty, duplicate, numeric-only and control-character column names."""
    import unicodedata

    unnamed = [j for j, c in enumerate(names) if not c]
    if unnamed:
        raise ValueError(f"{path}: column {unnamed[0] + 1} of the header has no name")
    escapes = [j for j, c in enumerate(names) if any(unicodedata.category(ch) == "Cc" for ch in c)]
    if escapes:
        raise ValueError(f"{path}: column {escapes[0] + 1} of the header holds control characters "
                         f"({names[escapes[0]]!r:.60}); variable names must be printable text")
    if len(set(names)) != len(names):
        dup = sorted({c for c in names if names.count(c) > 1})
        raise ValueError(f"{path}: duplicate column names {dup[:10]}")
    if all(_is_number(c) for c in names):
        raise ValueError(f"{path}: the first line holds numbers ({', '.join(names[:3])}), not column "
                         "names; add a header row naming the variables")


def _number(cell: str, name: str, number: int, path) -> float:
    """One cell as a float, with an error naming its column and line."""
    if not cell:
        raise ValueError(f"{path}: column {name!r} has an empty cell on line {number}")
    try:
        if "_" in cell:  # float() reads "1_000"; a CSV reader should not
            raise ValueError(cell)
        return float(cell)
    except ValueError:
        raise ValueError(f"{path}: column {name!r} is non-numeric: line {number} holds "
                         f"{cell[:40]!r}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
