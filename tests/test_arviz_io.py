"""Tests for the ArviZ conversion of predicted mixtures (activa_ppl.arviz_io)."""

import warnings

import arviz as az
import matplotlib
import numpy as np
import pytest
from hypothesis import event
from hypothesis import strategies as st
from scipy import stats

import activa_ppl as ap
from activa_ppl.arviz_io import arviz_major, compare_held_out, from_predictive, group_names, held_out_elpd, plot_ppc, to_inference_data
from activa_ppl.mixture import GaussianMixture
from helpers import DEEP_SMALL, FAST_SMALL, float_array, fuzz, values_ok

matplotlib.use("Agg")


@pytest.fixture
def gaussian():
    mean = np.array([1.0, -2.0])
    cov = np.array([[1.0, 0.6], [0.6, 2.0]])
    return GaussianMixture.gaussian(mean, cov).with_names(["a", "b"]), mean, cov


def test_single_task_groups_shapes_and_values(gaussian, rng):
    mix, mean, cov = gaussian
    observed = rng.multivariate_normal(mean, cov, size=40)
    idata = to_inference_data(mix, observed, num_draws=300, num_chains=2, seed=1)
    assert set(group_names(idata)) == {"posterior", "posterior_predictive", "log_likelihood", "observed_data",
                                       "constant_data"}
    assert idata.posterior_predictive["a"].shape == (2, 300, 40)
    assert idata.observed_data["b"].dims == ("obs_id",)
    np.testing.assert_allclose(idata.observed_data["b"].values, observed[:, 1])
    draws = np.stack([idata.posterior_predictive[v].values.ravel() for v in "ab"], axis=1)
    np.testing.assert_allclose(draws.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.03)
    expected = stats.multivariate_normal(mean, cov).logpdf(observed)
    np.testing.assert_allclose(idata.log_likelihood["joint"].values[1, 7], expected, rtol=1e-5)
    np.testing.assert_allclose(idata.constant_data["mean"].sel(var_name="b").values, -2.0, rtol=1e-6)
    np.testing.assert_allclose(idata.constant_data["sd"].values, np.sqrt(np.diag(cov)), rtol=1e-6)
    assert idata.constant_data["weights"].dims == ("component",)
    assert idata.constant_data["component_mean"].dims == ("component", "var_name")
    replicate = idata.posterior["replicate_mean"]
    assert replicate.dims == ("chain", "draw", "var_name") and list(replicate.var_name.values) == ["a", "b"]
    np.testing.assert_allclose(replicate.values, draws.reshape(2, 300, 40, 2).mean(2), rtol=1e-6)


