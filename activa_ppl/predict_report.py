"""What ``activa predict`` reports: the per-variable table, the *modes* of the prediction, a JSON
record and a plot, plus JAX's persistent compilation cache for repeated commands.

**Modes.** The library's headline is that a predicted mixture's modes show causal ambiguity
(e.g. "X1 shifts if X0 causes it, stays if it does not"). [`modes`][activa_ppl.predict_report.modes]
finds the local maxima of the predicted density by climbing from every component mean (the
mean-shift fixed point of a Gaussian mixture), and groups the components by the peak they
reach. Each mode reports its total weight, its peak, and the mean and sd (within plus between
components) of every variable.

**Compilation cache.** [`enable_compilation_cache`][activa_ppl.predict_report.enable_compilation_cache]
points JAX's persistent cache at ``$ACTIVA_CACHE_DIR`` (default
``$XDG_CACHE_HOME/activa_ppl/jax``, i.e. ``~/.cache/activa_ppl/jax``), so that a second
``activa predict`` of the same shapes loads the compiled prediction instead of compiling it;
its ``memo/`` folder keeps start-up results ([`disk_memo`][activa_ppl.disk_memo]) and the traced
prediction ([`exported`][activa_ppl.exported]), so that the second command neither traces the
model nor imports Flax and NumPyro. Delete the folder to clear it; ``ACTIVA_CACHE_DIR=off``
disables it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from activa_ppl import disk_memo

__all__ = ["DEFAULT_SEPARATION", "MIN_MODE_WEIGHT", "cache_dir", "enable_compilation_cache", "format_report", "modes",
           "plot_prediction", "prediction_report", "run_predict", "write_json"]

#: Scales the tolerance (``1e-3 · separation`` of the smallest component sd, per variable) within
#: which two climbed-to peaks count as one.
DEFAULT_SEPARATION = 2.0
#: Modes lighter than this are not counted or listed one by one in the printed report.
MIN_MODE_WEIGHT = 0.01


def cache_dir() -> Path | None:
    """The persistent compilation cache folder (``None`` when ``ACTIVA_CACHE_DIR=off``)."""
    configured = os.environ.get("ACTIVA_CACHE_DIR")
    if configured is not None:
        return None if configured.lower() in ("", "off", "0", "none") else Path(configured)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "activa_ppl" / "jax"


def enable_compilation_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache in :func:`cache_dir`, and the
    [`disk_memo`][activa_ppl.disk_memo] of start-up results in its ``memo/``; returns the folder."""
    folder = cache_dir()
    if folder is None:
        return None
    import jax

    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    disk_memo.enable(folder)  # parameter shapes and reconstructed ranges too (activa_ppl.disk_memo)
    return folder


def _climb(weights: np.ndarray, locs: np.ndarray, covariances: np.ndarray, steps: int = 500) -> np.ndarray:
    """The density peak each component mean climbs to: the fixed-point (mean-shift) iteration of a
    Gaussian mixture (Carreira-Perpiñán 2000), from all ``K`` means at once. ``(K, d)`` peaks."""
    precisions = np.linalg.inv(covariances)  # (K, d, d)
    log_base = np.log(np.maximum(weights, 1e-300)) - 0.5 * np.linalg.slogdet(covariances)[1]  # (K,)
    x = locs.copy()  # (S, d) starts
    for _ in range(steps):
        diff = x[:, None] - locs[None]  # (S, K, d)
        log_r = log_base - 0.5 * np.einsum("ski,kij,skj->sk", diff, precisions, diff)
        r = np.exp(log_r - log_r.max(1, keepdims=True))
        r /= r.sum(1, keepdims=True)  # (S, K) responsibilities
        a = np.einsum("sk,kij->sij", r, precisions)
        b = np.einsum("sk,kij,kj->si", r, precisions, locs)
        new = np.linalg.solve(a, b[..., None])[..., 0]
        if np.abs(new - x).max() < 1e-9 * (1 + np.abs(x).max()):
            return new
        x = new
    return x


