"""DoWhy's per-dataset rate: what a user without ACTIVA would do for each new dataset (fit a
``gcm.StructuralCausalModel`` on the true graph, then draw interventional samples)."""

from __future__ import annotations

import statistics
import time

import numpy as np

from bench_lib.cells import SHAPES


def bench_dowhy(shape: str, num_datasets: int, seed: int, route: str = "linear") -> dict:
    """Per dataset: fit a gcm.StructuralCausalModel on the true graph (linear additive-noise
    mechanisms, Gaussian noise and roots) and draw N interventional samples for one query.

    ``route="linear"`` hand-picks linear mechanisms: the cheapest DoWhy route for these linear
    SCMs, so the ratio against ACTIVA is conservative. ``route="auto"`` is what a user who does
    not know the mechanisms would do: ``gcm.auto.assign_causal_mechanisms`` (default quality,
    model selection among regressors) on the true graph, then fit and sample.
    """
    import logging
    import warnings

    import networkx as nx
    import pandas as pd
    from dowhy import gcm
    from scipy import stats

    logging.getLogger("dowhy").setLevel(logging.ERROR)
    try:
        gcm.config.disable_progress_bars()
    except AttributeError:  # pragma: no cover
        pass
    from activa_ppl import simulate

    n, d = SHAPES[shape]
    data = simulate.linear_dataset(num_scms=num_datasets, num_vars=d, noise="gauss", num_samples=n,
                                   seed=seed + 1, edge_prob=0.5)
    value = float(data.metadata["intervention_value"])
    state = np.random.get_state()
    np.random.seed(seed)
    fit_s, sample_s = [], []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for s in range(num_datasets + 1):  # the first one is an untimed warm-up
                k = s % num_datasets
                t0 = time.perf_counter()
                graph = nx.DiGraph()
                graph.add_nodes_from(range(d))
                graph.add_edges_from((a, b) for a in range(d) for b in range(d) if data.adjacency[k, a, b])
                model = gcm.StructuralCausalModel(graph)
                frame = pd.DataFrame(data.observational[k].astype(float), columns=range(d))
                for j in (range(d) if route == "linear" else ()):
                    if list(graph.predecessors(j)):
                        model.set_causal_mechanism(j, gcm.AdditiveNoiseModel(
                            gcm.ml.create_linear_regressor(), noise_model=gcm.ScipyDistribution(stats.norm)))
                    else:
                        model.set_causal_mechanism(j, gcm.ScipyDistribution(stats.norm))
                if route == "auto":
                    gcm.auto.assign_causal_mechanisms(model, frame)
                gcm.fit(model, frame)
                t1 = time.perf_counter()
                target = s % d
                gcm.interventional_samples(model, {target: lambda x: value}, num_samples_to_draw=n)
                t2 = time.perf_counter()
                if s:
                    fit_s.append(t1 - t0)
                    sample_s.append(t2 - t1)
    finally:
        np.random.set_state(state)
    per_query = [a + b for a, b in zip(fit_s, sample_s)]
    return {
        "shape": shape, "route": route, "N": n, "d": d, "datasets": num_datasets, "samples_per_query": n,
        "fit_ms_median": 1e3 * statistics.median(fit_s), "sample_ms_median": 1e3 * statistics.median(sample_s),
        "query_ms_median": 1e3 * statistics.median(per_query),
        "queries_per_s": 1 / statistics.median(per_query),
    }
