"""Every shipped model loads, matches its config, and predicts one query; zoo lookup."""

from pathlib import Path

import numpy as np
import pytest

import activa_ppl as ap
from activa_ppl.baselines.mace_tnp import load_mace_tnp

ROOT = Path(__file__).resolve().parents[1]
ZOO = sorted(p.parent.name for p in (ROOT / "models").glob("*/config.json"))
#: Largest |predicted mean − v| and predicted sd of the intervened variable (data units).
MAX_TARGET_BIAS, MAX_TARGET_SD = 0.3, 0.5
#: Zoo models known to fail the bounds above (over-dispersed), as strict xfails: a model that
#: starts passing must leave this list. Empty since 2026-11-30, when the last Eq. 4 models
#: (beta8, sergio8) were replaced by the recipe's (issue 14).
OVERDISPERSED: dict[str, str] = {}
BASELINES = sorted(p.parent for p in (ROOT / "models" / "baselines").glob("*/config.json"))


def test_zoo_lists_the_shipped_models():
    assert {"gauss2", "beta2", "ambiguous2"} <= set(ZOO)
    assert set(ZOO) <= set(ap.available_models())
    for name in ZOO:
        assert (ROOT / "models" / name / "card.md").is_file(), f"{name} has no card"


def _inputs_like_training(fitted, rng):
    """``(obs (N, d), v_t)``: one dataset of the kind the model was trained on, and the value
    of intervention index 0 in data units."""
    meta = fitted.info["dataset"]
    cfg = fitted.activa.config
    value = cfg.intervention_values[0] if cfg.intervention_values else meta.get("intervention_value", 5.0)
    if meta.get("generator") == "linear":
        data = ap.simulate.linear_dataset(num_scms=2, num_vars=meta["num_vars"], noise=meta["noise"],
                                          num_samples=meta["num_samples"], seed=7)
        return np.asarray(data.observational[0]), value
    d = meta.get("num_vars", meta.get("num_genes", 2))
    return rng.gamma(2.0, 2.0, size=(50, d)).astype(np.float32), value  # expression-like, positive


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(
    strict=True, reason=f"not yet retrained (issue 14): {OVERDISPERSED[n]}")) if n in OVERDISPERSED else n
    for n in ZOO])
def test_shipped_model_predicts(name, rng):
    fitted = ap.load_pretrained(name)  # checks the parameter shapes against the config
    obs, value = _inputs_like_training(fitted, rng)
    d = obs.shape[1]
    mix = fitted.predict(obs, target=0, intervention=0, seed=0)
    assert mix.num_vars == d and mix.num_components == fitted.activa.config.decoder_components * \
        fitted.activa.config.num_predictive_latents
    assert np.isfinite(np.asarray(mix.locs)).all() and np.isfinite(np.asarray(mix.covariances)).all()
    # The intervened variable is known to the model: do(X0 = v) sets it to v up to noise of sd
    # 0.1 (linear sets). Fixed bounds, not a multiple of the predicted spread, so that an
    # over-dispersed model fails here rather than passing with a wide tolerance.
    spread = float(np.sqrt(mix.covariance[0, 0]))
    assert abs(float(mix.mean[0]) - value) < MAX_TARGET_BIAS, (name, float(mix.mean[0]), value)
    assert spread < MAX_TARGET_SD, (name, spread)


@pytest.mark.parametrize("path", BASELINES, ids=lambda p: p.name)
def test_shipped_baseline_predicts(path, rng):
    fitted = load_mace_tnp(path)
    d = fitted.config.num_vars
    obs = rng.normal(size=(1, 50, d)).astype(np.float32)
    mix = fitted.predict_batch(obs, np.eye(d, dtype=np.float32)[:1], np.array([5.0], np.float32))
    assert mix.batch_shape == (1,) and np.isfinite(np.asarray(mix.covariances)).all()


def test_every_zoo_file_is_package_data():
    """A wheel carries the whole zoo: pyproject's package-data patterns match every model file."""
    import fnmatch
    import tomllib

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setup["package-dir"]["activa_ppl.models"] == "models"
    assert "activa_ppl.models" in setup["packages"]
    patterns = setup["package-data"]["activa_ppl.models"]
    files = [p.relative_to(ROOT / "models").as_posix() for p in (ROOT / "models").rglob("*")
             if p.is_file() and p.suffix in {".json", ".npz", ".md"}]
    assert files
    # setuptools' globs do not cross "/": match path depth as well as the pattern
    missing = [f for f in files if not any(
        fnmatch.fnmatch(f, pat) and f.count("/") == pat.count("/") for pat in patterns)]
    assert not missing, f"zoo files not shipped in wheels: {missing}"


def test_cli_models_lists_every_model_with_its_card_title(capsys):
    from activa_ppl.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ZOO:
        assert name in out
    assert "ACTIVA for 2-variable linear-Gaussian SCMs" in out  # gauss2's card title
