"""Tests of activa_ppl.simulate.linear_dataset (paper Appendix C.1).

Statistical checks use tolerances of Z Monte-Carlo standard errors (Z = 5, so a correct
generator fails a given check with probability < 1e-6), computed from independent units only.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

import activa_ppl.simulate
from activa_ppl.data import InterventionalDataset
from activa_ppl.simulate import linear_dataset
from activa_ppl.simulate.linear import make_acyclic, sample_er_dags

Z = 5.0


@pytest.fixture(scope="module")
def gauss4() -> InterventionalDataset:
    return linear_dataset(num_scms=1500, num_vars=4, noise="gauss", num_samples=100, seed=1)


@pytest.fixture(scope="module")
def beta4() -> InterventionalDataset:
    return linear_dataset(num_scms=1500, num_vars=4, noise="beta", num_samples=100, seed=2)


@pytest.fixture(scope="module")
def gauss2() -> InterventionalDataset:
    return linear_dataset(num_scms=3000, num_vars=2, noise="gauss", num_samples=100, seed=3)


def test_exported_from_package():
    assert activa_ppl.simulate.linear_dataset is linear_dataset


@pytest.mark.parametrize("noise", ["gauss", "beta"])
def test_shapes_and_conventions(noise):
    ds = linear_dataset(num_scms=50, num_vars=3, noise=noise, num_samples=20, seed=0,
                        num_interventional_samples=7)
    assert ds.observational.shape == (50, 20, 3)
    assert ds.interventional.shape == (50, 3, 7, 3)
    assert ds.observational.dtype == ds.interventional.dtype == np.float32
    np.testing.assert_array_equal(ds.targets, np.broadcast_to(np.eye(3, dtype=bool), (50, 3, 3)))
    assert (ds.intervention_index == 0).all() and ds.num_interventions == 1
    assert (ds.intervention_values == 5.0).all()
    assert ds.extras["weights"].shape == (50, 3, 3)
    np.testing.assert_array_equal(ds.extras["weights"] != 0, ds.adjacency == 1)
    magnitudes = np.abs(ds.extras["weights"][ds.adjacency == 1])
    assert ((magnitudes >= 0.5) & (magnitudes <= 2.0)).all()
    expected_extras = {"weights", "noise_mean", "noise_std"} | ({"beta_a", "beta_b"} if noise == "beta" else set())
    assert set(ds.extras) == expected_extras
    assert ds.metadata["generator"] == "linear" and ds.metadata["seed"] == 0
    assert ds.metadata["noise"] == noise and ds.metadata["version"] == "0.1.0"
    assert ds.metadata["num_interventional_samples"] == 7


def test_split_fractions():
    ds = linear_dataset(num_scms=3000, num_vars=2, num_samples=2, seed=0)
    np.testing.assert_array_equal(np.bincount(ds.split, minlength=3), [2400, 300, 300])
    assert not (ds.split[:2400] == 0).all()  # assigned by a permutation, not by position


def test_deterministic_per_seed(tmp_path):
    kwargs = dict(num_scms=40, num_vars=5, noise="beta", num_samples=10)
    a, b = linear_dataset(seed=11, **kwargs), linear_dataset(seed=11, **kwargs)
    c = linear_dataset(seed=12, **kwargs)
    for name in ("observational", "interventional", "adjacency", "split"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for key in a.extras:
        np.testing.assert_array_equal(a.extras[key], b.extras[key])
    assert a.metadata == b.metadata
    assert not np.array_equal(a.observational, c.observational)
    # Save/load keeps everything, including the float64 extras.
    a.save(tmp_path)
    loaded = InterventionalDataset.load(tmp_path)
    np.testing.assert_array_equal(loaded.interventional, a.interventional)
    np.testing.assert_array_equal(loaded.extras["beta_a"], a.extras["beta_a"])


def test_graphs_are_acyclic():
    ds = linear_dataset(num_scms=300, num_vars=8, num_samples=2, seed=4)
    for s in range(ds.num_scms):
        assert nx.is_directed_acyclic_graph(ds.graph(s))
    assert ds.adjacency.sum(axis=(1, 2)).mean() > 5  # dense enough that cycles had to be broken


def test_make_acyclic_removes_only_cycle_edges():
    rng = np.random.default_rng(0)
    for _ in range(200):
        adjacency = rng.random((6, 6)) < 0.4
        np.fill_diagonal(adjacency, False)
        dag = make_acyclic(adjacency, rng)
        graph = nx.DiGraph(dag.astype(int))
        assert nx.is_directed_acyclic_graph(graph)
        assert not (dag & ~adjacency).any()  # a subgraph of the input
        # Only edges lying on a cycle of the original graph are ever deleted.
        removed = np.argwhere(adjacency & ~dag)
        for a, b in removed:
            assert nx.has_path(nx.DiGraph(adjacency.astype(int)), int(b), int(a))
    # An acyclic input is returned unchanged and consumes no randomness.
    chain = np.eye(4, k=1, dtype=bool)
    state = rng.bit_generator.state
    np.testing.assert_array_equal(make_acyclic(chain, rng), chain)
    assert rng.bit_generator.state == state


def test_edge_probability_two_variables(gauss2):
    """Each ordered pair is an edge w.p. 0.3; a 2-cycle (prob 0.09) keeps one edge."""
    adjacency = gauss2.adjacency
    n = gauss2.num_scms
    assert not (adjacency[:, 0, 1] & adjacency[:, 1, 0]).any()
    has_edge = adjacency.sum(axis=(1, 2)) > 0
    p = 1 - 0.7**2
    assert abs(has_edge.mean() - p) < Z * np.sqrt(p * (1 - p) / n)
    p_forward = 0.3 * 0.7 + 0.09 / 2  # only 0 -> 1, or the 2-cycle resolved to 0 -> 1
    forward = adjacency[:, 0, 1].astype(bool)
    assert abs(forward.mean() - p_forward) < Z * np.sqrt(p_forward * (1 - p_forward) / n)


def test_er_edge_probability_before_repair():
    dags = sample_er_dags(2000, 2, 0.0, np.random.default_rng(0))
    assert not dags.any()
    dags = sample_er_dags(500, 5, 1.0, np.random.default_rng(0))
    # A complete digraph made acyclic: every pair keeps at most one direction.
    assert not (dags & dags.transpose(0, 2, 1)).any()


@pytest.mark.parametrize("name", ["gauss4", "beta4"])
def test_intervened_coordinate(name, request):
    """V_i under do(V_i = 5 + e): mean 5 and std 0.1, pooled over SCMs and samples."""
    ds = request.getfixturevalue(name)
    d = ds.num_vars
    values = ds.interventional[:, np.arange(d), :, np.arange(d)].astype(np.float64).ravel()
    n = values.size
    assert abs(values.mean() - 5.0) < Z * 0.1 / np.sqrt(n)
    assert abs(values.std(ddof=1) - 0.1) < Z * 0.1 / np.sqrt(2 * (n - 1)) + 1e-6


@pytest.mark.parametrize("name", ["gauss4", "beta4"])
def test_non_descendants_keep_observational_mean(name, request):
    """Welch z of (interventional - observational) mean of a non-descendant is ~ N(0, 1).

    One (query, variable) per SCM, so that the z-values are independent (queries of an SCM share
    its observational data).
    """
    ds = request.getfixturevalue(name)
    z_values = []
    for s in range(ds.num_scms):
        found = None
        for m in range(ds.num_queries):
            candidates = np.flatnonzero(~ds.descendants(s, ds.targets[s, m]) & ~ds.targets[s, m])
            if candidates.size:
                found = (m, candidates[0])
                break
        if found is None:
            continue
        m, j = found
        obs = ds.observational[s, :, j].astype(np.float64)
        inter = ds.interventional[s, m, :, j].astype(np.float64)
        se = np.sqrt(obs.var(ddof=1) / obs.size + inter.var(ddof=1) / inter.size)
        z_values.append((inter.mean() - obs.mean()) / se)
    z = np.asarray(z_values)
    n = z.size
    assert n > 500
    assert abs(z.mean()) < Z / np.sqrt(n)
    # Var of a t-like statistic with ~198 dof is ~1.01; its sample variance has SE ~ sqrt(2/n).
    assert abs(z.var(ddof=1) - 1.0) < Z * np.sqrt(2.0 / n) + 0.02


@pytest.mark.parametrize("name", ["gauss4", "beta4"])
def test_interventional_means_match_linear_theory(name, request):
    """E[V | do(V_i = 5)] = mu_eps' (I - W_i)^{-1} with mu_eps'_i = 5; checked by exact z-scores.

    Per (SCM, query) the checked variable is (i + 1) mod d; interventional datasets of different
    queries are independent draws, so the z-values are independent.
    """
    ds = request.getfixturevalue(name)
    d = ds.num_vars
    weights = ds.extras["weights"]
    mean_eps, std_eps = ds.extras["noise_mean"], ds.extras["noise_std"]
    z_values = []
    for s in range(ds.num_scms):
        for i in range(d):
            w = weights[s].copy()
            w[:, i] = 0.0
            effects = np.linalg.inv(np.eye(d) - w)
            mu, sd = mean_eps[s].copy(), std_eps[s].copy()
            mu[i], sd[i] = 5.0, 0.1
            j = (i + 1) % d
            mean = mu @ effects[:, j]
            std = np.sqrt(np.sum((sd * effects[:, j]) ** 2))
            samples = ds.interventional[s, i, :, j].astype(np.float64)
            z_values.append((samples.mean() - mean) / (std / np.sqrt(samples.size)))
    z = np.asarray(z_values)
    n = z.size
    assert abs(z.mean()) < Z / np.sqrt(n)
    assert abs(z.var(ddof=1) - 1.0) < Z * np.sqrt(2.0 / n) + 0.02


@pytest.mark.parametrize("name", ["gauss4", "beta4"])
def test_observational_moments_match_linear_theory(name, request):
    """Observational V = eps (I - W)^{-1}: mean z-scores ~ N(0, 1); for Gaussian noise also the
    variance ratio s^2 / sigma^2 (mean 1, variance 2 / (N - 1)). One variable, (s mod d), per SCM.
    """
    ds = request.getfixturevalue(name)
    d = ds.num_vars
    z_values, ratios = [], []
    for s in range(ds.num_scms):
        effects = np.linalg.inv(np.eye(d) - ds.extras["weights"][s])
        j = s % d
        mean = ds.extras["noise_mean"][s] @ effects[:, j]
        std = np.sqrt(np.sum((ds.extras["noise_std"][s] * effects[:, j]) ** 2))
        x = ds.observational[s, :, j].astype(np.float64)
        z_values.append((x.mean() - mean) / (std / np.sqrt(x.size)))
        ratios.append(x.var(ddof=1) / std**2)
    z, ratios = np.asarray(z_values), np.asarray(ratios)
    n, n_obs = z.size, ds.observational.shape[1]
    assert abs(z.mean()) < Z / np.sqrt(n)
    assert abs(z.var(ddof=1) - 1.0) < Z * np.sqrt(2.0 / n) + 0.02
    if ds.metadata["noise"] == "gauss":
        assert abs(ratios.mean() - 1.0) < Z * np.sqrt(2.0 / (n_obs - 1) / n)


def test_two_variable_causal_effect(gauss2):
    """For X0 -> X1 with weight w: E[X1 | do(X0 = 5)] = 5 w, and X0 is unaffected by do(X1)."""
    ds = gauss2
    forward = np.flatnonzero(ds.adjacency[:, 0, 1] == 1)
    assert forward.size > 500
    w = ds.extras["weights"][forward, 0, 1]
    n_int = ds.interventional.shape[2]
    x1 = ds.interventional[forward, 0, :, 1].astype(np.float64)
    se = np.sqrt((w**2 * 0.1**2 + 0.5**2) / n_int)
    z = (x1.mean(axis=1) - 5.0 * w) / se
    assert np.abs(z).max() < 6.5  # P(max |z| over ~800 exact N(0,1) > 6.5) < 1e-7
    assert abs(z.mean()) < Z / np.sqrt(z.size)
    # do(X1) leaves X0 ~ N(0, 0.5).
    x0 = ds.interventional[forward, 1, :, 0].astype(np.float64)
    z0 = x0.mean(axis=1) / (0.5 / np.sqrt(n_int))
    assert abs(z0.mean()) < Z / np.sqrt(z0.size)
    # A hand-checkable single SCM.
    assert abs(x1[0].mean() - 5.0 * w[0]) < Z * se[0]


def test_gaussian_root_noise(gauss4):
    """Root nodes are pure noise: mean 0, std 0.5 (standard deviation, not variance)."""
    roots = gauss4.adjacency.sum(axis=1) == 0  # (S, d): no incoming edge
    values = np.concatenate(
        [gauss4.observational[s][:, roots[s]].ravel() for s in range(gauss4.num_scms)]
    ).astype(np.float64)
    n = values.size
    assert abs(values.mean()) < Z * 0.5 / np.sqrt(n)
    assert abs(values.std(ddof=1) - 0.5) < Z * 0.5 / np.sqrt(2 * (n - 1))


def test_beta_root_noise(beta4):
    """Root nodes follow Beta(a, b) in [0, 1] with a, b ~ U(0.5, 2) stored in extras."""
    a, b = beta4.extras["beta_a"], beta4.extras["beta_b"]
    assert ((a >= 0.5) & (a <= 2.0) & (b >= 0.5) & (b <= 2.0)).all()
    roots = beta4.adjacency.sum(axis=1) == 0
    z_values = []
    for s in range(beta4.num_scms):
        for j in np.flatnonzero(roots[s]):
            x = beta4.observational[s, :, j].astype(np.float64)
            assert x.min() >= 0.0 and x.max() <= 1.0
            mean = a[s, j] / (a[s, j] + b[s, j])
            z_values.append((x.mean() - mean) / (beta4.extras["noise_std"][s, j] / np.sqrt(x.size)))
    z = np.asarray(z_values)
    assert abs(z.mean()) < Z / np.sqrt(z.size)
    assert abs(z.var(ddof=1) - 1.0) < Z * np.sqrt(2.0 / z.size) + 0.02


@pytest.mark.parametrize(
    "kwargs",
    [dict(noise="laplace"), dict(num_scms=0), dict(edge_prob=1.5),
     dict(split_fractions=(0.5, 0.1, 0.1)), dict(num_interventional_samples=0)],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        linear_dataset(**{"num_scms": 5, "num_samples": 3, **kwargs})
