"""Tests of activa_ppl.csv_input.read_csv, the reader of ``activa predict --data``: malformed
files refused with one error naming the file, line and column, common dialects accepted, and
property-based fuzzing of the reader followed by ``activa predict`` on the same file.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import event
from hypothesis import strategies as st

from activa_ppl.cli import main
from activa_ppl.csv_input import read_csv
from helpers import DEEP, FAST, VALID_SHAPES, fuzz


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


def _csv_property(quiet_tiny_fitted, csv_file):
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
        with mock.patch("activa_ppl.exported.open_model", return_value=quiet_tiny_fitted.value), \
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


test_fuzz_csv_predict_cli, test_fuzz_csv_predict_cli_deep = fuzz(
    FAST, DEEP, csv_file=csv_files())(_csv_property)
