"""The README's Python example runs (shrunken: tiny preset, 20 steps)."""

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    block = re.findall(r"```python\n(import activa_ppl as ap.*?)```", README.read_text(), re.S)[0]
    shrunk = block.replace("num_steps=2000", "num_steps=20").replace('preset("small")', 'preset("tiny")')
    assert shrunk != block, "the README example changed: update this test's shrinking"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(shrunk, str(README), "exec"), namespace)
    assert namespace["mix"].num_components == 20
    assert (tmp_path / "my-model" / "config.json").is_file()


def test_readme_pretrained_path_runs(tmp_path, monkeypatch):
    """The first screen's Python block (the pretrained path, issue 16 item 9) on a small CSV."""
    import numpy as np

    from activa_ppl.arviz_io import group_names

    block = re.findall(r"```python\n(import pandas as pd\nimport activa_ppl as ap.*?)```", README.read_text(), re.S)[0]
    monkeypatch.chdir(tmp_path)
    x0 = np.random.default_rng(0).normal(size=60)
    np.savetxt("my.csv", np.c_[x0, 0.8 * x0 + 0.5 * np.random.default_rng(1).normal(size=60)], delimiter=",",
               header="X0,X1", comments="")
    namespace = {}
    exec(compile(block, str(README), "exec"), namespace)
    assert repr(namespace["mix"]) == "GaussianMixture(200 components over X0, X1, do(X0 = 5))"
    assert "posterior_predictive" in group_names(namespace["idata"])
