"""Evaluate any predictor on a dataset split with the metrics of Section 6.3.

A :class:`Predictor` wraps a callable ``predict(tasks, dataset) -> GaussianMixture`` returning a
batched mixture with batch shape ``(T,)`` for the :class:`~activa_ppl.data.TaskArrays` it is
given. ACTIVA, the analytic baselines and MACE-TNP all have this shape, so evaluation, plots and
ArviZ conversion never branch on the method.

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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from activa_ppl import baselines
from activa_ppl.data import InterventionalDataset, TaskArrays
from activa_ppl.metrics import MARGINAL_SET_NAMES, evaluate_predictions
from activa_ppl.mixture import GaussianMixture

__all__ = [
    "AVERAGES",
    "BASELINE_SETS",
    "METHODS",
    "Predictor",
    "activa_predictor",
    "evaluate",
    "evaluate_tasks",
    "gaussian_conditional_predictor",
    "linear_causal_predictor",
    "predictor_from_spec",
    "register_method",
    "summarize",
]

#: Marginals a baseline reports (it does not predict V_t itself; Table 1 shows "—" for All).
BASELINE_SETS = tuple(s for s in MARGINAL_SET_NAMES if s != "all")

#: Ways of averaging task scores, see the module docstring.
AVERAGES = ("task", "scm")

#: Names of privileged information a method may use (shown in tables).
INTERVENTION_VALUE = "intervention value"
TRUE_GRAPH = "true graph"


@dataclass(frozen=True)
class Predictor:
    """A method under evaluation.

    Attributes:
        predict: ``predict(tasks, dataset) -> GaussianMixture`` with batch shape ``(T,)`` for the
            ``T`` tasks of ``tasks`` (a :class:`~activa_ppl.data.TaskArrays`).
        label: display name in tables and figures (e.g. ``"Linear Causal"``).
        sets: the marginals the method is scored on; methods that do not predict ``V_t`` skip
            ``"all"``.
        privileged: information beyond the observational data and the intervention *index*
            that the method uses (:data:`INTERVENTION_VALUE`, :data:`TRUE_GRAPH`).
    """

    predict: Callable[[TaskArrays, InterventionalDataset], GaussianMixture]
    label: str
    sets: tuple[str, ...] = MARGINAL_SET_NAMES
    privileged: tuple[str, ...] = field(default=())

    def __call__(self, tasks: TaskArrays, dataset: InterventionalDataset) -> GaussianMixture:
        return self.predict(tasks, dataset)


def activa_predictor(fitted, seed: int = 0, batch_size: int = 256) -> Predictor:
    """ACTIVA's zero-shot prediction (it sees no intervention value, only its index).

    Args:
        fitted: a :class:`~activa_ppl.fitted.FittedActiva`.
        seed: seed of the latent draws of the predictive mixture.
        batch_size: tasks per forward pass.
    """

    def predict(tasks: TaskArrays, dataset: InterventionalDataset) -> GaussianMixture:
        parts = [
            fitted.predict_batch(tasks.observational[i:i + batch_size], tasks.targets[i:i + batch_size],
                                 tasks.intervention_index[i:i + batch_size],
                                 seed=jax.random.fold_in(jax.random.PRNGKey(seed), i),
                                 bucket=False)  # one N per evaluation set: padding would only cost
            for i in range(0, len(tasks.scm), batch_size)
        ]
        return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)

    return Predictor(predict, label="ACTIVA")


def _values(tasks: TaskArrays, dataset: InterventionalDataset) -> np.ndarray:
    return dataset.intervention_values[tasks.scm, tasks.query]


def gaussian_conditional_predictor() -> Predictor:
    """Gaussian Conditional baseline; uses the intervention value (privileged information)."""

    def predict(tasks, dataset):
        return baselines.gaussian_conditional_batch(tasks.observational, tasks.targets.astype(bool),
                                                    _values(tasks, dataset))

    return Predictor(predict, label="Gaussian Cond.", sets=BASELINE_SETS,
                     privileged=(INTERVENTION_VALUE,))


def linear_causal_predictor() -> Predictor:
    """Linear Causal baseline; uses the true graph and the intervention value (privileged)."""

    def predict(tasks, dataset):
        return baselines.linear_causal_batch(tasks.observational, dataset.adjacency[tasks.scm],
                                             tasks.targets.astype(bool), _values(tasks, dataset))

    return Predictor(predict, label="Linear Causal", sets=BASELINE_SETS,
                     privileged=(TRUE_GRAPH, INTERVENTION_VALUE))


def _activa_from_argument(model: str | None, seed: int = 0) -> Predictor:
    from activa_ppl.fitted import load
    from activa_ppl.zoo import load_pretrained

    if not model:
        raise ValueError("method 'activa' needs a model: activa:PATH or activa:ZOO_NAME")
    fitted = load(model) if Path(model).exists() else load_pretrained(model)
    return activa_predictor(fitted, seed=seed)


def _mace_tnp_from_argument(model: str | None, seed: int = 0) -> Predictor:
    from activa_ppl.mace_tnp import load_mace_tnp, mace_tnp_predictor  # mace_tnp imports this module

    if not model:
        raise ValueError("method 'mace-tnp' needs a model: mace-tnp:PATH (a folder saved by train_mace_tnp)")
    return mace_tnp_predictor(load_mace_tnp(model))  # deterministic: no seed needed


def _no_argument(factory: Callable[[], Predictor], name: str) -> Callable[..., Predictor]:
    def build(argument: str | None, seed: int = 0) -> Predictor:
        if argument:
            raise ValueError(f"method {name!r} takes no argument; got {name}:{argument}")
        return factory()

    return build


#: Method name → ``factory(argument, seed) -> Predictor``, used by :func:`predictor_from_spec`.
METHODS: dict[str, Callable[..., Predictor]] = {
    "activa": _activa_from_argument,
    "mace-tnp": _mace_tnp_from_argument,
    "gaussian-conditional": _no_argument(gaussian_conditional_predictor, "gaussian-conditional"),
    "linear-causal": _no_argument(linear_causal_predictor, "linear-causal"),
}


def register_method(name: str, factory: Callable[..., Predictor]) -> None:
    """Make ``name[:ARGUMENT]`` usable in :func:`predictor_from_spec` and ``activa evaluate``.

    Args:
        name: method name, lower case, no ``:`` or ``,``.
        factory: ``factory(argument: str | None, seed: int) -> Predictor``.
    """
    if not name or any(c in name for c in ":,") or name != name.lower():
        raise ValueError(f"method names are lower case without ':' or ','; got {name!r}")
    METHODS[name] = factory


def predictor_from_spec(spec: str, seed: int = 0) -> Predictor:
    """Build a predictor from ``NAME`` or ``NAME:ARGUMENT`` (e.g. ``activa:models/gauss2``).

    Raises:
        ValueError: unknown method (the message lists the known ones) or a bad argument.
    """
    name, _, argument = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in METHODS:
        known = ", ".join(sorted(METHODS))
        raise ValueError(f"unknown method {name!r} in {spec!r}; known methods: {known}")
    return METHODS[name](argument.strip() or None, seed=seed)


def _select_scms(tasks: TaskArrays, max_scms: int | None) -> TaskArrays:
    if max_scms is None:
        return tasks
    if max_scms < 1:
        raise ValueError(f"max_scms must be positive; got {max_scms}")
    keep = np.isin(tasks.scm, np.unique(tasks.scm)[:max_scms])
    return TaskArrays(*(np.asarray(a)[keep] for a in tasks))


def _as_predictor(name: str, predictor) -> Predictor:
    if isinstance(predictor, Predictor):
        return predictor
    if callable(predictor):
        return Predictor(predictor, label=name, sets=tuple(getattr(predictor, "sets", MARGINAL_SET_NAMES)))
    raise TypeError(f"predictor {name!r} must be callable; got {type(predictor).__name__}")


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
    """
    tasks = _select_scms(dataset.tasks(split), max_scms)
    if len(tasks.scm) == 0:
        raise ValueError(f"split {split!r} of {dataset!r} has no tasks to evaluate")
    rows = []
    key = jax.random.PRNGKey(seed)
    num_scms = len(np.unique(tasks.scm))
    for name, predictor in predictors.items():
        predictor = _as_predictor(name, predictor)
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
