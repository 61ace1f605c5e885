"""Slow tests: demo-scale training (a few minutes on 2 CPU cores). Run with `pytest -m slow`."""

import pytest

import activa_ppl as ap
from activa_ppl.evaluation import evaluate
from activa_ppl.predictors import activa_predictor, gaussian_conditional_predictor

pytestmark = pytest.mark.slow


def test_demo_scale_gauss2(tmp_path):
    """The `activa demo` setting: small preset, 1200 steps on the paper's Gauss 2 set.

    ACTIVA must beat the correlational baseline where the paper says it does: NLL over All∖V_t
    and both metrics on non-descendants.
    """
    data = ap.simulate.linear_dataset(num_scms=3000, num_vars=2, noise="gauss", num_samples=100, seed=0)
    fitted = ap.train(ap.Activa(ap.ActivaConfig.preset("small")), data, num_steps=1200, seed=0,
                      eval_every=200, workdir=tmp_path, progress=False)
    results = evaluate(data, {"activa": activa_predictor(fitted), "gc": gaussian_conditional_predictor()}, split="test", max_scms=150, progress=False)
    ours, gc = results["activa"], results["gc"]
    assert ours["all_but_target"]["nll"]["mean"] < gc["all_but_target"]["nll"]["mean"]
    for metric in ("energy", "nll"):
        assert ours["non_descendants"][metric]["mean"] < gc["non_descendants"][metric]["mean"]
