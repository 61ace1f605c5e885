"""Evaluate any predictor on a dataset split with the metrics of Section 6.3.

The methods are :class:`~activa_ppl.predictors.Predictor` objects (:mod:`activa_ppl.predictors`):
each returns a batched mixture with batch shape ``(T,)`` for the
:class:`~activa_ppl.data.TaskArrays` it is given, so evaluation never branches on the method.

Evaluation happens in two steps:

1. :func:`evaluate_tasks` scores every test task (one SCM and one intervention query) with
   :func:`activa_ppl.metrics.evaluate_predictions` (the vectorized form of
   :func:`~activa_ppl.metrics.evaluate_prediction`) and returns one row per
   (method, task, marginal, metric) as a :class:`pandas.DataFrame`;
2. :func:`summarize` averages the rows into ``{method: {marginal: {metric: {mean, se, n}}}}``.

Averaging (``average=``):

* ``"task"`` (default): the mean over all tasks for which the marginal is non-empty. This is what
  reproduces the paper's Table 1 on Gauss 2 (docs/results.md, "Averaging"). The standard error
  treats SCMs as the independent units (cluster-robust over SCMs):
  ``se = sqrt(sum_s (sum_{t in s} (x_t - mean))^2) / n_tasks``.
* ``"scm"``: each SCM's tasks are averaged first, then the mean and the standard error
  ``std(ddof=1) / sqrt(n_scms)`` are taken over SCMs.

The two differ only for marginals that are empty for some of an SCM's queries (Descendants,
Non-descendants): per-SCM averaging gives an SCM whose only non-empty Non-descendant query is
the child's (a large spurious shift for Gaussian Conditional) the same weight as an SCM with two
harmless queries.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from activa_ppl.data import InterventionalDataset, TaskArrays
from activa_ppl.metrics import MARGINAL_SET_NAMES, evaluate_predictions
from activa_ppl.predictors import as_predictor

__all__ = ["AVERAGES", "evaluate", "evaluate_tasks", "summarize"]

#: Ways of averaging task scores, see the module docstring.
AVERAGES = ("task", "scm")


def _select_scms(tasks: TaskArrays, max_scms: int | None) -> TaskArrays:
    if max_scms is None:
        return tasks
    if max_scms < 1:
        raise ValueError(f"max_scms must be positive; got {max_scms}")
    keep = np.isin(tasks.scm, np.unique(tasks.scm)[:max_scms])
    return TaskArrays(*(np.asarray(a)[keep] for a in tasks))


def evaluate_tasks(dataset: InterventionalDataset, predictors: dict, split: str = "test",
                   seed: int = 0, max_scms: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Score every task of ``split`` for every predictor.

    Args:
        dataset: the dataset; its true graphs define the marginals.
        predictors: ``{method name: Predictor or callable}``.
        split: ``"train"``, ``"valid"`` or ``"test"`` (or SCM indices, see
            :meth:`InterventionalDataset.tasks`).
        seed: seed of the predicted samples used by the energy distance.
        max_scms: evaluate only the first ``max_scms`` SCMs of the split.
        progress: show a progress bar over the split's SCMs.

    Returns:
        A DataFrame with one row per (method, task, marginal, metric) and the columns
        ``method, scm, query, marginal, metric, value``; empty marginals have no rows.

    Evaluations have hung inside XLA, intermittently, on a 2-core machine: a script that
    evaluates starts JAX with :func:`activa_ppl.dispatch.evaluation_runtime` first.
    """
    tasks = _select_scms(dataset.tasks(split), max_scms)
    if len(tasks.scm) == 0:
        raise ValueError(f"split {split!r} of {dataset!r} has no tasks to evaluate")
    rows = []
    key = jax.random.PRNGKey(seed)
    num_scms = len(np.unique(tasks.scm))
    for name, predictor in predictors.items():
        predictor = as_predictor(name, predictor)
        mixtures = predictor(tasks, dataset)
        if mixtures.batch_shape != (len(tasks.scm),):
            raise ValueError(f"predictor {name!r} returned batch shape {mixtures.batch_shape}; "
                             f"expected ({len(tasks.scm)},), one mixture per task")
        keys = jax.vmap(lambda t: jax.random.fold_in(key, t))(jnp.arange(len(tasks.scm)))
        wanted = [j for j, name in enumerate(MARGINAL_SET_NAMES) if name in predictor.sets]
        chunk = 128
        with tqdm(total=num_scms, desc=f"evaluate {name}", unit="SCM", disable=not progress,
                  leave=False) as bar:
            for start in range(0, len(tasks.scm), chunk):
                part = slice(start, min(start + chunk, len(tasks.scm)))
                scores = evaluate_predictions(
                    jax.tree_util.tree_map(lambda a: a[part], mixtures), tasks.interventional[part],
                    dataset.adjacency[tasks.scm[part]], tasks.targets[part], keys[part], chunk_size=chunk)
                for i, t in enumerate(range(part.start, part.stop)):
                    for j in wanted:
                        if np.isnan(scores["nll"][i, j]):
                            continue  # empty marginal: no value, not a zero
                        for metric in ("nll", "energy", "ate_mae"):
                            rows.append((name, int(tasks.scm[t]), int(tasks.query[t]), MARGINAL_SET_NAMES[j],
                                         metric, float(scores[metric][i, j])))
                bar.update(len(np.unique(tasks.scm[:part.stop])) - bar.n)  # SCMs scored so far
    return pd.DataFrame(rows, columns=["method", "scm", "query", "marginal", "metric", "value"])


