"""Predicted post-interventional mixtures as ArviZ data (posterior-predictive checks).

[`to_inference_data`][activa_ppl.arviz_io.to_inference_data] turns any prediction (a
[`GaussianMixture`][activa_ppl.mixture.GaussianMixture], one task or a batch of tasks) and, when
known, the held-out interventional samples into ArviZ data with named dimensions ``task`` (a
batch of predictions), ``obs_id`` (the samples of one dataset), ``var_name`` and ``component``:

* ``posterior_predictive``: one variable per model variable (named after it), dims
  ``(chain, draw, [task,] obs_id)``: each draw is a replicate dataset of ``N`` samples from the
  predicted mixture, ``N`` = the number of held-out samples;
* ``observed_data``: the held-out samples, dims ``([task,] obs_id)`` per variable;
* ``log_likelihood``: ``joint``, the log density of each held-out sample (all variables) under
  the predicted mixture, dims ``(chain, draw, [task,] obs_id)``;
* ``posterior``: ``replicate_mean``, the mean of each replicate dataset, dims
  ``(chain, draw, [task,] var_name)``. It varies from draw to draw (exact independent draws), so
  ``az.summary(idata)`` with default arguments reports finite diagnostics (``r_hat`` ≈ 1, ESS ≈
  the number of draws) instead of NaN;
* ``constant_data``: the prediction itself, constant over draws: ``mean`` and ``sd``
  (``([task,] var_name)``), ``weights`` (``([task,] component)``) and ``component_mean``
  (``([task,] component, var_name)``).

The held-out sample dimension is ``obs_id``, not ``sample``: ArviZ 1.x reserves ``sample`` for
the stacked ``(chain, draw)`` dimension and warns about a variable dimension of that name.

A prediction is a single predictive distribution: it has no posterior over parameters of its
own, and the held-out samples were not used to make it, so ``log_likelihood`` is the same in
every draw and its sum is the exact held-out log predictive density: read it with
[`held_out_elpd`][activa_ppl.arviz_io.held_out_elpd] and rank methods with
[`compare_held_out`][activa_ppl.arviz_io.compare_held_out] (both ArviZ lines). With arviz 0.2x,
``az.loo(idata)`` returns the same number as ``elpd_loo`` (``p_loo = 0``, Pareto k undefined,
ArviZ warns); arviz 1.x's PSIS refuses a log-likelihood that is constant over draws.

This is the only module that imports ArviZ, and it supports both ArviZ lines behind one small
adapter: the 0.2x line (``InferenceData``; Python 3.11) and the 1.x line (``arviz-base`` /
``arviz-stats`` / ``arviz-plots``, ``xarray.DataTree``; what Python ≥ 3.12 installs):
[`from_groups`][activa_ppl.arviz_io.from_groups], [`group_names`][activa_ppl.arviz_io.group_names]
and [`plot_ppc`][activa_ppl.arviz_io.plot_ppc] hide the differences. ArviZ is imported on first
use, not with the package.

Draws from the NumPyro model itself, ``numpyro.infer.Predictive(fitted.activa.model,
params=fitted.params, num_samples=S)``, go through ``az.from_numpyro``:
[`from_predictive`][activa_ppl.arviz_io.from_predictive] calls it on either line with named
dimensions (the ArviZ tutorial shows the path).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["arviz_major", "compare_held_out", "from_groups", "from_predictive", "group_names", "held_out_elpd", "plot_ppc",
           "to_inference_data"]

#: Names of ArviZ variables built here besides the model variables (not usable as variable names).
RESERVED = ("joint", "replicate_mean", "mean", "sd", "weights", "component_mean")


def arviz_major() -> int:
    """The major version of the installed ArviZ (0 for the 0.2x line, 1 for 1.x)."""
    import arviz as az

    return int(az.__version__.split(".")[0])


def from_groups(groups: Mapping[str, Mapping[str, Any]], *, coords: Mapping[str, Any] | None = None,
                dims: Mapping[str, Sequence[str]] | None = None, attrs: Mapping[str, Any] | None = None):
    """``az.from_dict`` on both ArviZ lines: ``{group: {variable: array}}`` to ArviZ data.

    Returns ``arviz.InferenceData`` (arviz 0.2x) or ``xarray.DataTree`` (arviz 1.x); both give
    ``idata.posterior_predictive["X0"]`` and ``idata.attrs``. Groups whose name contains ``data``
    have no ``(chain, draw)`` dimensions.
    """
    import arviz as az

    kwargs = dict(coords=dict(coords or {}), dims=dict(dims or {}))
    if arviz_major() >= 1:  # attrs there are per group: put ours on the root of the tree
        tree = az.from_dict(dict(groups), **kwargs)
        tree.attrs.update(attrs or {})
        return tree
    return az.from_dict(**groups, **kwargs, attrs=dict(attrs or {}))


def from_predictive(samples: Mapping[str, Any], *, num_chains: int = 1, coords: Mapping[str, Any] | None = None,
                    dims: Mapping[str, Sequence[str]] | None = None):
    """``az.from_numpyro(posterior_predictive=samples, ...)`` on both ArviZ lines.

    ``samples``: the output of ``numpyro.infer.Predictive(...)(key, ...)``, ``{site: (S, ...)}``
    with ``S`` divisible by ``num_chains``; ``dims`` names each site's dimensions after the
    sample axis (e.g. ``{"interventional": ["task", "obs_id", "var_name"]}``). arviz 1.x wants
    explicit ``(chain, draw)`` axes and ``sample_dims``; arviz 0.2x splits ``S`` itself.
    """
    import arviz as az

    kwargs = dict(coords=dict(coords or {}), dims=dict(dims or {}))
    samples = {name: np.asarray(value) for name, value in samples.items()}
    if arviz_major() >= 1:
        split = {name: v.reshape((num_chains, v.shape[0] // num_chains) + v.shape[1:]) for name, v in samples.items()}
        return az.from_numpyro(posterior_predictive=split, sample_dims=["chain", "draw"], **kwargs)
    return az.from_numpyro(posterior_predictive=samples, num_chains=num_chains, **kwargs)


def group_names(idata) -> list[str]:
    """The group names of ArviZ data of either line (``posterior``, ``observed_data``, …)."""
    if hasattr(idata, "children"):  # xarray.DataTree (arviz 1.x)
        return list(idata.children)
    return list(idata.groups())


def plot_ppc(idata, *, num_pp_samples: int = 50, coords: Mapping[str, Any] | None = None):
    """Posterior-predictive check plot on the current matplotlib figure, on either ArviZ line.

    ``az.plot_ppc`` (0.2x, kernel densities) or ``az.plot_ppc_dist`` (1.x, matplotlib backend);
    one panel per variable, ``num_pp_samples`` replicate datasets against the observed data.
    Returns the matplotlib figure (save it with ``fig.savefig``).
    """
    import arviz as az
    import matplotlib.pyplot as plt

    if arviz_major() >= 1:
        az.plot_ppc_dist(idata, num_samples=num_pp_samples, coords=dict(coords) if coords else None,
                         backend="matplotlib")
    else:
        az.plot_ppc(idata, num_pp_samples=num_pp_samples, coords=dict(coords) if coords else None)
    return plt.gcf()


def _names(mixture, variable_names: Sequence[str] | None) -> list[str]:
    d = mixture.num_vars
    names = list(variable_names or mixture.variable_names or [f"X{i}" for i in range(d)])
    if len(names) != d or len(set(names)) != d:
        raise ValueError(f"need {d} distinct variable names; got {names}")
    reserved = sorted(set(names) & set(RESERVED))
    if reserved:
        raise ValueError(f"{reserved} are reserved for the ArviZ variables {RESERVED}; rename that variable")
    return names


def _check_counts(num_draws, num_chains, num_samples) -> None:
    for name, value in (("num_draws", num_draws), ("num_chains", num_chains)) + \
            ((("num_samples", num_samples),) if num_samples is not None else ()):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer; got {num_samples!r}")
    if num_draws < 1 or num_chains < 1:
        raise ValueError(f"num_draws and num_chains must be positive; got {num_draws}, {num_chains}")


def _checked_observed(observed, mixture, batched: bool) -> np.ndarray:
    d = mixture.num_vars
    try:
        observed = np.asarray(observed, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"observed must be a numeric array; {e}") from None
    if observed.ndim != (3 if batched else 2) or observed.shape[-1] != d or \
            (batched and observed.shape[0] != mixture.batch_shape[0]):
        raise ValueError(f"observed must have shape {'(T, N, d)' if batched else '(N, d)'} for this "
                         f"mixture (d={d}, batch {mixture.batch_shape}); got {observed.shape}")
    if not np.isfinite(observed).all():
        raise ValueError("observed contains non-finite values")
    return observed


def to_inference_data(mixture, observed: Any = None, *, num_draws: int = 250,
                      num_chains: int = 2, num_samples: int | None = None, seed: Any = 0,
                      variable_names: Sequence[str] | None = None, task_names: Sequence[Any] | None = None):
    """ArviZ data of a predicted mixture and (optionally) held-out samples.

    Also available as ``activa_ppl.to_inference_data`` and
    ``GaussianMixture.to_inference_data(observed, ...)``.

    Args:
        mixture: the prediction, a ``GaussianMixture`` of batch shape ``()`` (one task) or
            ``(T,)`` (a batch of tasks).
        observed: held-out interventional samples ``(N, d)``, or ``(T, N, d)`` for a batch; when
            omitted, ``observed_data`` and ``log_likelihood`` are not built.
        num_draws: replicate datasets per chain.
        num_chains: independent chains of exact draws (2 by default, so that ``az.summary``'s
            R-hat has something to compare; it is 1 up to Monte Carlo error).
        num_samples: samples per replicate when ``observed`` is not given (default 100).
        seed: integer or JAX PRNG key.
        variable_names: names of the ``d`` variables (default: the mixture's, else X0, X1, …).
        task_names: coordinate values of the ``task`` dimension for a batch.

    Returns:
        ``arviz.InferenceData`` (arviz 0.2x) or ``xarray.DataTree`` (arviz 1.x) with the groups
        described in the module docstring; ``attrs["intervention"]`` names the intervention when
        the mixture knows it.
    """
    if not all(hasattr(mixture, a) for a in ("sample", "log_prob", "batch_shape", "weights", "locs")):
        raise ValueError(f"mixture must be a GaussianMixture; got {type(mixture).__name__}")
    _check_counts(num_draws, num_chains, num_samples)
    if mixture.batch_shape not in ((),) and len(mixture.batch_shape) != 1:
        raise ValueError(f"mixture must have batch shape () or (T,); got {mixture.batch_shape}")
    names = _names(mixture, variable_names)
    batched = mixture.batch_shape != ()
    d = mixture.num_vars
    observed = None if observed is None else _checked_observed(observed, mixture, batched)
    n = observed.shape[-2] if observed is not None else (100 if num_samples is None else int(num_samples))
    draws = np.asarray(mixture.sample(num_chains * num_draws * n, seed), dtype=np.float64)
    # (C*D*n, [T,] d) -> (C, D, n, [T,] d) -> (C, D, [T,] n, d)
    draws = draws.reshape((num_chains, num_draws, n) + mixture.batch_shape + (d,))
    if batched:
        draws = draws.transpose(0, 1, 3, 2, 4)
    lead = ["task"] if batched else []
    coords: dict[str, Any] = {"obs_id": np.arange(n), "var_name": names,
                              "component": np.arange(mixture.num_components)}
    if batched:
        coords["task"] = np.asarray(task_names) if task_names is not None else np.arange(mixture.batch_shape[0])
        if len(coords["task"]) != mixture.batch_shape[0]:
            raise ValueError(f"task_names has {len(coords['task'])} entries for {mixture.batch_shape[0]} tasks")
    dims = {name: lead + ["obs_id"] for name in names + ["joint"]}
    dims.update(replicate_mean=lead + ["var_name"], mean=lead + ["var_name"], sd=lead + ["var_name"],
                weights=lead + ["component"], component_mean=lead + ["component", "var_name"])
    groups: dict[str, dict[str, Any]] = {
        "posterior": {"replicate_mean": draws.mean(axis=-2)},  # (C, D, [T,] d)
        "posterior_predictive": {name: draws[..., j] for j, name in enumerate(names)},
        "constant_data": {"mean": np.asarray(mixture.mean, np.float64),
                          "sd": np.sqrt(np.asarray(mixture.variance, np.float64)),
                          "weights": np.asarray(mixture.weights, np.float64),
                          "component_mean": np.asarray(mixture.locs, np.float64)},
    }
    if observed is not None:
        groups["observed_data"] = {name: observed[..., j] for j, name in enumerate(names)}
        # log p(v_n) per held-out sample: (N, [T]) -> ([T,] N), same in every draw
        log_density = np.moveaxis(np.asarray(mixture.log_prob(np.moveaxis(observed, -2, 0)), np.float64), 0, -1)
        groups["log_likelihood"] = {"joint": np.broadcast_to(log_density, (num_chains, num_draws) + log_density.shape)}
    attrs = {"source": "activa_ppl", "prediction": "GaussianMixture",
             "draws": "exact draws from the predicted mixture"}
    if getattr(mixture, "intervention", None):
        attrs["intervention"] = mixture.intervention
    return from_groups(groups, coords=coords, dims=dims, attrs=attrs)


def _pointwise(idata) -> np.ndarray:
    """The held-out log densities of ``idata``, one per sample (tasks flattened)."""
    if "log_likelihood" not in group_names(idata):
        raise ValueError("idata has no log_likelihood group (build it with observed samples)")
    return np.asarray(idata.log_likelihood["joint"])[0, 0].ravel()


def held_out_elpd(idata) -> float:
    """``Σ_n log p̂(v_n)``: the held-out log predictive density stored in ``idata`` by
    [`to_inference_data`][activa_ppl.arviz_io.to_inference_data] (what arviz 0.2x's
    ``az.loo(idata).elpd_loo`` also returns)."""
    return float(_pointwise(idata).sum())


def compare_held_out(idatas: Mapping[str, Any]):
    """Rank predictions of the same held-out samples by held-out log predictive density.

    The ``az.compare`` of this setting, on both ArviZ lines (arviz 1.x's ``az.compare`` needs
    PSIS-LOO, undefined here).

    Args:
        idatas: name → output of [`to_inference_data`][activa_ppl.arviz_io.to_inference_data],
            all built with the same held-out samples.

    Returns:
        ``pandas.DataFrame`` indexed by name, best first, with ``rank``, ``elpd`` (the sum of
        held-out log densities), ``se`` (its standard error, ``sqrt(n · var)`` of the pointwise
        values), ``elpd_diff`` and ``dse`` (difference to the best and its standard error).
    """
    import pandas as pd

    pointwise = {name: _pointwise(idata) for name, idata in idatas.items()}
    sizes = {p.size for p in pointwise.values()}
    if len(sizes) != 1:
        raise ValueError(f"the predictions were checked on different numbers of samples: {sorted(sizes)}")
    order = sorted(pointwise, key=lambda k: -pointwise[k].sum())
    best = pointwise[order[0]]
    rows = []
    for rank, name in enumerate(order):
        values, diff = pointwise[name], best - pointwise[name]
        rows.append({"rank": rank, "elpd": values.sum(), "se": np.sqrt(values.size * values.var()),
                     "elpd_diff": diff.sum(), "dse": np.sqrt(diff.size * diff.var())})
    return pd.DataFrame(rows, index=order)