def modes(mixture, separation: float = DEFAULT_SEPARATION) -> list[dict[str, Any]]:
    """The modes of an unbatched mixture, heaviest first (see the module docstring).

    Returns:
        one dict per mode: ``weight`` (float), ``components`` (their indices), ``peak`` (the
        density maximum), ``mean`` and ``sd`` (moments of its components; lists of ``d`` floats).
    """
    if mixture.batch_shape:
        raise ValueError(f"modes needs one prediction (batch shape ()); got {mixture.batch_shape}")
    weights = np.asarray(mixture.weights, np.float64)  # (K,)
    locs = np.asarray(mixture.locs, np.float64)  # (K, d)
    covariances = np.asarray(mixture.covariances, np.float64)  # (K, d, d)
    sds = np.sqrt(np.diagonal(covariances, axis1=-2, axis2=-1))  # (K, d)
    peaks = _climb(weights, locs, covariances)
    scale = sds.min(0)  # (d,): peaks closer than `separation` x 1e-3 of this are one
    labels = np.full(len(weights), -1)
    for k in range(len(weights)):
        if labels[k] < 0:
            labels[(np.abs(peaks - peaks[k]) <= 1e-3 * separation * scale).all(-1) & (labels < 0)] = k
    found = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        w = weights[members]
        total = float(w.sum())
        share = w / total if total > 0 else np.full(len(w), 1 / len(w))
        mean = share @ locs[members]
        variance = share @ (sds[members] ** 2 + (locs[members] - mean) ** 2)
        found.append({"weight": total, "components": members.tolist(), "peak": peaks[label].tolist(),
                      "mean": mean.tolist(), "sd": np.sqrt(variance).tolist()})
    return sorted(found, key=lambda m: -m["weight"])


def prediction_report(mixture, observations: np.ndarray, *, model: str, targets: Sequence[str],
                      intervention_index: int, warnings: Sequence[str] = (),
                      separation: float = DEFAULT_SEPARATION) -> dict[str, Any]:
    """The JSON-ready record of one prediction (what ``activa predict --json`` writes).

    Keys: ``model``, ``intervention`` (e.g. ``"do(X0 = 5)"``), ``intervention_index``,
    ``targets``, ``variables`` (name → observed mean, predicted mean and sd, ATE),
    ``num_components``, ``modes`` (:func:`modes`, with variables by name) and ``warnings``.
    """
    names = list(mixture.variable_names or [f"X{i}" for i in range(mixture.num_vars)])
    observed_mean = np.asarray(observations, np.float64).mean(0)
    mean = np.asarray(mixture.mean, np.float64)
    sd = np.sqrt(np.asarray(mixture.variance, np.float64))
    variables = {name: {"observed_mean": float(o), "predicted_mean": float(m), "predicted_sd": float(s),
                        "ate": float(m - o)} for name, o, m, s in zip(names, observed_mean, mean, sd)}
    found = [{"weight": m["weight"], "components": m["components"],
              "mean": dict(zip(names, m["mean"])), "sd": dict(zip(names, m["sd"]))}
             for m in modes(mixture, separation)]
    return {"model": model, "intervention": mixture.intervention, "intervention_index": int(intervention_index),
            "targets": list(map(str, targets)), "variables": variables,
            "num_components": mixture.num_components, "modes": found, "warnings": list(warnings)}


def format_report(report: dict[str, Any], max_modes: int = 5) -> str:
    """The text ``activa predict`` prints for a :func:`prediction_report`."""
    lines = [f"{report['model']}: {report['intervention']} (intervention index {report['intervention_index']}), "
             f"{report['num_components']}-component Gaussian mixture",
             f"{'variable':>12} {'obs. mean':>10} {'pred. mean':>10} {'pred. sd':>9} {'ATE':>8}"]
    for name, v in report["variables"].items():
        lines.append(f"{name:>12.12} {v['observed_mean']:10.3f} {v['predicted_mean']:10.3f} "
                     f"{v['predicted_sd']:9.3f} {v['ate']:8.3f}")
    found = [m for m in report["modes"] if m["weight"] >= MIN_MODE_WEIGHT][:max_modes]
    lines.append(f"{len(found)} mode{'s' if len(found) != 1 else ''} (peaks of the predicted density; more than "
                 "one: the data leave the effect ambiguous):")
    for i, mode in enumerate(found):
        shown = ", ".join(f"{name} {mode['mean'][name]:.3g} ± {mode['sd'][name]:.2g}" for name in mode["mean"])
        lines.append(f"  mode {i + 1}: weight {mode['weight']:.2f}: {shown}")
    rest = len(report["modes"]) - len(found)
    if rest:
        weight = 1.0 - sum(m["weight"] for m in found)
        lines.append(f"  and {rest} lighter mode{'s' if rest != 1 else ''}, total weight {weight:.3f} (listed by --json)")
    return "\n".join(lines)


