"""``activa predict`` worth its name and ``activa models`` (issue 16, items 2, 3, 7 and 8): the
intervention value shown and accepted, out-of-range warnings (``--strict``: errors), the mode
summary, ``--json`` and ``--plot``, help for every option, a start-up without JAX and the
persistent compilation cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import activa_ppl as ap
from activa_ppl.cli import build_parser, main
from activa_ppl.predict_report import cache_dir, format_report, modes, prediction_report


@pytest.fixture(autouse=True)
def _no_persistent_cache(monkeypatch):
    """In-process commands leave JAX's configuration alone (conftest: no compilation cache)."""
    monkeypatch.setenv("ACTIVA_CACHE_DIR", "off")


@pytest.fixture(scope="module")
def csvs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("csv")
    data = ap.simulate.linear_dataset(num_scms=30, num_vars=2, seed=3)
    obs = np.asarray(data.observational[0], np.float64)
    noise = np.random.default_rng(0).normal(size=(len(obs), 1))
    paths = {}
    for name, values, header in (("plain", obs, "X0,X1"), ("rescaled", obs * 1000 + 50000, "X0,X1"),
                                 ("extra", np.concatenate([obs, noise], 1), "X0,X1,noise")):
        paths[name] = folder / f"{name}.csv"
        np.savetxt(paths[name], values, delimiter=",", header=header, comments="")
    return paths


def _predict(tmp_path, data, *extra):
    return main(["predict", "--model", "gauss2", "--data", str(data), "--target", "X0",
                 "--out", str(tmp_path / "samples.csv"), "--force", *extra])


def test_predict_by_value_with_modes_json_and_plot(csvs, tmp_path, capsys):
    assert _predict(tmp_path, csvs["plain"], "--value", "5", "--json", str(tmp_path / "r.json"),
                    "--plot", str(tmp_path / "p.png"), "--num-samples", "50") == 0
    out = capsys.readouterr()
    assert out.out.startswith("gauss2: do(X0 = 5) (intervention index 0), 200-component Gaussian mixture")
    assert "mode 1: weight" in out.out and "warning" not in out.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["intervention"] == "do(X0 = 5)" and report["targets"] == ["X0"]
    assert set(report["variables"]) == {"X0", "X1"} and report["warnings"] == []
    assert report["modes"][0]["mean"]["X0"] == pytest.approx(5.0, abs=0.3)
    assert sum(m["weight"] for m in report["modes"]) == pytest.approx(1.0, abs=1e-4)
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert len((tmp_path / "samples.csv").read_text().splitlines()) == 51


@pytest.mark.parametrize("case, statistic", [("rescaled", "a variable's mean: observed"),
                                             ("extra", "number of variables: observed 3, trained 2 to 2")])
def test_out_of_range_input_warns_and_strict_refuses(csvs, tmp_path, capsys, case, statistic):
    assert _predict(tmp_path, csvs[case], "--json", str(tmp_path / "r.json")) == 0
    err = capsys.readouterr().err
    assert err.startswith("activa: warning: model gauss2 was not trained on data like this input") and statistic in err
    assert statistic in json.loads((tmp_path / "r.json").read_text())["warnings"][0]
    assert _predict(tmp_path, csvs[case], "--strict") == 2
    err = capsys.readouterr().err
    assert err.startswith("activa: error: model gauss2 was not trained") and err.rstrip().endswith("(--strict)")


def test_untrained_value_and_conflicting_options_are_refused(csvs, tmp_path, capsys):
    assert _predict(tmp_path, csvs["plain"], "--value", "3") == 2
    assert "not trained on do(X0 = 3); it knows the intervention values 5 (index 0)" in capsys.readouterr().err
    assert _predict(tmp_path, csvs["plain"], "--value", "5", "--intervention", "0") == 2
    assert "not both" in capsys.readouterr().err
    assert _predict(tmp_path, csvs["plain"], "--plot", str(tmp_path / "p.png"), "--plot-vars", "nope") == 2
    assert "--plot-vars" in capsys.readouterr().err


def test_models_lists_values_and_invariance(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    gauss2 = out[out.index("gauss2"):].splitlines()
    assert gauss2[1].strip().startswith("do(target = 5), trained on linear d=2, raw values")
    assert "location/scale invariant (standardize)" in out[out.index("gauss8"):].splitlines()[1]


def test_every_predict_option_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for command in ("predict", "models"):
        for action in sub.choices[command]._actions:
            assert action.help, (command, action.option_strings)
            if action.default not in (None, False) and action.dest != "help":
                assert "default" in action.help, (command, action.option_strings)


def test_modes_find_the_density_peaks():
    mix = ap.GaussianMixture.from_logits(np.zeros(3), np.array([[0.0, 0.0], [0.5, 0.0], [6.0, 0.0]]),
                                         np.tile(np.eye(2), (3, 1, 1))).with_names(["a", "b"])
    found = modes(mix)
    assert [m["components"] for m in found] == [[0, 1], [2]]
    assert [m["weight"] for m in found] == pytest.approx([2 / 3, 1 / 3], abs=1e-5)
    assert found[1]["peak"] == pytest.approx([6.0, 0.0], abs=1e-3)
    assert found[0]["sd"][0] == pytest.approx(np.sqrt(1 + 0.25 ** 2), rel=1e-5)
    report = prediction_report(mix.replace(intervention="do(b = 0)"), np.zeros((4, 2)), model="m",
                               targets=["b"], intervention_index=0)
    text = format_report(report)
    assert text.splitlines()[0] == "m: do(b = 0) (intervention index 0), 3-component Gaussian mixture"
    assert "2 modes" in text and "mode 2: weight 0.33: a 6 ± 1, b 0 ± 1" in text


def test_cache_dir_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("ACTIVA_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("ACTIVA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "activa_ppl" / "jax"


def test_cli_starts_without_jax_and_predict_fills_the_cache(csvs, tmp_path):
    probe = "import sys, activa_ppl.cli; activa_ppl.cli.build_parser(); print('jax' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
    env = dict(os.environ, ACTIVA_CACHE_DIR=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "activa_ppl.cli", "predict", "--model", "gauss2", "--data", str(csvs["plain"]),
               "--target", "X0", "--out", str(tmp_path / "s.csv"), "--num-samples", "10"]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "cache").iterdir())) > 5  # the compiled prediction and its helpers
    # start-up results for the next command (activa_ppl.disk_memo): parameter shapes, ranges and
    # the traced prediction (activa_ppl.exported)
    memos = {p.name.split("-")[0] for p in (tmp_path / "cache" / "memo").iterdir()}
    # training_ranges: only for a model without recorded ranges (the retrained gauss2 records them)
    assert {"param_shapes", "predict"} <= memos <= {"param_shapes", "training_ranges", "predict"}
    # the second command answers from it: neither NumPyro nor Flax is imported, same samples
    first = (tmp_path / "s.csv").read_text()
    again = subprocess.run([sys.executable, "-X", "importtime"] + command[1:] + ["--force"], capture_output=True,
                           text=True, env=env)
    assert again.returncode == 0, again.stderr
    imported = {line.split("|")[-1].strip() for line in again.stderr.splitlines() if line.startswith("import time:")}
    assert not {"numpyro", "flax"} & imported and "jax" in imported
    assert (tmp_path / "s.csv").read_text() == first
