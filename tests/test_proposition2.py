"""Slow: Proposition 2 survives the recommended recipe at small scale.

The recipe's decoder sees the observational data, p(V | z, D_obs, do) (docs/concepts.md, "Beyond
Eq. 4"); such a decoder could learn to ignore z and collapse the equivalence-class mixture to one
mode. Trained briefly on the ambiguous simulator (each covariance produced by both causal
directions), the recipe must still spread its weight over both modes as the analytic posterior
does: its mean |weight − analytic| must be far below Gaussian Conditional's (which always picks
the "target is the cause" mode), and its weights must follow the analytic ones on the ambiguous
queries. The full-scale number (the zoo model ``ambiguous2``) is in the equivalence-class
tutorial. Run with ``pytest -q -m slow tests/test_proposition2.py`` (about 5 minutes on 2 cores).
"""

import jax
import numpy as np
import pytest

import activa_ppl as ap
from activa_ppl.predictors import gaussian_conditional_predictor
from activa_ppl.simulate.ambiguous import ambiguous_dataset, cause_mode_weight, equivalence_class_target

NUM_SCMS = 1500
STEPS = 1500
#: Measured once (2026-11-30, 2 cores, 210 s beside two trainings): weight error 0.146 (GC 0.489),
#: correlation with the analytic weights on the 140 ambiguous queries 0.88, mean min(w, 1 - w)
#: there 0.29 (analytic 0.27). A collapsed mixture puts min(w, 1 - w) near 0 and its error near
#: GC's; the bounds leave room for another seed or machine, not for a collapse.
MAX_ERROR = 0.25
MIN_CORRELATION = 0.6
MIN_SPREAD = 0.15


def mode_weights(predictions: dict, data) -> tuple[np.ndarray, dict]:
    """Analytic "target is the cause" weights of the test queries and each prediction's fitted
    weight (:func:`cause_mode_weight` on 2000 samples), as in the tutorial."""
    tasks = data.tasks("test")
    cov = data.extras["covariance"][tasks.scm]
    analytic = np.empty(len(tasks.scm))
    weights = {name: np.empty(len(tasks.scm)) for name in predictions}
    for t in (0, 1):
        rows = np.flatnonzero(tasks.query == t)
        analytic[rows] = np.asarray(equivalence_class_target(cov[rows], target=t).weights[:, 0])
        for name, mix in predictions.items():
            samples = np.asarray(mix[rows].sample(2000, jax.random.PRNGKey(t)))[..., 1 - t]
            weights[name][rows] = cause_mode_weight(samples, cov[rows], target=t)
    return analytic, weights


def train_and_weigh(config: ap.ActivaConfig, train_config: ap.TrainConfig, seed: int = 3):
    data = ambiguous_dataset(num_scms=NUM_SCMS, num_samples=100, seed=seed)
    fitted = ap.train(ap.Activa(config), data, config=train_config, progress=False)
    tasks = data.tasks("test")
    predictions = {"ACTIVA": ap.predictors.activa_predictor(fitted, seed=0)(tasks, data),
                   "GC": gaussian_conditional_predictor()(tasks, data)}
    return mode_weights(predictions, data)


@pytest.mark.slow
def test_recipe_keeps_the_equivalence_class_mixture():
    analytic, weights = train_and_weigh(ap.ActivaConfig.recommended("small"),
                                        ap.TrainConfig.recommended(STEPS, eval_every=250))
    ambiguous = (analytic > 0.1) & (analytic < 0.9)
    error = {name: float(np.mean(np.abs(w - analytic))) for name, w in weights.items()}
    ours = weights["ACTIVA"][ambiguous]
    corr = float(np.corrcoef(ours, analytic[ambiguous])[0, 1])
    spread = float(np.mean(np.minimum(ours, 1 - ours)))
    assert error["ACTIVA"] < MAX_ERROR and error["ACTIVA"] < 0.5 * error["GC"], error
    assert corr > MIN_CORRELATION, f"weights vs analytic on {ambiguous.sum()} ambiguous queries: r = {corr:.3f}"
    assert spread > MIN_SPREAD, f"mean min(w, 1 - w) on the ambiguous queries {spread:.3f}: the mixture collapsed"