def test_default_summary_is_clean(gaussian, rng):
    """``az.summary(idata)`` with defaults: finite diagnostics, no warnings (issue 16, item 4)."""
    mix, mean, cov = gaussian
    idata = to_inference_data(mix, rng.multivariate_normal(mean, cov, size=20), num_draws=200, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = az.summary(idata)
    assert list(summary.index) == ["replicate_mean[a]", "replicate_mean[b]"]
    assert np.isfinite(summary["r_hat"].astype(float)).all() and (summary["r_hat"].astype(float) < 1.05).all()


def test_method_and_top_level_names(gaussian, rng):
    mix, mean, cov = gaussian
    observed = rng.multivariate_normal(mean, cov, size=10)
    for idata in (mix.to_inference_data(observed, num_draws=5, seed=0),
                  ap.to_inference_data(mix, observed, num_draws=5, seed=0)):
        np.testing.assert_array_equal(idata.posterior_predictive["a"].values,
                                      to_inference_data(mix, observed, num_draws=5, seed=0).posterior_predictive["a"].values)
    labelled = mix.replace(intervention="do(a = 5)").to_inference_data(num_draws=2, num_samples=3)
    assert labelled.attrs["intervention"] == "do(a = 5)"


def test_numpyro_predictive_path_has_named_dims(tiny_fitted):
    """``Predictive(fitted.activa.model, params=fitted.params)`` + ``az.from_numpyro`` (issue 16, item 5)."""
    import jax
    from numpyro.infer import Predictive

    fitted = tiny_fitted
    obs = np.random.default_rng(0).normal(size=(1, 12, 2)).astype(np.float32)
    draws = Predictive(fitted.activa.model, params=fitted.params, num_samples=6)(
        jax.random.PRNGKey(0), obs, np.array([[1.0, 0.0]], np.float32), np.array([0], np.int32), num_samples=4)
    idata = from_predictive({"interventional": draws["interventional"]}, num_chains=2,
                            coords={"var_name": ["a", "b"]}, dims={"interventional": ["task", "obs_id", "var_name"]})
    values = idata.posterior_predictive["interventional"]
    assert values.dims == ("chain", "draw", "task", "obs_id", "var_name") and values.shape == (2, 3, 1, 4, 2)
    assert list(values.var_name.values) == ["a", "b"]


def test_compare_held_out_ranks_the_better_prediction(gaussian, rng):
    mix, mean, cov = gaussian
    observed = rng.multivariate_normal(mean, cov, size=50)
    worse = GaussianMixture.gaussian(mean + 1.0, cov).with_names(["a", "b"])
    table = compare_held_out({"right": to_inference_data(mix, observed, num_draws=3),
                              "shifted": to_inference_data(worse, observed, num_draws=3)})
    assert list(table.index) == ["right", "shifted"] and list(table["rank"]) == [0, 1]
    assert table.loc["right", "elpd"] == pytest.approx(stats.multivariate_normal(mean, cov).logpdf(observed).sum(),
                                                        rel=1e-5)
    assert table.loc["shifted", "elpd_diff"] > 0 and table.loc["shifted", "dse"] > 0
    with pytest.raises(ValueError, match="different numbers"):
        compare_held_out({"a": to_inference_data(mix, observed, num_draws=3),
                          "b": to_inference_data(mix, observed[:5], num_draws=3)})


@pytest.mark.skipif(arviz_major() >= 1, reason="arviz 1.x PSIS refuses a draw-constant log-likelihood")
def test_loo_returns_the_held_out_log_density(gaussian, rng):
    mix, mean, cov = gaussian
    observed = rng.multivariate_normal(mean, cov, size=30)
    idata = to_inference_data(mix, observed, num_draws=100)
    exact = stats.multivariate_normal(mean, cov).logpdf(observed).sum()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pareto k is undefined here (module docs)
        loo = az.loo(idata)
    assert loo.elpd_loo == pytest.approx(exact, rel=1e-5)
    assert loo.p_loo == pytest.approx(0.0, abs=1e-6)
    assert held_out_elpd(idata) == pytest.approx(exact, rel=1e-5)


def test_batch_of_tasks_and_arviz_functions(rng):
    locs = rng.normal(size=(3, 2, 2))
    covs = np.tile(np.eye(2) * 0.5, (3, 2, 1, 1))
    mix = GaussianMixture(np.full((3, 2), 0.5, np.float32), locs.astype(np.float32), covs.astype(np.float32))
    observed = rng.normal(size=(3, 25, 2))
    idata = to_inference_data(mix, observed, num_draws=40, task_names=["t0", "t1", "t2"], seed=0)
    assert idata.posterior_predictive["X0"].dims == ("chain", "draw", "task", "obs_id")
    assert idata.posterior_predictive["X0"].shape == (2, 40, 3, 25)
    assert list(idata.observed_data["X1"].coords["task"].values) == ["t0", "t1", "t2"]
    np.testing.assert_allclose(idata.log_likelihood["joint"].values[0, 0],
                               np.asarray(mix.log_prob(observed.swapaxes(0, 1))).T, rtol=1e-5)
    assert idata.posterior["replicate_mean"].dims == ("chain", "draw", "task", "var_name")
    summary = az.summary(idata, group="posterior_predictive", kind="stats")
    assert len(summary) == 2 * 3 * 25
    state = np.random.get_state()  # plot_ppc subsamples draws with numpy's global generator
    try:
        figure = plot_ppc(idata, num_pp_samples=10)
        plot_ppc(idata, num_pp_samples=5, coords={"task": ["t1"]})
    finally:
        np.random.set_state(state)
    assert len([ax for ax in figure.axes if ax.has_data()]) == 2
    matplotlib.pyplot.close("all")


def test_without_observations_and_determinism(gaussian):
    mix, _, _ = gaussian
    a = to_inference_data(mix, num_draws=10, num_samples=7, seed=3)
    b = to_inference_data(mix, num_draws=10, num_samples=7, seed=3)
    assert "observed_data" not in group_names(a) and "log_likelihood" not in group_names(a)
    assert a.posterior_predictive["a"].shape == (2, 10, 7)
    np.testing.assert_array_equal(a.posterior_predictive["a"].values, b.posterior_predictive["a"].values)
    with pytest.raises(ValueError, match="log_likelihood"):
        held_out_elpd(a)


def test_bad_inputs(gaussian):
    mix, _, _ = gaussian
    with pytest.raises(ValueError, match="shape"):
        to_inference_data(mix, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        to_inference_data(mix, np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match="distinct variable names"):
        to_inference_data(mix, np.zeros((5, 2)), variable_names=["x", "x"])
    for reserved in ("joint", "mean", "replicate_mean"):
        with pytest.raises(ValueError, match="reserved"):
            to_inference_data(mix, np.zeros((5, 2)), variable_names=[reserved, "x"])
    with pytest.raises(ValueError, match="positive"):
        to_inference_data(mix, num_draws=0)


def test_argument_types_are_checked(gaussian):
    mix, _, _ = gaussian
    with pytest.raises(ValueError, match="num_draws"):
        to_inference_data(mix, num_draws=1.5)
    with pytest.raises(ValueError, match="num_samples"):
        to_inference_data(mix, num_samples=-1)
    with pytest.raises(ValueError, match="GaussianMixture"):
        to_inference_data(np.zeros(3))
    with pytest.raises(ValueError, match="numeric"):
        to_inference_data(mix, np.array([[{"a": 1}, 2.0]], dtype=object))
    with pytest.raises(ValueError, match="positive integer"):
        mix.sample(-1, seed=0)


# ============================================================== observed values, fuzzed ====
def _arviz_property(call):
    observed, ok = call  # ok None: either outcome is right (numeric text is read as numbers)
    mix = GaussianMixture.gaussian(np.zeros(2), np.eye(2)).with_names(["a", "b"])
    try:
        idata = to_inference_data(mix, observed, num_draws=3, num_chains=1)
    except ValueError:
        assert ok is not True
        event("refused")
        return
    assert ok is not False
    event("converted")
    assert np.isfinite(np.asarray(idata.log_likelihood["joint"])).all() or not values_ok(observed)


@st.composite
def arviz_observed(draw):
    valid_shape = draw(st.booleans())
    shape = (draw(st.integers(1, 6)), 2) if valid_shape else draw(
        st.lists(st.integers(0, 3), max_size=4).map(tuple).filter(lambda s: len(s) != 2 or s[1] != 2))
    array = float_array(draw, shape, constant_columns=False)
    kind = draw(st.sampled_from(["float64", "float32", "int64", "str", "bool"]))
    if kind == "str":
        return array.astype(str), None
    with np.errstate(invalid="ignore", over="ignore"):
        array = array.astype(kind) if kind != "int64" else np.nan_to_num(array).clip(-1e9, 1e9).astype(kind)
    finite = bool(np.isfinite(np.asarray(array, dtype=np.float64)).all())
    return array, valid_shape and finite


test_fuzz_arviz_observed, test_fuzz_arviz_observed_deep = fuzz(
    FAST_SMALL, DEEP_SMALL, call=arviz_observed())(_arviz_property)
