"""Slow: each shipped multi-variable model beats the Gaussian Conditional baseline on freshly
simulated SCMs (data it has never seen, drawn with a seed no training set uses).

This is the check that would have caught the over-dispersed 8-variable models of 2026-11: a
model whose predictions are wider than a plain regression's fails it. Run with
``pytest -q -m slow tests/test_zoo_quality.py``.
"""

import pytest

import activa_ppl as ap
from activa_ppl.evaluation import evaluate
from activa_ppl.predictors import activa_predictor, gaussian_conditional_predictor

#: A simulation seed used by no shipped model's training data (those use 0).
FRESH_SEED = 2026_11_30
#: Fresh SCMs per model: 8 queries each, 480 tasks.
NUM_SCMS = 60

#: The retrained 8-variable models.
LINEAR_8 = ["gauss8", "beta8"]


def _fresh_like(fitted, seed: int):
    """A fresh data set from the generator of the model's training data (all SCMs in ``test``)."""
    meta = fitted.info["dataset"]
    return ap.simulate.linear_dataset(num_scms=NUM_SCMS, num_vars=meta["num_vars"], noise=meta["noise"],
                                      num_samples=meta["num_samples"], seed=seed,
                                      split_fractions=(0.0, 0.0, 1.0))


@pytest.mark.slow
@pytest.mark.parametrize("name", LINEAR_8)
def test_eight_variable_model_beats_gaussian_conditional_on_fresh_scms(name):
    fitted = ap.load_pretrained(name)
    data = _fresh_like(fitted, FRESH_SEED)
    scores = evaluate(data, {"ACTIVA": activa_predictor(fitted, seed=0), "GC": gaussian_conditional_predictor()},
                      split="test", progress=False)
    for marginal in ("all_but_target", "descendants"):
        ours, theirs = scores["ACTIVA"][marginal]["energy"], scores["GC"][marginal]["energy"]
        assert ours["mean"] < theirs["mean"], (
            f"{name}: {marginal} energy distance {ours['mean']:.3f} ± {ours['se']:.3f} "
            f"is not below Gaussian Conditional's {theirs['mean']:.3f} ± {theirs['se']:.3f}")
