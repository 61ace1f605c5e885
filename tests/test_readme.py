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
