"""Reading observational samples from a CSV file, with errors that name the file, line and column.

:func:`read_csv` is the reader of ``activa predict --data``: it accepts the common dialects
(byte-order mark, CRLF line ends, blank lines, spaces around fields, double quotes) and refuses
a malformed file with one ``ValueError`` naming the file and, where there is one, the line and
column. It imports only the standard library at module level (NumPy and pandas on first use).
"""

from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["read_csv"]


def read_csv(path):
    """Read a CSV of observational samples (header row of variable names) with clear errors.

    The file must be UTF-8 text (a byte-order mark is allowed) whose first non-blank line names
    the variables; every further non-blank line holds one sample with one number per column.
    Blank lines are skipped, spaces around fields are ignored, fields may be double-quoted
    (strictly: a quote must close before the next delimiter). ``nan``/``inf`` parse as numbers
    (and are refused later, by :func:`activa_ppl.validation.as_observations`, with their column
    and row).

    Returns:
        ``pandas.DataFrame`` of float64 columns named by the header (names stripped of
        surrounding spaces).

    Raises:
        ValueError: a message naming the file and, where there is one, the line and column:
            missing file, not UTF-8 text, NUL bytes, malformed quoting (with its line), an empty
            file, a header without rows, an empty or duplicate column name, a first line of
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
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save the CSV as UTF-8") from e
    if "\x00" in text:
        raise ValueError(f"{path}: contains NUL bytes; not a text CSV file")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, skipinitialspace=True)
    lines = []  # (line number, fields) of the non-blank lines
    try:
        for row in reader:
            if row and not (len(row) == 1 and not row[0].strip()):
                lines.append((reader.line_num, row))
    except csv.Error as e:
        raise ValueError(f"{path}: malformed CSV on line {reader.line_num} ({e})") from e
    if not lines:
        raise ValueError(f"{path}: the file is empty")
    (_, header), body = lines[0], lines[1:]
    names = [c.strip() for c in header]
    unnamed = [j for j, c in enumerate(names) if not c]
    if unnamed:
        raise ValueError(f"{path}: column {unnamed[0] + 1} of the header has no name")
    if len(set(names)) != len(names):
        dup = sorted({c for c in names if names.count(c) > 1})
        raise ValueError(f"{path}: duplicate column names {dup}")
    if all(_is_number(c) for c in names):
        raise ValueError(f"{path}: the first line holds numbers ({', '.join(names[:3])}), not column "
                         "names; add a header row naming the variables")
    if not body:
        raise ValueError(f"{path}: has a header but no rows")
    for number, row in body:
        if len(row) != len(names):
            raise ValueError(f"{path}: line {number} has {len(row)} field(s) but the header names "
                             f"{len(names)} columns")
    columns = {}
    for j, name in enumerate(names):
        values = np.empty(len(body), dtype=np.float64)
        for i, (number, row) in enumerate(body):
            cell = row[j].strip()
            if not cell:
                raise ValueError(f"{path}: column {name!r} has an empty cell on line {number}")
            try:
                if "_" in cell:  # float() reads "1_000"; a CSV reader should not
                    raise ValueError(cell)
                values[i] = float(cell)
            except ValueError:
                raise ValueError(f"{path}: column {name!r} is non-numeric: line {number} holds "
                                 f"{cell[:40]!r}") from None
        columns[name] = values
    return pd.DataFrame(columns)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
