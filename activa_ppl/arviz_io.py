"""Predicted post-interventional mixtures as ArviZ ``InferenceData`` (posterior-predictive checks).

:func:`to_inference_data` turns any prediction (a :class:`~activa_ppl.mixture.GaussianMixture`,
one task or a batch of tasks) and, when known, the held-out interventional samples into an
``InferenceData`` with

* ``posterior_predictive``: one variable per model variable (named after it), shape
  ``(chain, draw, [task,] sample)``: each draw is a replicate dataset of ``N`` samples from the
  predicted mixture, ``N`` = the number of held-out samples;
* ``observed_data``: the held-out samples, shape ``([task,] sample)`` per variable;
* ``log_likelihood``: ``joint``, the log density of each held-out sample (all variables) under
  the predicted mixture, shape ``(chain, draw, [task,] sample)``;
* ``posterior``: the predicted mean of each variable, shape ``(chain, draw, [task])``.

so that ``az.plot_ppc(idata)``, ``az.summary(idata, group="posterior_predictive")`` and
``az.loo(idata)`` run on it.

A prediction is a single predictive distribution: it has no posterior over parameters of its
own, and the held-out samples were not used to make it. The ``log_likelihood`` and
``posterior`` values are therefore the same in every draw. ``az.loo`` then returns the exact
held-out log predictive density ``Σ_n log p̂(v_n)`` as ``elpd_loo`` (:func:`held_out_elpd`
computes it directly), with ``p_loo = 0``; its Pareto-k diagnostic is undefined for
draw-independent weights (ArviZ reports ``k = inf`` and warns) and carries no information here.

This is the only module that imports ArviZ, so a port to ArviZ 1.x (Python ≥ 3.12,
``DataTree`` based) happens here. It is written against arviz 0.23.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from activa_ppl.mixture import GaussianMixture, as_prng_key

__all__ = ["held_out_elpd", "to_inference_data"]


def _names(mixture: GaussianMixture, variable_names: Sequence[str] | None) -> list[str]:
    d = mixture.num_vars
    names = list(variable_names or mixture.variable_names or [f"X{i}" for i in range(d)])
    if len(names) != d or len(set(names)) != d:
        raise ValueError(f"need {d} distinct variable names; got {names}")
    if "joint" in names:
        raise ValueError("'joint' is reserved for the joint log-likelihood; rename that variable")
    return names


def to_inference_data(mixture: GaussianMixture, observed: Any = None, *, num_draws: int = 250,
                      num_chains: int = 2, num_samples: int | None = None, seed: Any = 0,
                      variable_names: Sequence[str] | None = None, task_names: Sequence[Any] | None = None):
    """ArviZ ``InferenceData`` of a predicted mixture and (optionally) held-out samples.

    Args:
        mixture: the prediction, batch shape ``()`` (one task) or ``(T,)`` (a batch of tasks).
        observed: held-out interventional samples ``(N, d)``, or ``(T, N, d)`` for a batch; when
            omitted, only ``posterior_predictive`` and ``posterior`` are built.
        num_draws: replicate datasets per chain.
        num_chains: independent chains of exact draws (2 by default, so that ``az.summary``'s
            R-hat has something to compare; it is 1 up to Monte Carlo error).
        num_samples: samples per replicate when ``observed`` is not given (default 100).
        seed: integer or JAX PRNG key.
        variable_names: names of the ``d`` variables (default: the mixture's, else X0, X1, …).
        task_names: coordinate values of the ``task`` dimension for a batch.

    Returns:
        ``arviz.InferenceData`` with the groups described in the module docstring.
    """
    import arviz as az

    if not isinstance(mixture, GaussianMixture):
        raise ValueError(f"mixture must be a GaussianMixture; got {type(mixture).__name__}")
    for name, value in (("num_draws", num_draws), ("num_chains", num_chains)) + \
            ((("num_samples", num_samples),) if num_samples is not None else ()):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer; got {num_samples!r}")
    if mixture.batch_shape not in ((),) and len(mixture.batch_shape) != 1:
        raise ValueError(f"mixture must have batch shape () or (T,); got {mixture.batch_shape}")
    if num_draws < 1 or num_chains < 1:
        raise ValueError(f"num_draws and num_chains must be positive; got {num_draws}, {num_chains}")
    names = _names(mixture, variable_names)
    batched = mixture.batch_shape != ()
    d = mixture.num_vars
    expected = ("(T, N, d)" if batched else "(N, d)")
    if observed is not None:
        try:
            observed = np.asarray(observed, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"observed must be a numeric array; {e}") from None
        if observed.ndim != (3 if batched else 2) or observed.shape[-1] != d or \
                (batched and observed.shape[0] != mixture.batch_shape[0]):
            raise ValueError(f"observed must have shape {expected} for this mixture (d={d}, "
                             f"batch {mixture.batch_shape}); got {observed.shape}")
        if not np.isfinite(observed).all():
            raise ValueError("observed contains non-finite values")
        n = observed.shape[-2]
    else:
        n = 100 if num_samples is None else int(num_samples)
    draws = np.asarray(mixture.sample(num_chains * num_draws * n, as_prng_key(seed)), dtype=np.float64)
    # (C*D*n, [T,] d) -> (C, D, n, [T,] d) -> (C, D, [T,] n, d)
    draws = draws.reshape((num_chains, num_draws, n) + mixture.batch_shape + (d,))
    if batched:
        draws = draws.transpose(0, 1, 3, 2, 4)
    lead = ["task"] if batched else []
    coords: dict[str, Any] = {"sample": np.arange(n)}
    if batched:
        coords["task"] = np.asarray(task_names) if task_names is not None else np.arange(mixture.batch_shape[0])
        if len(coords["task"]) != mixture.batch_shape[0]:
            raise ValueError(f"task_names has {len(coords['task'])} entries for {mixture.batch_shape[0]} tasks")
    dims = {name: lead + ["sample"] for name in names}
    dims["joint"] = lead + ["sample"]
    posterior_predictive = {name: draws[..., j] for j, name in enumerate(names)}
    mean = np.asarray(mixture.mean, dtype=np.float64)
    posterior = {f"mean_{name}": np.broadcast_to(mean[..., j], (num_chains, num_draws) + mixture.batch_shape)
                 for j, name in enumerate(names)}
    for name in names:
        dims[f"mean_{name}"] = lead
    kwargs: dict[str, Any] = {}
    if observed is not None:
        kwargs["observed_data"] = {name: observed[..., j] for j, name in enumerate(names)}
        # log p(v_n) per held-out sample: (N, [T]) -> ([T,] N), same in every draw
        log_density = np.asarray(mixture.log_prob(np.moveaxis(observed, -2, 0)), dtype=np.float64)
        log_density = np.moveaxis(log_density, 0, -1)
        kwargs["log_likelihood"] = {"joint": np.broadcast_to(log_density, (num_chains, num_draws) + log_density.shape)}
    return az.from_dict(posterior=posterior, posterior_predictive=posterior_predictive, coords=coords,
                        dims=dims, attrs={"source": "activa_ppl", "prediction": "GaussianMixture",
                                          "draws": "exact draws from the predicted mixture"},
                        **kwargs)


def held_out_elpd(idata) -> float:
    """``Σ_n log p̂(v_n)``: the held-out log predictive density stored in ``idata``
    (what ``az.loo(idata).elpd_loo`` returns for :func:`to_inference_data` output)."""
    if "log_likelihood" not in idata.groups():
        raise ValueError("idata has no log_likelihood group (build it with observed samples)")
    values = np.asarray(idata.log_likelihood["joint"])
    return float(values[0, 0].sum())

