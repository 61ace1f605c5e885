"""The documentation builds (mkdocs, warnings as errors) and every tutorial runs at a small scale."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.py"))


def test_every_tutorial_has_a_page():
    assert len(TUTORIALS) == 4
    for script in TUTORIALS:
        page = script.with_suffix(".md")
        assert page.is_file(), f"{script.name} has no page"
        assert f'--8<-- "docs/tutorials/{script.name}"' in page.read_text(), f"{page.name} does not include its script"


@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs_small(script, tmp_path):
    env = {**os.environ, "ACTIVA_TUTORIAL_SCALE": "small", "ACTIVA_TUTORIAL_OUT": str(tmp_path),
           "JAX_PLATFORMS": "cpu", "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "summary.json").is_file()
    assert list(tmp_path.glob("*.png")), "the tutorial wrote no figure"


def test_docs_build_strict(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert (tmp_path / "site" / "tutorials" / "equivalence_class" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "model" / "index.html").is_file()
