"""Independent cross-check with DoWhy's graphical causal models (``dowhy.gcm``, a test extra).

1. The linear simulator: for SCMs drawn by :func:`activa_ppl.simulate.linear_dataset`, DoWhy is
   handed the same graph, weights and noise distributions as fixed mechanisms, and its
   ``gcm.interventional_samples`` must match the simulator's interventional samples (means,
   standard deviations and two-sample KS tests per variable).
2. The Linear Causal baseline: DoWhy fits linear additive-noise mechanisms with Gaussian noise on
   the same observational samples and draws from ``do(V_t = 5)``; the sample moments must match
   the baseline's analytic mean and covariance.
"""

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from dowhy import gcm
from scipy import stats

from dowhy.gcm.causal_models import PARENTS_DURING_FIT

from activa_ppl.baselines import linear_causal
from activa_ppl.simulate import linear_dataset


@pytest.fixture
def dowhy_seed():
    """DoWhy draws from numpy's global generator: seed it for the test, restore it afterwards
    (conftest's guard checks that the global state is left as found)."""
    state = np.random.get_state()
    np.random.seed(0)
    yield
    np.random.set_state(state)


class FixedLinear(gcm.ml.PredictionModel):
    """A known linear mechanism f(pa) = pa @ w (DoWhy orders parents with sorted())."""

    def __init__(self, weights):
        self.weights = np.asarray(weights, dtype=float)

    def fit(self, X, Y):  # the mechanism is given, nothing to fit
        return None

    def predict(self, X):
        return (np.asarray(X, dtype=float) @ self.weights).reshape(-1, 1)

    def clone(self):
        return FixedLinear(self.weights)


def _noise(data, s, j):
    extras = data.extras
    if data.metadata["noise"] == "gauss":
        return gcm.ScipyDistribution(stats.norm, loc=0.0, scale=float(extras["noise_std"][s, j]))
    return gcm.ScipyDistribution(stats.beta, a=float(extras["beta_a"][s, j]), b=float(extras["beta_b"][s, j]))


def _true_gcm(data, s):
    """DoWhy SCM with the simulator's true mechanisms of SCM ``s`` (nodes 0..d-1)."""
    d = data.num_vars
    weights = data.extras["weights"][s]
    graph = nx.DiGraph()
    graph.add_nodes_from(range(d))
    graph.add_edges_from((a, b) for a in range(d) for b in range(d) if data.adjacency[s, a, b])
    model = gcm.StructuralCausalModel(graph)
    for j in range(d):
        parents = sorted(graph.predecessors(j))
        if parents:
            model.set_causal_mechanism(j, gcm.AdditiveNoiseModel(FixedLinear(weights[parents, j]),
                                                                 noise_model=_noise(data, s, j)))
        else:
            model.set_causal_mechanism(j, _noise(data, s, j))
        graph.nodes[j][PARENTS_DURING_FIT] = parents  # mechanisms are given, not fitted
    return model


@pytest.mark.parametrize("noise", ["gauss", "beta"])
def test_simulator_interventions_match_dowhy(noise, dowhy_seed):
    n = 4000
    data = linear_dataset(num_scms=3, num_vars=3, noise=noise, num_samples=50,
                          num_interventional_samples=n, seed=11, edge_prob=0.8)
    assert data.adjacency.sum() >= 4  # the SCMs have edges to propagate along
    value, jitter = data.metadata["intervention_value"], data.metadata["intervention_noise_std"]
    rng = np.random.default_rng(0)
    checked = 0
    for s in range(data.num_scms):
        model = _true_gcm(data, s)
        for i in range(data.num_vars):
            ours = data.interventional[s, i].astype(float)
            theirs = gcm.interventional_samples(
                model, {i: lambda x: value + jitter * rng.standard_normal()}, num_samples_to_draw=n
            )[list(range(data.num_vars))].to_numpy()
            for j in range(data.num_vars):
                a, b = ours[:, j], theirs[:, j]
                se = np.sqrt(a.var() / n + b.var() / n)
                assert abs(a.mean() - b.mean()) < 5 * se + 1e-3, (s, i, j, a.mean(), b.mean())
                assert abs(a.std() / b.std() - 1) < 0.1, (s, i, j, a.std(), b.std())
                assert stats.ks_2samp(a, b).pvalue > 1e-4, (s, i, j)
                checked += 1
    assert checked == 27


def test_linear_causal_moments_match_dowhy(dowhy_seed):
    data = linear_dataset(num_scms=3, num_vars=3, noise="gauss", num_samples=3000, seed=5, edge_prob=0.8)
    for s in range(data.num_scms):
        obs = data.observational[s].astype(float)
        graph = nx.DiGraph()
        graph.add_nodes_from(range(3))
        graph.add_edges_from((a, b) for a in range(3) for b in range(3) if data.adjacency[s, a, b])
        model = gcm.StructuralCausalModel(graph)
        for j in range(3):
            if list(graph.predecessors(j)):
                model.set_causal_mechanism(j, gcm.AdditiveNoiseModel(
                    gcm.ml.create_linear_regressor(), noise_model=gcm.ScipyDistribution(stats.norm)))
            else:
                model.set_causal_mechanism(j, gcm.ScipyDistribution(stats.norm))
        gcm.fit(model, pd.DataFrame(obs, columns=range(3)))
        for t in range(3):
            mask = np.arange(3) == t
            ours = linear_causal(obs, data.adjacency[s], mask, 5.0)
            draws = gcm.interventional_samples(model, {t: lambda x: 5.0}, num_samples_to_draw=100_000)
            draws = draws[list(range(3))].to_numpy()
            mean, cov = np.asarray(ours.mean), np.asarray(ours.covariance)
            sd = np.sqrt(np.diag(cov))
            np.testing.assert_allclose(draws.mean(0), mean, atol=5 * sd.max() / np.sqrt(100_000) + 1e-3)
            free = ~mask
            # DoWhy's Gaussian fit is the MLE (RSS / N); the baseline divides by N - |pa| - 1.
            np.testing.assert_allclose(np.cov(draws[:, free].T), cov[np.ix_(free, free)],
                                       rtol=0.03, atol=0.01)
