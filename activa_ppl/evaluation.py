"""Evaluate any predictor on a dataset split with the metrics of Section 6.3.

A *predictor* is any callable ``predictor(tasks, dataset) -> GaussianMixture`` returning a
batched mixture with batch shape ``(T,)`` for the :class:`~activa_ppl.data.TaskArrays` it is
given; ACTIVA and the baselines all fit this shape (:func:`activa_predictor`,
:func:`gaussian_conditional_predictor`, :func:`linear_causal_predictor`), so evaluation never
branches on the method.

Per task, :func:`activa_ppl.metrics.evaluate_prediction` computes NLL, energy distance and ATE
error on every non-empty marginal; task values are averaged per SCM, and the table reports the
mean and standard error over SCMs.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import jax
import numpy as np
from tqdm.auto import tqdm

from activa_ppl import baselines
from activa_ppl.data import InterventionalDataset, TaskArrays
from activa_ppl.metrics import MARGINAL_SET_NAMES, evaluate_prediction
from activa_ppl.mixture import GaussianMixture

__all__ = [
    "Predictor",
    "activa_predictor",
    "gaussian_conditional_predictor",
    "linear_causal_predictor",
    "evaluate",
]

Predictor = Callable[[TaskArrays, InterventionalDataset], GaussianMixture]

#: Marginals a baseline reports (it does not predict V_t itself; Table 1 shows "—" for All).
BASELINE_SETS = tuple(s for s in MARGINAL_SET_NAMES if s != "all")


def activa_predictor(fitted, seed: int = 0, batch_size: int = 256) -> Predictor:
    """ACTIVA's zero-shot prediction (it sees no intervention value, only its index)."""

    def predict(tasks: TaskArrays, dataset: InterventionalDataset) -> GaussianMixture:
        parts = [
            fitted.predict_batch(tasks.observational[i:i + batch_size], tasks.targets[i:i + batch_size],
                                 tasks.intervention_index[i:i + batch_size],
                                 seed=jax.random.fold_in(jax.random.PRNGKey(seed), i))
            for i in range(0, len(tasks.scm), batch_size)
        ]
        return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)

    predict.sets = MARGINAL_SET_NAMES
    return predict


def _values(tasks: TaskArrays, dataset: InterventionalDataset) -> np.ndarray:
    return dataset.intervention_values[tasks.scm, tasks.query]


def gaussian_conditional_predictor() -> Predictor:
    """Gaussian Conditional baseline; uses the intervention value (privileged information)."""

    def predict(tasks, dataset):
        return baselines.gaussian_conditional_batch(tasks.observational, tasks.targets.astype(bool),
                                                    _values(tasks, dataset))

    predict.sets = BASELINE_SETS
    return predict


def linear_causal_predictor() -> Predictor:
    """Linear Causal baseline; uses the true graph and the intervention value (privileged)."""

    def predict(tasks, dataset):
        return baselines.linear_causal_batch(tasks.observational, dataset.adjacency[tasks.scm],
                                             tasks.targets.astype(bool), _values(tasks, dataset))

    predict.sets = BASELINE_SETS
    return predict


def evaluate(dataset: InterventionalDataset, predictors: dict[str, Predictor], split: str = "test",
             seed: int = 0, max_scms: int | None = None, progress: bool = True) -> dict:
    """Metrics of each predictor on ``split``.

    Returns:
        ``{method: {marginal: {metric: {"mean": float, "se": float, "n": int}}}}``, where the
        mean and standard error are over SCMs (each SCM's value is the mean over its queries).
    """
    tasks = dataset.tasks(split)
    if max_scms is not None:
        keep = np.isin(tasks.scm, np.unique(tasks.scm)[:max_scms])
        tasks = TaskArrays(*(np.asarray(a)[keep] for a in tasks))
    results = {}
    for name, predictor in predictors.items():
        mixtures = predictor(tasks, dataset)
        per_scm = defaultdict(lambda: defaultdict(list))  # (set, metric) -> scm -> values
        sets = getattr(predictor, "sets", MARGINAL_SET_NAMES)
        key = jax.random.PRNGKey(seed)
        for t in tqdm(range(len(tasks.scm)), desc=f"evaluate {name}", disable=not progress, leave=False):
            s = int(tasks.scm[t])
            scores = evaluate_prediction(
                mixtures[t], tasks.interventional[t], tasks.observational[t], dataset.adjacency[s],
                tasks.targets[t].astype(bool), jax.random.fold_in(key, t), sets=sets,
            )
            for set_name, metrics in scores.items():
                for metric, value in metrics.items():
                    per_scm[(set_name, metric)][s].append(value)
        table: dict = defaultdict(dict)
        for (set_name, metric), by_scm in per_scm.items():
            values = np.array([np.mean(v) for v in by_scm.values()])
            se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
            table[set_name][metric] = {"mean": float(values.mean()), "se": se, "n": int(len(values))}
        results[name] = dict(table)
    return results
