"""Figures: interventional samples projected on the (V0, V1) plane (paper Figure 3 style)."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from activa_ppl.data import InterventionalDataset

__all__ = ["plot_interventional_samples"]


def plot_interventional_samples(dataset: InterventionalDataset, scms, predictors: dict, path,
                                seed: int = 0, dims=(0, 1)) -> Path:
    """One row per SCM, one column per method (ground truth first); grey = observational samples,
    one colour per intervention target. Writes a PNG to ``path`` and returns the path.

    Args:
        dataset: the dataset holding the SCMs.
        scms: indices of SCMs in ``dataset`` to show.
        predictors: ``{name: predictor}`` (see :mod:`activa_ppl.evaluation`).
        path: output PNG file.
        dims: the two variables on the axes.
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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
