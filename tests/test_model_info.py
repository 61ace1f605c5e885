"""Honest zero-shot answers (issue 16, items 2, 3 and 6): intervention values shown and accepted
by value, out-of-training-range warnings, short reprs, samples as a DataFrame."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import activa_ppl as ap
from activa_ppl.model_info import (OutOfTrainingRangeWarning, describe_model, intervention_index,
                                   intervention_label, intervention_values, range_problems,
                                   training_data_ranges, training_ranges)

LINEAR_INFO = {"dataset": {"generator": "linear", "num_vars": 2, "num_scms": 200, "num_samples": 50,
                           "noise": "gauss", "intervention_value": 5.0, "seed": 0}}


def test_intervention_values_from_config_or_dataset():
    assert intervention_values({"num_interventions": 1}, LINEAR_INFO) == [5.0]
    assert intervention_values({"num_interventions": 2, "intervention_values": [1, 3]}, {}) == [1.0, 3.0]
    assert intervention_values({"num_interventions": 1}, {"dataset": {"generator": "sergio"}}) == [0.0]
    assert intervention_values({"num_interventions": 2}, {}) == [None, None]
    assert intervention_label(["X0"], 5.0, 0) == "do(X0 = 5)"
    assert intervention_label(["a", "b"], None, 1) == "do(a, b = index 1)"


def test_intervention_by_value_is_resolved_or_refused():
    assert intervention_index(0, [5.0], ["X0"]) == 0
    assert intervention_index({"X0": 5.0}, [5.0], ["X0"]) == 0
    assert intervention_index({"a": 3, "b": 3.0}, [1.0, 3.0], ["a", "b"]) == 1
    with pytest.raises(ValueError, match=r"not trained on do\(X0 = 4\).*5 \(index 0\)"):
        intervention_index({"X0": 4.0}, [5.0], ["X0"])
    with pytest.raises(ValueError, match="one value per target"):
        intervention_index({"X1": 5.0}, [5.0], ["X0"])
    with pytest.raises(ValueError, match="different intervention indices"):
        intervention_index({"a": 1.0, "b": 3.0}, [1.0, 3.0], ["a", "b"])
    with pytest.raises(ValueError, match="must be a number"):
        intervention_index({"X0": "five"}, [5.0], ["X0"])


def test_ranges_and_problems(rng):
    data = ap.simulate.linear_dataset(num_scms=100, num_vars=2, num_samples=40, seed=0)
    ranges = training_data_ranges(data)
    assert ranges["num_vars"] == [2, 2] and ranges["num_samples"] == [40, 40]
    assert ranges["num_datasets"] == 100 and ranges["source"] == "recorded at training"
    assert range_problems(ranges, data.observational[0]) == []
    rescaled = data.observational[0] * 1000 + 50000
    problems = range_problems(ranges, rescaled)
    assert [p.split(":")[0] for p in problems] == ["a variable's mean", "a variable's standard deviation"]
    assert "observed 4.9" in problems[0] and "trained -0.2" in problems[0]
    assert range_problems(ranges, rescaled, standardized=True) == []  # invariant to location/scale
    extra = np.concatenate([data.observational[0], rng.normal(size=(40, 1))], axis=1)
    assert range_problems(ranges, extra, standardized=True) == ["number of variables: observed 3, trained 2 to 2"]
    assert range_problems(ranges, data.observational[0][:15])[0].startswith("number of samples")
    assert range_problems(None, rescaled) == []


def test_reconstructed_ranges_of_older_models():
    ranges = training_ranges(LINEAR_INFO)
    assert ranges["source"].startswith("reconstructed") and ranges["num_samples"] == [50, 50]
    assert training_ranges({"training_data": {"num_vars": [3, 3]}}) == {"num_vars": [3, 3]}
    assert training_ranges({"dataset": {"generator": "sergio"}}) is None


def test_describe_model_names_values_and_invariance():
    line = describe_model("gauss2", {"num_interventions": 1}, dict(LINEAR_INFO, best_valid_nll=-0.01))
    assert line.startswith("gauss2, do(target = 5),") and "not scale invariant" in line
    assert "values by index {0: 1, 1: ?}" in describe_model("m", {"num_interventions": 2, "intervention_values": [1, None]}, {})
    assert "location/scale invariant" in describe_model(None, {"standardize": True, "intervention_values": [5]}, {})


# ====================================================================== a zoo model ====
@pytest.fixture(scope="module")
def gauss2():
    return ap.load_pretrained("gauss2")


@pytest.fixture(scope="module")
def frame():
    data = ap.simulate.linear_dataset(num_scms=30, num_vars=2, seed=3)
    return pd.DataFrame(np.asarray(data.observational[0], np.float64), columns=["X0", "X1"])


def test_zoo_model_repr_is_short_and_names_the_intervention(gauss2):
    text = repr(gauss2)
    assert len(text) < 300 and text.startswith("FittedActiva(gauss2, do(target = 5), trained on linear d=2")


def test_predict_by_value_and_labelled_mixture(gauss2, frame):
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfTrainingRangeWarning)
        by_index = gauss2.predict(frame, "X0", intervention=0, seed=1)
        by_value = gauss2.predict(frame, "X0", intervention={"X0": 5.0}, seed=1)
    np.testing.assert_array_equal(np.asarray(by_index.locs), np.asarray(by_value.locs))
    assert by_value.intervention == "do(X0 = 5)"
    assert repr(by_value) == "GaussianMixture(200 components over X0, X1, do(X0 = 5))"  # S = 100 draws x 2
    assert by_value.marginal(["X1"]).intervention == "do(X0 = 5)"
    with pytest.raises(ValueError, match=r"not trained on do\(X0 = 3\)"):
        gauss2.predict(frame, "X0", intervention={"X0": 3.0})


def test_predict_warns_on_rescaled_and_extra_columns(gauss2, frame, rng):
    message = r"model gauss2 was not trained on data like this input \(a variable.s mean: observed [45]\.\d+e\+04"
    with pytest.warns(OutOfTrainingRangeWarning, match=message):
        gauss2.predict(frame * 1000 + 50000, "X0")
    with pytest.warns(OutOfTrainingRangeWarning, match="number of variables: observed 3, trained 2 to 2"):
        gauss2.predict(frame.assign(noise=rng.normal(size=len(frame))), "X0")
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfTrainingRangeWarning)
        with pytest.raises(OutOfTrainingRangeWarning):
            gauss2.predict(frame * 1000 + 50000, "X0")


def test_mixture_repr_and_dataframe():
    mix = ap.GaussianMixture.gaussian(np.zeros(2), np.eye(2)).with_names(["a", "b"])
    assert repr(mix) == "GaussianMixture(1 components over a, b)"
    frame = mix.sample(5, seed=0, as_frame=True)
    assert list(frame.columns) == ["a", "b"] and frame.shape == (5, 2)
    np.testing.assert_allclose(frame.to_numpy(), np.asarray(mix.sample(5, seed=0)), rtol=1e-6)
    batch = ap.GaussianMixture.gaussian(np.zeros((3, 4)), np.eye(4))
    assert repr(batch) == "GaussianMixture(batch_shape=(3,), 1 components over 4 variables)"
    frame = batch.to_dataframe(2, seed=1)
    assert list(frame.columns) == ["task", "X0", "X1", "X2", "X3"] and list(frame["task"]) == [0, 0, 1, 1, 2, 2]
    np.testing.assert_allclose(frame.iloc[2, 1:].to_numpy(), np.asarray(batch.sample(2, seed=1))[0, 1], rtol=1e-6)
