"""Figures: interventional samples on the (V0, V1) plane (paper Figure 3) and ATE errors (Figure 4)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from activa_ppl.data import InterventionalDataset

__all__ = ["plot_ate_errors", "plot_interventional_samples"]


def plot_interventional_samples(dataset: InterventionalDataset, scms, predictors: dict, path,
                                seed: int = 0, dims=(0, 1), title: str | None = None) -> Path:
    """One row per SCM, one column per method (ground truth first); grey = observational samples,
    one colour per intervention target. Writes a PNG to ``path`` and returns the path.

    Args:
        dataset: the dataset holding the SCMs.
        scms: indices of SCMs in ``dataset`` to show.
        predictors: ``{name: predictor}`` (see :mod:`activa_ppl.evaluation`).
        path: output PNG file.
        dims: the two variables on the axes.
        title: optional figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scms = list(scms)
    tasks = dataset.tasks(np.asarray(scms))
    columns = ["ground truth", *predictors]
    samples = {"ground truth": np.asarray(tasks.interventional)}
    n = tasks.interventional.shape[1]
    for name, predictor in predictors.items():
        mixtures = predictor(tasks, dataset)
        samples[name] = np.asarray(mixtures.sample(n, jax.random.PRNGKey(seed))).swapaxes(0, 1)
    colours = matplotlib.colormaps["tab10"]
    fig, axes = plt.subplots(len(scms), len(columns), figsize=(3.0 * len(columns), 2.8 * len(scms)),
                             squeeze=False, sharex="row", sharey="row")
    names = dataset.variable_names
    for r, s in enumerate(scms):
        rows = np.flatnonzero(tasks.scm == s)
        for c, column in enumerate(columns):
            ax = axes[r, c]
            obs = dataset.observational[s]
            ax.scatter(obs[:, dims[0]], obs[:, dims[1]], s=4, c="0.7", label="observational")
            for t in rows:
                target = int(np.argmax(tasks.targets[t]))
                x = samples[column][t]
                ax.scatter(x[:, dims[0]], x[:, dims[1]], s=4, alpha=0.6, color=colours(target % 10),
                           label=f"do({names[target]})")
            if r == 0:
                ax.set_title(column)
            if c == 0:
                ax.set_ylabel(f"SCM {s}\n{names[dims[1]]}")
            if r == len(scms) - 1:
                ax.set_xlabel(names[dims[0]])
    axes[0, 0].legend(fontsize=7, markerscale=2, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: (marginal, panel title) of Figure 4.
_ATE_PANELS = (("all_but_target", r"All except $V_t$"), ("descendants", "Descendants"),
               ("non_descendants", "Non-descendants"))


def plot_ate_errors(report: dict, path) -> Path:
    """Figure 4: ATE mean absolute error per dataset (groups) and method (colours), one panel per
    marginal (All∖V_t, Descendants, Non-descendants), with standard-error bars.

    Args:
        report: the dict returned by :func:`activa_ppl.report.run_evaluation`.
        path: output PNG file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = report["datasets"]
    # one colour per method: "Linear Causal (O)" and "Linear Causal (PI)" are the same method
    base = {row["label"]: row["method"] for ds in datasets for row in ds["methods"]}
    methods = list(dict.fromkeys(base.values()))
    colours = matplotlib.colormaps["tab10"]
    width = 0.8 / max(len(methods), 1)
    fig, axes = plt.subplots(1, len(_ATE_PANELS), figsize=(4.2 * len(_ATE_PANELS), 3.6), squeeze=False)
    for ax, (marginal, title) in zip(axes[0], _ATE_PANELS):
        for j, method in enumerate(methods):
            xs, heights, errors = [], [], []
            for i, ds in enumerate(datasets):
                row = next((r for r in ds["methods"] if base[r["label"]] == method), None)
                entry = None if row is None else row["results"].get(marginal, {}).get("ate_mae")
                if entry is not None:
                    xs.append(i + (j - (len(methods) - 1) / 2) * width)
                    heights.append(entry["mean"])
                    errors.append(entry["se"] if np.isfinite(entry["se"]) else 0.0)
            ax.bar(xs, heights, width=width, yerr=errors, capsize=2, color=colours(j % 10),
                   label=method)
        ax.set_xticks(range(len(datasets)), [ds["label"] for ds in datasets])
        ax.set_title(title)
        ax.set_ylabel("ATE MAE (lower is better)")
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
