"""Which model a name means: a folder in the working directory named like a zoo model is used
by ``resolve_model`` (``activa predict --model``), and said so; ``load_pretrained`` never looks
there (issue 18, item 11)."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import pandas as pd
import pytest

import activa_ppl as ap
from activa_ppl.cli import main
from activa_ppl.zoo import ShadowedModelWarning, available_models, resolve_model

ZOO_NAME = "gauss2"


@pytest.fixture
def shadow(tiny_fitted, tmp_path) -> Path:
    """A working directory holding ``./gauss2``, the tiny untrained model (not the zoo's)."""
    if ZOO_NAME not in available_models():
        pytest.skip(f"zoo model {ZOO_NAME} not installed")
    tiny_fitted.save(tmp_path / ZOO_NAME)
    return tmp_path


def _is_tiny(fitted) -> bool:
    return fitted.info.get("note") == "untrained"


def test_a_folder_named_like_a_zoo_model_is_used_and_named(shadow):
    zoo_path = available_models()[ZOO_NAME]
    with contextlib.chdir(shadow):
        with pytest.warns(ShadowedModelWarning) as caught:
            fitted = resolve_model(ZOO_NAME)
        assert _is_tiny(fitted)
        message = str(caught[0].message)
        assert str((shadow / ZOO_NAME).resolve()) in message and str(zoo_path) in message
        assert "in the working directory" in message and f"./{ZOO_NAME}" in message
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the folder meant explicitly, or the zoo by its path
            assert _is_tiny(resolve_model(f"./{ZOO_NAME}"))
            assert _is_tiny(resolve_model(shadow / ZOO_NAME))
            assert not _is_tiny(resolve_model(str(zoo_path)))
            # load_pretrained never looks in the working directory
            assert not _is_tiny(ap.load_pretrained(ZOO_NAME))


def test_no_warning_without_a_shadowing_folder(tmp_path):
    if ZOO_NAME not in available_models():
        pytest.skip(f"zoo model {ZOO_NAME} not installed")
    with contextlib.chdir(tmp_path), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_model(ZOO_NAME).info["model_name"] == ZOO_NAME


def test_cli_predict_says_which_model_it_used(shadow, capsys):
    pd.DataFrame({"a": [0.0, 1.0, 2.0], "b": [1.0, 0.0, 2.0]}).to_csv(shadow / "obs.csv", index=False)
    args = ["predict", "--data", "obs.csv", "--target", "a", "--num-samples", "5", "--force"]
    with contextlib.chdir(shadow):
        assert main(args + ["--model", ZOO_NAME]) == 0
        err = capsys.readouterr().err.splitlines()
        shadowed = [line for line in err if "in the working directory" in line]
        assert len(shadowed) == 1 and shadowed[0].startswith(f"activa: warning: model '{ZOO_NAME}': "
                                                             f"using the folder {(shadow / ZOO_NAME).resolve()}")
        assert main(args + ["--model", f"./{ZOO_NAME}"]) == 0
        assert "in the working directory" not in capsys.readouterr().err