def plot_prediction(observations, samples, names: Sequence[str], variables: Sequence[str], path,
                    title: str = "") -> Path:
    """Observational against predicted interventional samples, written as an image to ``path``.

    Two ``variables``: a scatter plot on their plane; one: overlaid histograms.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(names)
    unknown = [v for v in variables if v not in names]
    if unknown or not 1 <= len(variables) <= 2:
        raise ValueError(f"--plot-vars: give one or two of the variables {names}; got {list(variables)}")
    columns = [names.index(v) for v in variables]
    observations, samples = np.asarray(observations), np.asarray(samples)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    if len(columns) == 2:
        ax.scatter(*samples[:, columns].T, s=6, alpha=0.35, label="predicted (interventional)")
        ax.scatter(*observations[:, columns].T, s=8, alpha=0.7, label="observed (observational)")
        ax.set_xlabel(variables[0])
        ax.set_ylabel(variables[1])
    else:
        ax.hist(samples[:, columns[0]], bins=50, density=True, alpha=0.5, label="predicted (interventional)")
        ax.hist(observations[:, columns[0]], bins=30, density=True, alpha=0.5, label="observed (observational)")
        ax.set_xlabel(variables[0])
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_json(report: dict[str, Any], path) -> Path:
    """Write a :func:`prediction_report` as indented JSON."""
    path = Path(path)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path


def _targets(spec: str, columns: Sequence[str]) -> list:
    """``--target`` as names and indices (digits name a column only when no column has that name)."""
    targets = [t.strip() for t in spec.split(",")]
    return [int(t) if t.isascii() and t.isdigit() and t not in columns else t for t in targets]


def run_predict(args) -> dict[str, Any]:
    """``activa predict``: the prediction, its report on stdout, the samples CSV and optionally
    the ``--json`` record and the ``--plot`` image; returns the report.

    Out-of-training-range warnings are printed as ``activa: warning: …`` lines (and recorded in
    the report); with ``--strict`` they are errors (``ValueError``).
    """
    import warnings

    import pandas as pd

    from activa_ppl.csv_input import read_csv
    from activa_ppl.exported import open_model
    from activa_ppl.model_info import OutOfTrainingRangeWarning, intervention_index, intervention_values

    enable_compilation_cache()
    if args.value is not None and args.intervention is not None:
        raise ValueError("give the intervention as --value or as --intervention (its index), not both")
    frame = read_csv(args.data)
    fitted = open_model(args.model)  # a stored traced prediction when the cache has one
    targets = _targets(args.target, list(frame.columns))
    names = [frame.columns[t] if isinstance(t, int) and t < frame.shape[1] else t for t in targets]
    intervention = {n: args.value for n in names} if args.value is not None else (args.intervention or 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OutOfTrainingRangeWarning)
        mix = fitted.predict(frame, target=targets, intervention=intervention, seed=args.seed)
    problems = [str(w.message) for w in caught if issubclass(w.category, OutOfTrainingRangeWarning)]
    if problems and args.strict:
        raise ValueError(problems[0] + " (--strict)")
    index = intervention_index(intervention, intervention_values(fitted.config.to_dict(), fitted.info), names)
    report = prediction_report(mix, frame.to_numpy(np.float64), model=fitted.info.get("model_name", args.model),
                               targets=names, intervention_index=index, warnings=problems)
    samples = np.asarray(mix.sample(args.num_samples, args.seed))
    pd.DataFrame(samples, columns=list(mix.variable_names)).to_csv(args.out, index=False)
    for problem in problems:
        print(f"activa: warning: {problem}", file=sys.stderr)
    print(format_report(report))
    print(f"wrote {args.num_samples} samples to {args.out}")
    if args.json:
        print(f"wrote the report to {write_json(report, args.json)}")
    if args.plot:
        shown = args.plot_vars.split(",") if args.plot_vars else list(mix.variable_names)[:2]
        path = plot_prediction(frame.to_numpy(), samples, mix.variable_names, [v.strip() for v in shown],
                               args.plot, title=f"{report['model']}: {mix.intervention}")
        print(f"wrote the plot to {path}")
    return report
