"""What a saved model was trained on, and honest zero-shot answers: intervention values, the
training data's ranges, and a warning when an input is unlike anything the model has seen.

Everything here reads plain ``config.json`` dictionaries (``model_config`` and ``info``), so that
``activa models`` can describe a model without importing JAX.

**Intervention values.** A model learns one embedding per intervention *index*; the value of
each index comes from ``model_config.intervention_values`` (models trained with
``standardize=True``) or from the training data's settings (``info.dataset.intervention_value``;
SERGIO knockouts are ``0``). [`intervention_index`][activa_ppl.model_info.intervention_index]
turns ``{"X0": 5.0}`` into the index and refuses values the model was not trained on.

**Training ranges.** ``activa train`` (and ``inference/train.py``) record
[`training_data_ranges`][activa_ppl.model_info.training_data_ranges] in ``info.training_data``
of each newly saved model: the number of variables, the sample count, and the range over the
training datasets of each variable's mean and standard deviation. For older models (the zoo)
the ranges are reconstructed from a fresh simulation with the generator settings recorded in
``info.dataset`` (linear and ambiguous generators). [`range_problems`][activa_ppl.model_info.range_problems]
lists where an input falls outside; ``FittedActiva.predict`` warns with
[`OutOfTrainingRangeWarning`][activa_ppl.model_info.OutOfTrainingRangeWarning] (``activa predict
--strict`` makes it an error).

**Invariant models.** A model with ``standardize=True`` (``gauss8``, ``beta8``, ``sergio8``)
z-scores each input dataset and maps its prediction back, so it is invariant to each variable's
location and scale: only the number of variables and samples are checked for it. The others
(``gauss2``, ``beta2``, ``ambiguous2``) see raw values and are checked on means and scales too.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from activa_ppl.disk_memo import memoized

__all__ = ["OutOfTrainingRangeWarning", "describe_model", "intervention_index", "intervention_label", "intervention_values",
           "range_problems", "training_data_ranges", "training_ranges", "warn_if_out_of_range"]

#: Relative tolerance of a requested intervention value against a trained one.
VALUE_RTOL = 1e-6
#: An input's sample count is checked against the trained range widened by this factor both ways
#: (the networks take any ``N``; a count far from the trained one shifts the attention's inputs).
SAMPLE_COUNT_SLACK = 2.0
#: Above this many datasets, the range statistics use a random subset (the ranges are min/max).
MAX_RANGE_DATASETS = 5000


class OutOfTrainingRangeWarning(UserWarning):
    """An input to a prediction lies outside the range of the model's training data: the answer
    is an extrapolation, with no guarantee (``warnings.simplefilter("error", ...)`` or
    ``activa predict --strict`` turns it into an error)."""


def intervention_values(model_config: Mapping[str, Any], info: Mapping[str, Any]) -> list[float | None]:
    """The value ``v_i`` of each intervention index ``i`` (``None`` where it is not recorded)."""
    count = int(model_config.get("num_interventions") or 1)
    if model_config.get("intervention_values"):
        return [None if v is None else float(v) for v in model_config["intervention_values"]]
    dataset = info.get("dataset") or {}
    if "intervention_value" in dataset and count == 1:
        return [float(dataset["intervention_value"])]
    if dataset.get("generator") == "sergio":
        return [0.0] * count  # knockouts
    return [None] * count


def describe_model(name: str | None, model_config: Mapping[str, Any], info: Mapping[str, Any]) -> str:
    """One line about a model: name, interventions with their values, what it was trained on,
    whether it is location/scale invariant, and its best validation NLL."""
    dataset = info.get("dataset") or {}
    values = intervention_values(model_config, info)
    shown = ", ".join(f"{i}: {'?' if v is None else f'{v:g}'}" for i, v in enumerate(values))
    parts = [name or "ACTIVA", f"do(target = {shown.split(': ')[1]})" if len(values) == 1
             else f"do(target = value), values by index {{{shown}}}"]
    d = dataset.get("num_vars") or dataset.get("num_genes")
    if dataset.get("generator"):
        parts.append(f"trained on {dataset['generator']}" + (f" d={d}" if d else ""))
    parts.append("location/scale invariant (standardize)" if model_config.get("standardize")
                 else "raw values (not scale invariant)")
    if info.get("best_valid_nll") is not None:
        parts.append(f"best validation NLL {float(info['best_valid_nll']):.4g}")
    return ", ".join(parts)


def intervention_label(targets: Sequence[str], value: float | None, index: int) -> str:
    """``"do(X0 = 5)"`` (or ``"do(X0, X1 = index 1)"`` when the value is not recorded)."""
    shown = f"{value:g}" if value is not None else f"index {index}"
    return f"do({', '.join(map(str, targets))} = {shown})"


def intervention_index(intervention: Any, values: Sequence[float | None], targets: Sequence[str],
                       name: str = "intervention") -> int:
    """The intervention index of ``intervention``: an index ``i`` (returned as given; checked by
    the caller), or ``{target name: value}`` with one trained value for every target.

    Raises:
        ValueError: a mapping whose keys are not the targets, or a value the model was not
            trained on (the message lists the trained values).
    """
    if not isinstance(intervention, Mapping):
        return intervention
    if set(map(str, intervention)) != set(map(str, targets)):
        raise ValueError(f"{name}: give one value per target {list(targets)}; got {dict(intervention)}")
    trained = ", ".join(f"{v:g} (index {i})" for i, v in enumerate(values) if v is not None) or "none recorded"
    found = set()
    for target, value in intervention.items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: the value of {target} must be a number, got {value!r}") from None
        matches = [i for i, v in enumerate(values)
                   if v is not None and np.isclose(value, v, rtol=VALUE_RTOL, atol=VALUE_RTOL)]
        if not matches:
            raise ValueError(f"{name}: this model was not trained on do({target} = {value:g}); it knows "
                             f"the intervention values {trained} and cannot predict others")
        found.add(matches[0])
    if len(found) != 1:
        raise ValueError(f"{name}: the targets' values are different intervention indices {sorted(found)}; "
                         "one query has one intervention index")
    return found.pop()


def _stats(observational: np.ndarray) -> dict[str, np.ndarray]:
    """Per-dataset statistics of ``(S, N, d)`` data: ``mean`` and ``sd`` ``(S, d)``."""
    return {"mean": observational.mean(axis=1), "sd": observational.std(axis=1)}


def training_data_ranges(data, source: str = "recorded at training") -> dict[str, Any]:
    """The ranges of a training set that [`range_problems`][activa_ppl.model_info.range_problems]
    checks inputs against (JSON-ready).

    Args:
        data: the ``InterventionalDataset`` (its observational datasets ``(S, N, d)``).
        source: how the ranges were obtained (stored with them).

    Returns:
        ``{"num_vars": [d, d], "num_samples": [N, N], "mean": [lo, hi], "sd": [lo, hi],
        "num_datasets": S, "source": source}``: ``mean``/``sd`` are the range, over datasets and
        variables, of each variable's sample mean and standard deviation.
    """
    observational = np.asarray(data.observational, np.float64)
    if observational.shape[0] > MAX_RANGE_DATASETS:
        pick = np.random.default_rng(0).choice(observational.shape[0], MAX_RANGE_DATASETS, replace=False)
        observational = observational[np.sort(pick)]
    s, n, d = observational.shape
    ranges: dict[str, Any] = {"num_vars": [d, d], "num_samples": [n, n]}
    for key, value in _stats(observational).items():
        ranges[key] = [float(value.min()), float(value.max())]
    ranges.update(num_datasets=int(data.observational.shape[0]), source=source)
    return ranges


def _reconstructed(dataset: Mapping[str, Any]) -> dict[str, Any] | None:
    """Ranges of a fresh simulation with the recorded generator settings (older models)."""
    generator = dataset.get("generator")
    common = dict(num_scms=min(int(dataset.get("num_scms", 1000)), 3000),
                  num_samples=int(dataset.get("num_samples", 100)), seed=int(dataset.get("seed", 0)))
    if generator == "linear":
        from activa_ppl.simulate.linear import linear_dataset

        keys = ("edge_prob", "noise_std", "beta_range", "weight_range", "intervention_value")
        data = linear_dataset(num_vars=int(dataset["num_vars"]), noise=dataset.get("noise", "gauss"),
                              **common, **{k: dataset[k] for k in keys if k in dataset})
    elif generator == "ambiguous":
        from activa_ppl.simulate.ambiguous import ambiguous_dataset

        data = ambiguous_dataset(**common, **{k: dataset[k] for k in ("log_sd", "intervention_value")
                                              if k in dataset})
    else:
        return None
    return training_data_ranges(data, source="reconstructed from the generator settings in info.dataset")


def training_ranges(info: Mapping[str, Any]) -> dict[str, Any] | None:
    """The recorded ranges of ``info`` (``info["training_data"]``), else reconstructed from
    ``info["dataset"]``, else ``None`` (nothing to check against)."""
    if info.get("training_data"):
        return dict(info["training_data"])
    dataset = info.get("dataset") or {}
    try:  # remembered across ``activa`` commands (activa_ppl.disk_memo)
        return memoized("training_ranges", dataset, lambda: _reconstructed(dataset))
    except (KeyError, TypeError, ValueError):
        return None


def range_problems(ranges: Mapping[str, Any] | None, observations: np.ndarray,
                   standardized: bool = False) -> list[str]:
    """Where ``observations (N, d)`` fall outside ``ranges``, one sentence each (empty: inside).

    ``standardized``: the model z-scores its inputs, so means and scales are not checked. The
    sample count is checked within a factor :data:`SAMPLE_COUNT_SLACK` of the trained range.
    """
    if not ranges:
        return []
    observations = np.asarray(observations, np.float64)
    n, d = observations.shape
    observed = {"num_vars": np.array([d]), "num_samples": np.array([n])}
    if not standardized:
        observed.update({k: v[0] for k, v in _stats(observations[None]).items()})
    labels = {"num_vars": "number of variables", "num_samples": "number of samples",
              "mean": "a variable's mean", "sd": "a variable's standard deviation"}
    problems = []
    for key, values in observed.items():
        if key not in ranges:
            continue
        lo, hi = ranges[key]
        if key == "num_samples":
            lo, hi = lo / SAMPLE_COUNT_SLACK, hi * SAMPLE_COUNT_SLACK
        if values.min() < lo or values.max() > hi:
            seen = f"{values.min():.4g}" + (f" to {values.max():.4g}" if values.size > 1 else "")
            problems.append(f"{labels[key]}: observed {seen}, trained {lo:.4g} to {hi:.4g}")
    return problems


def warn_if_out_of_range(model_name: str, ranges: Mapping[str, Any] | None, observations: np.ndarray,
                         standardized: bool = False, stacklevel: int = 3) -> list[str]:
    """Warn (:class:`OutOfTrainingRangeWarning`) when ``observations`` are outside ``ranges``;
    returns the problems found (see [`range_problems`][activa_ppl.model_info.range_problems]).
    ``stacklevel`` as for ``warnings.warn`` (default: the caller of the function calling this)."""
    problems = range_problems(ranges, observations, standardized)
    if problems:
        warnings.warn(f"model {model_name} was not trained on data like this input ("
                      + "; ".join(problems) + "): the prediction is an extrapolation",
                      OutOfTrainingRangeWarning, stacklevel=stacklevel)
    return problems
