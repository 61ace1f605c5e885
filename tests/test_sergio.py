"""Tests of the SERGIO simulator (activa_ppl.simulate.sergio, .graphs; paper Appendix C.2).

Statistical checks compare statistics of independent replicate simulations (cells within one
simulation are snapshots of one trajectory, hence dependent) with tolerances of Z Monte-Carlo
standard errors (Z = 5) or a KS p-value floor of 1e-4, all at fixed seeds.
The agreement with avici's reference implementation is checked by
``docs/scripts/sergio_crosscheck.py`` (needs the separate avici venv), not here.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest
from scipy import stats

import activa_ppl.simulate
from activa_ppl.data import InterventionalDataset
from activa_ppl.simulate import graphs, sergio
from activa_ppl.simulate.sergio import SergioConfig, SergioParams, TechnicalNoiseParams

Z = 5.0
# One small configuration shared by most tests, so the simulator compiles only a few times.
SMALL = SergioConfig(num_genes=4, num_cell_types=2)
SMALL_CELLS = 10


def _params(adjacency, k, basal, hill=2.0, decay=0.8, noise=1.0) -> SergioParams:
    """Unbatched float32 SergioParams from plain lists."""
    f = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return SergioParams(adjacency=f(adjacency), k=f(k), basal=f(basal), hill=f(hill), decay=f(decay),
                        noise=f(noise),
                        technical=TechnicalNoiseParams(*(f(0.0) for _ in TechnicalNoiseParams._fields)))


#: simulate_condition_from_noise compiled once per input shape (tests share shapes to save compiles).
_from_noise = jax.jit(sergio.simulate_condition_from_noise, static_argnums=(4,))


def _replicate(params: SergioParams, copies: int) -> SergioParams:
    return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (copies, *a.shape)), params)


# A 4-gene network: 0 -> 1 (activation), 1 -> 2 (repression), 3 -> 2 (activation).
CHAIN_ADJ = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 1, 0]])
CHAIN_K = np.array([[0, 3.0, 0, 0], [0, 0, -2.0, 0], [0, 0, 0, 0], [0, 0, 1.5, 0]])
CHAIN_BASAL = np.array([[0.6, 0.9], [0.0, 0.0], [0.0, 0.0], [0.4, 0.7]])


@pytest.fixture(scope="module")
def small_dataset() -> InterventionalDataset:
    return sergio.sergio_dataset(num_networks=12, preset=SMALL, num_cells=SMALL_CELLS, seed=3,
                                 block_size=8, progress=False)


@pytest.fixture(scope="module")
def chain_replicates():
    """400 independent simulations (all 5 conditions) of the chain network: (400, 5, 10, 4)."""
    params = _replicate(_params(CHAIN_ADJ, CHAIN_K, CHAIN_BASAL), 400)
    cells, cell_type = sergio.simulate_networks(jax.random.PRNGKey(7), params, SMALL, SMALL_CELLS, block_size=8)
    return np.asarray(cells), np.asarray(cell_type)


# ----------------------------------------------------------------------------- configuration
def test_exports():
    assert activa_ppl.simulate.sergio_dataset is sergio.sergio_dataset
    assert activa_ppl.simulate.SergioConfig is SergioConfig


def test_presets_are_table_2():
    ind, ood = SergioConfig.preset("in_distribution"), SergioConfig.preset("ood")
    assert (ind.num_genes, ind.basal_range, ind.k_range, ind.k_sign_beta) == (8, (0.0, 1.0), (1.0, 5.0), (1.0, 1.0))
    assert (ind.hill_values, ind.decay_values, ind.noise_values) == ((1.9, 2.0, 2.1), (0.7, 0.8, 0.9), (0.9, 1.0, 1.1))
    assert (ood.num_genes, ood.basal_range, ood.k_range, ood.k_sign_beta) == (11, (0.5, 2.0), (3.0, 7.0), (0.5, 0.5))
    assert (ood.hill_values, ood.decay_values, ood.noise_values) == ((1.5, 2.5), (0.5, 1.5), (0.5, 1.5))
    assert ind.noise_type == ood.noise_type == "dpd" and ind.technical_noise is None
    assert SergioConfig.preset("ood", num_cell_types=1).num_cell_types == 1
    assert hash(ind) == hash(SergioConfig.preset("in_distribution"))  # usable as a static jit argument


@pytest.mark.parametrize("field, value", [
    ("num_genes", 0), ("num_cell_types", 1.5), ("k_range", (5.0, 1.0)), ("basal_range", (-1.0, 1.0)),
    ("k_sign_beta", (0.0, 1.0)), ("hill_values", ()), ("decay_values", (0.0,)), ("noise_values", (-1.0,)),
    ("noise_type", "gauss"), ("dt", 0.0), ("technical_noise", "nanopore"), ("safety_steps", -1),
])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        SergioConfig(**{field: value})


def test_preset_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown SERGIO preset"):
        SergioConfig.preset("in-distribution")


def test_sample_params_ranges():
    config = SergioConfig.preset("ood")
    rng = np.random.default_rng(0)
    adjacency, *_ = sergio.sample_graphs(300, config.num_genes, rng, "er")
    params = sergio.sample_params(rng, adjacency, config)
    assert params.k.shape == (300, 11, 11) and params.basal.shape == (300, 11, config.num_cell_types)
    np.testing.assert_array_equal(params.k != 0, adjacency)
    magnitude = np.abs(params.k[adjacency])
    assert magnitude.min() >= 3.0 and magnitude.max() <= 7.0
    assert params.basal.min() >= 0.5 and params.basal.max() <= 2.0
    assert set(np.unique(params.hill)) == {1.5, 2.5} and set(np.unique(params.decay)) == {0.5, 1.5}
    assert set(np.unique(params.noise)) == {0.5, 1.5}
    # k_sign ~ Beta(0.5, 0.5): per regulator, signs are mostly all + or all -, overall balanced.
    positive = (params.k[adjacency] > 0).mean()
    assert abs(positive - 0.5) < 0.1
    with pytest.raises(ValueError, match="adjacency"):
        sergio.sample_params(rng, adjacency[:, :5, :5], config)


# ----------------------------------------------------------------------------- graphs
def _is_dag(adjacency: np.ndarray) -> bool:
    return nx.is_directed_acyclic_graph(nx.DiGraph(adjacency.astype(int)))


def test_erdos_renyi_dag():
    rng = np.random.default_rng(1)
    samples = np.stack([graphs.erdos_renyi_dag(8, 1.0, rng) for _ in range(2000)])
    assert samples.dtype == bool and all(_is_dag(a) for a in samples[:200])
    assert not samples[:, np.arange(8), np.arange(8)].any()
    p = 8 / 28  # edges_per_var * d / (d (d - 1) / 2)
    edges = samples.sum(axis=(1, 2))
    assert abs(edges.mean() - 28 * p) < Z * np.sqrt(28 * p * (1 - p) / edges.size)
    assert graphs.erdos_renyi_dag(8, 10.0, rng).sum() <= 28  # p capped at 0.99
    with pytest.raises(ValueError):
        graphs.erdos_renyi_dag(0, 1.0, rng)


def test_scale_free_dag():
    rng = np.random.default_rng(2)
    samples = [graphs.scale_free_dag(8, 2, rng) for _ in range(300)]
    for adjacency in samples:
        assert _is_dag(adjacency) and adjacency.sum() == 1 + 2 * 6  # min(m, i) links for gene i
    # Preferential attachment: the largest out-degree exceeds what uniform attachment gives.
    max_out = np.mean([a.sum(axis=1).max() for a in samples])
    uniform = [np.zeros((8, 8), bool) for _ in range(300)]
    for a in uniform:
        for new in range(1, 8):
            a[rng.choice(new, size=min(2, new), replace=False), new] = True
    assert max_out > np.mean([a.sum(axis=1).max() for a in uniform]) + 0.3
    with pytest.raises(ValueError, match="integer"):
        graphs.scale_free_dag(8, 1.5, rng)


def test_longest_path_lengths():
    depth, level = graphs.longest_path_lengths(CHAIN_ADJ)
    np.testing.assert_array_equal(depth, [0, 1, 2, 0])
    np.testing.assert_array_equal(level, [2, 1, 0, 1])


def test_break_cycles_randomly():
    rng = np.random.default_rng(3)
    cycle = np.roll(np.eye(5, dtype=bool), 1, axis=1) | np.roll(np.eye(5, dtype=bool), 2, axis=1)
    for _ in range(20):
        dag = graphs.break_cycles_randomly(cycle, rng)
        assert _is_dag(dag) and not (dag & ~cycle).any() and dag.sum() >= 5


@pytest.fixture
def modular_network_file(tmp_path):
    """40 genes in 4 dense modules of 10 (a ring of regulation plus chords), one link between modules."""
    lines = ["# synthetic test network", "regulator\ttarget\tsign"][:1]
    for block in range(4):
        genes = [f"g{block}_{i}" for i in range(10)]
        for i in range(10):
            for j in (1, 2, 3):
                lines.append(f"{genes[i]}\t{genes[(i + j) % 10]}\t+")
        lines.append(f"{genes[0]}\tg{(block + 1) % 4}_0\t-")
    lines.append("g0_1\tg0_1\t+")  # self-loop, dropped
    path = tmp_path / "network.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_network(modular_network_file, tmp_path):
    network = graphs.load_network(modular_network_file)
    assert network.num_genes == 40 and network.adjacency.shape == (40, 40)
    assert network.adjacency.sum() == 4 * 30 + 4 and not np.diag(network.adjacency).any()
    assert list(network.genes) == sorted(network.genes) and len(network.sha256) == 64
    bad = tmp_path / "bad.tsv"
    bad.write_text("geneA\n")
    with pytest.raises(ValueError, match="expected"):
        graphs.load_network(bad)
    with pytest.raises(ValueError, match="does not exist"):
        graphs.load_network(tmp_path / "missing.tsv")


def test_extract_module(modular_network_file):
    network = graphs.load_network(modular_network_file)
    rng = np.random.default_rng(4)
    block_of = np.array([int(g[1]) for g in network.genes])
    for _ in range(30):
        module, genes = graphs.extract_module(network, 6, rng, topk=0.0)
        assert module.shape == (6, 6) and len(set(genes.tolist())) == 6
        assert _is_dag(module)
        # every module edge is a network edge between the chosen genes
        sources, targets = np.nonzero(module)
        assert network.adjacency[genes[sources], genes[targets]].all()
        # greedy modularity (topk = 0) never leaves the dense block of the seed
        assert len(set(block_of[genes].tolist())) == 1
        assert nx.is_weakly_connected(nx.DiGraph(network.adjacency[np.ix_(genes, genes)]))
    # with topk = 1 any neighbour may be added, so modules do cross blocks sometimes
    crossed = [len(set(block_of[graphs.extract_module(network, 9, rng, topk=1.0)[1]].tolist())) > 1
               for _ in range(60)]
    assert any(crossed)
    with pytest.raises(ValueError, match="smaller"):
        graphs.extract_module(network, 40, rng)


def test_dataset_from_network_file(modular_network_file):
    ds = sergio.sergio_dataset(num_networks=8, preset=SMALL, num_cells=SMALL_CELLS, seed=5,
                               graph=str(modular_network_file), block_size=8, progress=False)
    network = graphs.load_network(modular_network_file)
    genes = ds.extras["source_genes"]
    assert genes.shape == (8, 4) and (genes >= 0).all()
    for s in range(8):
        sources, targets = np.nonzero(ds.adjacency[s])
        assert network.adjacency[genes[s, sources], genes[s, targets]].all()
    assert ds.metadata["graph_sources"][0]["sha256"] == network.sha256


# ----------------------------------------------------------------------------- dynamics
def test_hill_function():
    h = sergio.hill_function(jnp.array([0.0, 2.0, 2.0, 1.0, -1.0]), jnp.array([1.0, 2.0, 0.0, 3.0, 1.0]), 2.0)
    np.testing.assert_allclose(h, [0.0, 0.5, 1.0, 0.1, 0.0], rtol=1e-6)


def test_production_rates_by_hand():
    params = _params(CHAIN_ADJ, CHAIN_K, CHAIN_BASAL, hill=2.0)
    x = jnp.array([[1.0, 2.0, 5.0, 0.5], [0.0, 1.0, 5.0, 3.0]])  # (C, d)
    half = jnp.array([1.0, 1.0, 9.0, 1.0])
    rates = np.asarray(sergio.production_rates(x, half, params, jnp.zeros(4)))
    hill = lambda v, h: v**2 / (h**2 + v**2)  # noqa: E731
    expected = np.array([
        [0.6, 3.0 * hill(1.0, 1.0), 2.0 * (1 - hill(2.0, 1.0)) + 1.5 * hill(0.5, 1.0), 0.4],
        [0.9, 0.0, 2.0 * (1 - hill(1.0, 1.0)) + 1.5 * hill(3.0, 1.0), 0.7],
    ])
    np.testing.assert_allclose(rates, expected, rtol=1e-6)
    knocked = np.asarray(sergio.production_rates(x, half, params, jnp.array([0.0, 1.0, 0.0, 0.0])))
    expected[:, 1] = 0.0
    np.testing.assert_allclose(knocked, expected, rtol=1e-6)


def _five_conditions(params: SergioParams, seed: int) -> np.ndarray:
    """Observational + 4 knockouts of the chain with the SAME noise and steps: (5, C, d, n_sc)."""
    steps = sergio.simulation_steps(SMALL, SMALL_CELLS)
    noise = jax.random.normal(jax.random.PRNGKey(seed), (steps, 2, 2, 4))
    offsets = jax.random.randint(jax.random.PRNGKey(seed + 1), (5,), 0, 75)
    knockouts = jnp.concatenate([jnp.zeros((1, 4)), jnp.eye(4)])
    return np.asarray(_from_noise(params, knockouts, jnp.broadcast_to(noise, (5, *noise.shape)),
                                  jnp.broadcast_to(offsets, (5, 5)), SMALL))


def test_production_rates_stay_non_negative_with_saturated_repressors():
    """sum_u H_u K_uv + sum_u max(-K_uv, 0) can round below 0 when every repressor saturates
    (H = 1); production must stay >= 0, or sqrt(P) in the CLE gives nan."""
    rng = np.random.default_rng(9)
    num, d = 500, 8
    adjacency = np.triu(np.ones((d, d), np.float32), 1)
    k = -rng.uniform(1, 5, (num, d, d)).astype(np.float32) * adjacency
    params = SergioParams(adjacency=jnp.asarray(adjacency), k=jnp.asarray(k), basal=jnp.ones((num, d, 5)),
                          hill=jnp.full(num, 2.0), decay=jnp.full(num, 0.8), noise=jnp.ones(num),
                          technical=TechnicalNoiseParams(*(jnp.zeros(num) for _ in TechnicalNoiseParams._fields)))
    rates = sergio.production_rates(jnp.full((num, 5, d), 1e3), jnp.full((num, d), 1e-2), params,
                                    jnp.zeros((num, d)))
    assert (np.asarray(rates) >= 0).all()


def test_noise_free_simulation_sits_at_the_fixed_point():
    """With q = 0 each gene starts at P(xbar)/lam and stays there: check against closed forms."""
    params = _params(CHAIN_ADJ, CHAIN_K, CHAIN_BASAL, hill=2.0, decay=0.8, noise=0.0)
    cells = _five_conditions(params, seed=0)
    hill = lambda v, h: v**2 / (h**2 + v**2)  # noqa: E731
    x0, x3 = CHAIN_BASAL[0] / 0.8, CHAIN_BASAL[3] / 0.8  # (C,) master regulators
    x1 = 3.0 * hill(x0, x0.mean()) / 0.8
    x2 = (2.0 * (1 - hill(x1, x1.mean())) + 1.5 * hill(x3, x3.mean())) / 0.8
    expected = {
        0: np.stack([x0, x1, x2, x3], axis=1),  # observational, (C, d)
        1: np.stack([0 * x0, 0 * x1, (2.0 + 1.5 * hill(x3, x3.mean())) / 0.8, x3], axis=1),  # KO gene 0
        2: np.stack([x0, 0 * x1, (2.0 + 1.5 * hill(x3, x3.mean())) / 0.8, x3], axis=1),  # KO gene 1
        4: np.stack([x0, x1, 2.0 * (1 - hill(x1, x1.mean())) / 0.8, 0 * x3], axis=1),  # KO gene 3
    }
    for condition, values in expected.items():
        np.testing.assert_allclose(cells[condition], np.broadcast_to(values[:, :, None], cells[0].shape),
                                   rtol=2e-5, atol=1e-7)


def test_knockout_pathwise_changes_only_descendants():
    """Same noise and sampling steps: non-descendants of the knocked-out gene are bit-identical."""
    cells = _five_conditions(_params(CHAIN_ADJ, CHAIN_K, CHAIN_BASAL), seed=1)
    descendants = {0: {1, 2}, 1: {2}, 2: set(), 3: {2}}
    for gene in range(4):
        ko = cells[1 + gene]
        assert (ko[:, gene] == 0).all()
        for other in range(4):
            if other != gene and other not in descendants[gene]:
                np.testing.assert_array_equal(ko[:, other], cells[0][:, other])
            elif other != gene:
                assert not np.array_equal(ko[:, other], cells[0][:, other])


def test_activating_knockout_silences_single_target(chain_replicates):
    cells, _ = chain_replicates
    # gene 1's only regulator is gene 0 (activating): knocking out 0 stops gene 1's production
    assert (cells[:, 1, :, 1] == 0).all()
    assert (cells[:, 0, :, 1] > 0).mean() > 0.9
    for gene in range(4):
        assert (cells[:, 1 + gene, :, gene] == 0).all()
    assert (cells >= 0).all() and np.isfinite(cells).all()


def test_non_descendants_keep_their_distribution(chain_replicates):
    """Knockout of gene 1 (descendant: 2) vs observational, from independent simulations.

    Per replicate: the mean over cells, the std over cells and the first cell are independent
    across the 400 replicates. Non-descendants 0 and 3: |z| < Z for means and stds, KS p > 1e-4
    on first cells. Power check: descendant 2 does change (|z| > Z).
    """
    cells, _ = chain_replicates
    obs, ko = cells[:, 0], cells[:, 2]  # condition 2 knocks out gene 1

    def z(a, b):
        return (a.mean() - b.mean()) / np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)

    for gene in (0, 3):
        assert abs(z(obs[:, :, gene].mean(1), ko[:, :, gene].mean(1))) < Z
        assert abs(z(obs[:, :, gene].std(1), ko[:, :, gene].std(1))) < Z
        assert stats.ks_2samp(obs[:, 0, gene], ko[:, 0, gene]).pvalue > 1e-4
    # gene 1 represses gene 2: without it gene 2 is produced at full rate
    assert z(ko[:, :, 2].mean(1), obs[:, :, 2].mean(1)) > Z


def test_production_path_matches_two_draw_noise_in_distribution(chain_replicates):
    """The dataset path (one normal per step, shuffled cells) vs SERGIO's two "dpd" normals.

    Per replicate and cell type: mean and std over the 5 cells of that type, per gene, from
    400 independent simulations on each side; |z| < Z for all 16 statistics.
    """
    cells, cell_type = chain_replicates
    obs, types = cells[:, 0], cell_type[:, 0]  # (R, N, d), (R, N)
    reps, steps = obs.shape[0], sergio.simulation_steps(SMALL, SMALL_CELLS)
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    noise = jax.random.normal(k1, (reps, steps, 2, 2, 4))
    offsets = jax.random.randint(k2, (reps, 5), 0, 75)
    params = _params(CHAIN_ADJ, CHAIN_K, CHAIN_BASAL)
    two = np.concatenate([  # chunks of 5 observational conditions: same shapes as _five_conditions
        np.asarray(_from_noise(params, jnp.zeros((5, 4)), noise[r:r + 5], offsets[r:r + 5], SMALL))
        for r in range(0, reps, 5)])  # (R, C, d, n_sc)
    for c in range(2):
        by_type = np.stack([obs[r][types[r] == c] for r in range(reps)])  # (R, 5, d)
        for ours, theirs in ((by_type.mean(1), two[:, c].mean(-1)), (by_type.std(1), two[:, c].std(-1))):
            zs = (ours.mean(0) - theirs.mean(0)) / np.sqrt((ours.var(0, ddof=1) + theirs.var(0, ddof=1)) / reps)
            assert np.abs(zs).max() < Z


def test_step_noise_is_standard_normal():
    """The counter-based CLE noise: N(0, 1) marginals (KS), no correlation between steps or keys."""
    keys = jax.random.split(jax.random.PRNGKey(5), 2)
    steps = jnp.arange(4000)
    draws = np.asarray(jax.vmap(jax.vmap(sergio._step_noise, (None, 0, None)), (0, None, None))(
        keys, steps, SMALL)).reshape(2, 4000, 8)  # (key, step, C d)
    assert stats.kstest(draws.ravel(), "norm").pvalue > 1e-4
    assert abs(draws.mean()) < Z / np.sqrt(draws.size)
    assert abs(draws.var() - 1.0) < Z * np.sqrt(2.0 / draws.size)
    for a, b in ((draws[0, 1:], draws[0, :-1]), (draws[0], draws[1])):  # consecutive steps; two keys
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < Z / np.sqrt(a.size)
    typed = jax.random.wrap_key_data(keys[0])
    np.testing.assert_array_equal(sergio._step_noise(typed, 3, SMALL), sergio._step_noise(keys[0], 3, SMALL))


def test_simulate_condition_matches_batched_networks():
    """The batched block path equals simulate_condition with the documented key derivation."""
    rng = np.random.default_rng(8)
    adjacency, *_ = sergio.sample_graphs(8, 4, rng, "er")
    params = sergio.sample_params(rng, adjacency, SMALL)
    key = jax.random.PRNGKey(11)
    cells, cell_type = sergio.simulate_networks(key, params, SMALL, SMALL_CELLS)
    assert cells.shape == (8, 5, SMALL_CELLS, 4) and cell_type.shape == (8, 5, SMALL_CELLS)
    s, condition = 2, 3
    one = jax.tree_util.tree_map(lambda a: jnp.asarray(a[s]), params)
    condition_key = jax.random.split(jax.random.fold_in(key, s), 5)[condition]
    knockout = jnp.eye(4)[condition - 1]
    simulate = jax.jit(sergio.simulate_condition, static_argnums=(3, 4))
    single, single_type = simulate(condition_key, one, knockout, SMALL_CELLS, SMALL)
    np.testing.assert_allclose(single, cells[s, condition], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(single_type, cell_type[s, condition])
    # cells of both types appear (5 per type, N = 10)
    assert sorted(np.bincount(np.asarray(cell_type[s, condition]))) == [5, 5]


def test_simulate_networks_rejects_bad_arguments():
    params = _replicate(_params(CHAIN_ADJ, CHAIN_K, CHAIN_BASAL), 2)
    with pytest.raises(ValueError, match="block_size"):
        sergio.simulate_networks(jax.random.PRNGKey(0), params, SMALL, block_size=0)
    with pytest.raises(ValueError, match="basal"):
        sergio.simulate_networks(jax.random.PRNGKey(0), params._replace(basal=params.basal[..., :1]), SMALL)
    with pytest.raises(ValueError, match="num_cells"):
        sergio.simulate_networks(jax.random.PRNGKey(0), params, SMALL, num_cells=0)


# ----------------------------------------------------------------------------- datasets
def test_dataset_shapes_and_conventions(small_dataset):
    ds = small_dataset
    assert ds.observational.shape == (12, SMALL_CELLS, 4)
    assert ds.interventional.shape == (12, 4, SMALL_CELLS, 4)
    np.testing.assert_array_equal(ds.targets, np.broadcast_to(np.eye(4, dtype=bool), (12, 4, 4)))
    assert (ds.intervention_index == 0).all() and ds.num_interventions == 1
    assert (ds.intervention_values == 0).all()
    for i in range(4):
        assert (ds.interventional[:, i, :, i] == 0).all()
    assert (ds.observational >= 0).all() and (ds.interventional >= 0).all()
    assert np.bincount(ds.split, minlength=3).tolist() == [10, 1, 1]
    assert ds.extras["k"].shape == (12, 4, 4) and ds.extras["basal"].shape == (12, 4, 2)
    np.testing.assert_array_equal(ds.extras["k"] != 0, ds.adjacency == 1)
    np.testing.assert_array_equal(ds.extras["level"], graphs.graph_levels(ds.adjacency))
    assert ds.extras["obs_cell_type"].shape == (12, SMALL_CELLS)
    assert ds.extras["int_cell_type"].shape == (12, 4, SMALL_CELLS)
    assert ds.metadata["generator"] == "sergio" and ds.metadata["seed"] == 3
    assert ds.metadata["config"]["num_genes"] == 4 and ds.metadata["num_cells"] == SMALL_CELLS


def test_dataset_deterministic_and_block_size_invariant(small_dataset):
    again = sergio.sergio_dataset(num_networks=12, preset=SMALL, num_cells=SMALL_CELLS, seed=3,
                                  block_size=8, progress=False)
    np.testing.assert_array_equal(again.observational, small_dataset.observational)
    np.testing.assert_array_equal(again.interventional, small_dataset.interventional)
    prefix = sergio.sergio_dataset(num_networks=12, preset=SMALL, num_cells=SMALL_CELLS, seed=3,
                                   block_size=5, progress=False)
    np.testing.assert_allclose(prefix.interventional, small_dataset.interventional, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(prefix.adjacency, small_dataset.adjacency)


def test_dataset_seeds_differ(small_dataset):
    other = sergio.sergio_dataset(num_networks=12, preset=SMALL, num_cells=SMALL_CELLS, seed=4,
                                  block_size=8, progress=False)
    assert not np.array_equal(other.adjacency, small_dataset.adjacency)
    assert not np.allclose(other.observational, small_dataset.observational)


def test_dataset_round_trip(small_dataset, tmp_path):
    small_dataset.save(tmp_path / "sergio")
    loaded = InterventionalDataset.load(tmp_path / "sergio")
    for name in ("observational", "interventional", "targets", "intervention_index", "adjacency", "split"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(small_dataset, name))
    assert loaded.metadata == small_dataset.metadata
    assert set(loaded.extras) == set(small_dataset.extras)
    for name, value in small_dataset.extras.items():
        np.testing.assert_array_equal(loaded.extras[name], value)


def test_dataset_scale_free_and_mixture_of_sources():
    ds = sergio.sergio_dataset(num_networks=10, preset=SMALL, num_cells=SMALL_CELLS, seed=6,
                               graph=["er", "scale_free"], edges_per_var=(1, 2), block_size=8,
                               progress=False)
    assert set(ds.extras["graph_source"].tolist()) == {0, 1}
    assert ds.metadata["graph_sources"] == ["er", "scale_free"]


@pytest.mark.parametrize("kwargs, match", [
    ({"preset": "paper"}, "unknown SERGIO preset"),
    ({"graph": "small_world"}, "graph must be"),
    ({"num_networks": 0}, "num_networks"),
    ({"num_cells": 2.5}, "num_cells"),
    ({"split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
    ({"graph": "scale_free", "edges_per_var": 1.5}, "integer"),
    ({"num_cell_type": 2}, "unknown sergio_dataset arguments"),
    ({"noise_type": "none"}, "noise_type"),
])
def test_dataset_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sergio.sergio_dataset(**{"num_networks": 2, "preset": SMALL, "progress": False, **kwargs})


def test_ood_preset_dataset_is_all_test():
    ds = sergio.sergio_dataset(num_networks=3, preset="ood", num_cells=6, seed=0, progress=False)
    assert ds.observational.shape == (3, 6, 11) and ds.interventional.shape == (3, 11, 6, 11)
    assert (ds.split == 2).all()


def test_simulate_sergio_script(tmp_path):
    """Smoke test of inference/simulate_sergio.py (shapes shared with the OOD test: no recompile)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "inference" / "simulate_sergio.py"
    spec = importlib.util.spec_from_file_location("simulate_sergio_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    report = script.main(["--out-ood", str(tmp_path / "ood"), "--num-ood", "3", "--num-cells", "6", "--quiet"])
    loaded = InterventionalDataset.load(tmp_path / "ood")
    assert loaded.interventional.shape == (3, 11, 6, 11) and (loaded.split == 2).all()
    assert loaded.metadata["preset"] == "ood" and loaded.metadata["seed"] == 1
    assert set(report) == {"ood"}
    # default graphs: the shipped E. coli and yeast networks, recorded without a machine path
    assert [g["path"] for g in loaded.metadata["graph_sources"]] == [
        f"activa_ppl/simulate/networks/{f}" for f in graphs.SHIPPED_NETWORKS.values()]


def test_shipped_networks_are_the_papers():
    """The shipped files are the ones sergio8's training data was simulated from (same SHA-256)."""
    expected = {"ecoli": ("284a74edd33c1a5e6be00d2d4a868fbe8898b535f40393411fc19f12d2c1d3e8", 1565),
                "yeast": ("1d0f592441b5b35b37c90613f72669d6c22754994188cdb4ac7df69c049d7c3d", 4441)}
    for name, (sha256, num_genes) in expected.items():
        network = graphs.load_network(graphs.shipped_network_path(name))
        assert (network.sha256, network.num_genes) == (sha256, num_genes)
    with pytest.raises(ValueError, match="shipped networks"):
        graphs.shipped_network_path("human")


def test_technical_noise():
    config = dataclasses.replace(SMALL, technical_noise="10x-chromium")
    ds = sergio.sergio_dataset(num_networks=4, preset=config, num_cells=SMALL_CELLS, seed=1,
                               block_size=4, progress=False)
    values = np.concatenate([ds.observational.ravel(), ds.interventional.ravel()])
    assert (values >= 0).all() and np.isfinite(values).all()
    assert (values == 0).mean() > 0.2  # dropout
    # library size: cell totals are LogNormal(lib_size_mean, .) before dropout, so far above 1
    assert np.median(ds.observational.sum(-1)) > 20
    for i in range(4):
        assert (ds.interventional[:, i, :, i] == 0).all()
    assert {"tech_lib_size_mean", "tech_dropout_percentile"} <= set(ds.extras)
    assert set(np.unique(ds.extras["tech_dropout_percentile"])) <= {74.0, 82.0, 45.0}


@pytest.mark.slow
def test_count_data():
    """Poisson UMI counts (jax.random.poisson compiles slowly on CPU, ~10 s)."""
    config = dataclasses.replace(SMALL, technical_noise="illumina", count_data=True)
    ds = sergio.sergio_dataset(num_networks=4, preset=config, num_cells=SMALL_CELLS, seed=2,
                               block_size=4, progress=False)
    values = np.concatenate([ds.observational.ravel(), ds.interventional.ravel()])
    assert (values >= 0).all() and np.array_equal(values, np.round(values)) and values.max() > 1
    for i in range(4):
        assert (ds.interventional[:, i, :, i] == 0).all()