def _summary(values: np.ndarray, scms: np.ndarray, average: str) -> dict:
    if average == "scm":
        frame = pd.DataFrame({"scm": scms, "value": values}).groupby("scm")["value"].mean()
        per_scm = frame.to_numpy()
        n = len(per_scm)
        se = float(per_scm.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        return {"mean": float(per_scm.mean()), "se": se, "n": int(n)}
    mean = float(values.mean())
    residual_sums = pd.Series(values - mean).groupby(scms).sum().to_numpy()
    se = float(np.sqrt(np.sum(residual_sums**2)) / len(values)) if len(residual_sums) > 1 else float("nan")
    return {"mean": mean, "se": se, "n": int(len(values)), "n_scms": int(len(residual_sums))}


def summarize(records: pd.DataFrame, average: str = "task") -> dict:
    """Average the rows of :func:`evaluate_tasks`.

    Args:
        records: the DataFrame returned by :func:`evaluate_tasks`.
        average: ``"task"`` or ``"scm"`` (see the module docstring).

    Returns:
        ``{method: {marginal: {metric: {"mean", "se", "n", ...}}}}``; ``n`` counts the averaged
        units (tasks or SCMs), ``n_scms`` (task averaging) the SCMs behind them.
    """
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}; got {average!r}")
    results: dict = {}
    for (method, marginal, metric), group in records.groupby(["method", "marginal", "metric"], sort=False):
        entry = _summary(group["value"].to_numpy(float), group["scm"].to_numpy(), average)
        results.setdefault(method, {}).setdefault(marginal, {})[metric] = entry
    # marginals in table order
    return {m: {k: table[k] for k in MARGINAL_SET_NAMES if k in table} for m, table in results.items()}


def evaluate(dataset: InterventionalDataset, predictors: dict, split: str = "test", seed: int = 0,
             max_scms: int | None = None, progress: bool = True, average: str = "task") -> dict:
    """Metrics of each predictor on ``split``: :func:`summarize` of :func:`evaluate_tasks`.

    Returns:
        ``{method: {marginal: {metric: {"mean": float, "se": float, "n": int, ...}}}}``.
    """
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}; got {average!r}")
    records = evaluate_tasks(dataset, predictors, split=split, seed=seed, max_scms=max_scms,
                             progress=progress)
    return summarize(records, average=average)
