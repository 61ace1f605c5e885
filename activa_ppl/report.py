"""Table 1, Figure 3 and Figure 4 of the paper for any set of predictors and datasets.

:func:`run_evaluation` is what ``activa evaluate`` runs: for each
dataset it evaluates every method on the test split (:mod:`activa_ppl.evaluation`), draws a
Figure 3-style sample plot, and finally writes

* ``table1.md``: the Table 1 layout (ERG and NLL on All, All∖V_t, Descendants, Non-descendants;
  best per dataset in bold, second best in italics; "—" where a method does not predict V_t),
  followed by the ATE MAE table behind Figure 4;
* ``results.json``: the same numbers with standard errors and counts, the machine, the command
  options and each method's privileged information (format below);
* ``records.csv.gz``: every per-task score (columns of :func:`activa_ppl.evaluation.evaluate_tasks`
  plus ``dataset``), for re-averaging or significance tests;
* ``figure3-<dataset>.png`` and ``figure4.png``.

``results.json`` layout::

    {"format": "activa_ppl.evaluation", "format_version": 1, "machine": ..., "split": "test",
     "average": "task", "seed": 0, "max_scms": null,
     "datasets": [{"label": "Gauss 2", "path": ..., "num_scms": 300, "num_tasks": 600,
                   "metadata": {...},
                   "methods": [{"spec": "linear-causal", "label": "Linear Causal (O)",
                                "privileged": ["true graph", "intervention value"],
                                "seconds": 1.2,
                                "results": {marginal: {metric: {"mean", "se", "n", ...}}}}]}]}
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from activa_ppl.data import InterventionalDataset, load_dataset
from activa_ppl.evaluation import evaluate_tasks, summarize
from activa_ppl.predictors import Predictor, predictor_from_spec

__all__ = [
    "COLUMNS",
    "DatasetSpec",
    "dataset_label",
    "format_ate_table",
    "format_legend",
    "format_table",
    "format_table1",
    "machine_description",
    "parse_dataset_spec",
    "run_evaluation",
    "write_json",
    "write_report_files",
]

#: (marginal, column title) in Table 1 order.
COLUMNS = (("all", "All"), ("all_but_target", "All∖V_t"), ("descendants", "Desc."),
           ("non_descendants", "Non-desc."))


def machine_description() -> str:
    """One line naming the machine the numbers were measured on."""
    import jax

    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    return (f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, "
            f"Python {platform.python_version()}, jax {jax.__version__} on {devices}")


def dataset_label(dataset: InterventionalDataset, fallback: str = "data") -> str:
    """The paper's name of a dataset from its metadata: "Gauss 2", "Beta 8", "SERGIO 8" …"""
    meta = dataset.metadata
    if meta.get("generator") == "linear" and meta.get("noise") in ("gauss", "beta"):
        return f"{meta['noise'].capitalize()} {dataset.num_vars}"
    if meta.get("generator") == "sergio":
        return f"SERGIO {dataset.num_vars}"
    if meta.get("generator") == "ambiguous":
        return "Ambiguous 2"
    return fallback


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset to evaluate: ``path`` (a folder of :meth:`InterventionalDataset.save`), an
    optional table ``label``, an optional per-dataset model, which replaces a ``{model}``
    placeholder in method specs (e.g. ``activa:{model}``), and optional ``methods`` that replace
    the method list of :func:`run_evaluation` for this dataset."""

    path: str
    label: str | None = None
    model: str | None = None
    methods: tuple[str, ...] | None = None


def parse_dataset_spec(text: str) -> DatasetSpec:
    """Parse ``[LABEL=]PATH[@MODEL]``, e.g. ``"Gauss 2=data/gauss2@models/gauss2"``."""
    label, sep, rest = text.partition("=")
    if not sep:
        label, rest = None, text
    path, _, model = rest.partition("@")
    if not path.strip():
        raise ValueError(f"empty dataset path in {text!r}; expected [LABEL=]PATH[@MODEL]")
    return DatasetSpec(path.strip(), (label or "").strip() or None, model.strip() or None)


def _cell(entry: dict | None, style: str = "") -> str:
    if entry is None:
        return "—"
    text = f"{entry['mean']:.2f} ± {entry['se']:.2f}" if np.isfinite(entry["se"]) else f"{entry['mean']:.2f}"
    return {"best": f"**{text}**", "second": f"*{text}*"}.get(style, text)


def _ranks(rows: list[dict], marginal: str, metric: str) -> dict[int, str]:
    """Row index → "best"/"second" for the lowest and second-lowest rounded means."""
    means = [(round(r["results"][marginal][metric]["mean"], 2), i) for i, r in enumerate(rows)
             if metric in r["results"].get(marginal, {})]
    if len(means) < 2:
        return {}
    values = sorted({m for m, _ in means})
    styles = {}
    for m, i in means:
        if m == values[0]:
            styles[i] = "best"
        elif len(values) > 1 and m == values[1]:
            styles[i] = "second"
    return styles


def format_table1(report: dict, metrics=(("energy", "ERG"), ("nll", "NLL")), columns=COLUMNS) -> str:
    """Markdown Table 1 of a :func:`run_evaluation` report: mean ± s.e. per cell, best per
    dataset and column in bold, second best in italics (ties share the style)."""
    header = "| Data | Approach | " + " | ".join(f"{title} {name} ↓" for _, title in columns
                                               for _, name in metrics) + " |"
    lines = [header, "|" + "---|" * (2 + len(columns) * len(metrics))]
    for ds in report["datasets"]:
        rows = ds["methods"]
        styles = {(m, k): _ranks(rows, m, k) for m, _ in columns for k, _ in metrics}
        for i, row in enumerate(rows):
            cells = [_cell(row["results"].get(m, {}).get(k), styles[(m, k)].get(i, ""))
                     for m, _ in columns for k, _ in metrics]
            data = ds["label"] if i == 0 else ""
            lines.append(f"| {data} | {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_ate_table(report: dict) -> str:
    """Markdown table of the ATE mean absolute error (the numbers behind Figure 4)."""
    columns = tuple(c for c in COLUMNS if c[0] != "all")
    return format_table1(report, metrics=(("ate_mae", "ATE MAE"),), columns=columns)


def format_table(results: dict, label: str = "") -> str:
    """Table 1 layout of one dataset's :func:`activa_ppl.evaluation.evaluate` results."""
    rows = [{"label": method, "results": table} for method, table in results.items()]
    return format_table1({"datasets": [{"label": label, "methods": rows}]})


def format_legend(report: dict) -> str:
    """One paragraph under Table 1: each method's privileged information and how cells average."""
    seen: dict[str, list[str]] = {}
    for ds in report["datasets"]:
        for row in ds["methods"]:
            seen.setdefault(row["method"], row["privileged"])
    parts = [f"{label} uses the {' and the '.join(p)}" if p else f"{label} uses only the "
             "observational data and the intervention index" for label, p in seen.items()]
    average = ("averaged per task, s.e. clustered by SCM" if report["average"] == "task"
               else "averaged per SCM")
    return ("Privileged information: " + "; ".join(parts) + ". (O): asymptotic oracle (correctly "
            "specified on linear-Gaussian data); (PI): privileged information. Lower is better; "
            f"mean ± standard error over the {report['split']} split ({average}).")


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented JSON (numpy scalars and arrays become numbers and lists)."""
    def default(o):
        if isinstance(o, (np.floating, np.integer)):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"not JSON serializable: {type(o).__name__}")

    path.write_text(json.dumps(obj, indent=1, default=default, allow_nan=True) + "\n")


def run_evaluation(datasets: list[DatasetSpec | str], methods: list[str], out_dir, split: str = "test",
                   seed: int = 0, max_scms: int | None = None, average: str = "task",
                   figure_scms: int = 4, progress: bool = True) -> dict:
    """Evaluate ``methods`` on each dataset and write Table 1, Figures 3 and 4 to ``out_dir``.

    Args:
        datasets: :class:`DatasetSpec` or ``"[LABEL=]PATH[@MODEL]"`` strings.
        methods: method specs for :func:`activa_ppl.predictors.predictor_from_spec`, e.g.
            ``["activa:{model}", "gaussian-conditional", "linear-causal"]``; ``{model}`` is
            replaced by the dataset's ``MODEL``.
        out_dir: output folder (created).
        split: which split to score (the paper uses ``"test"``).
        seed: seed of predicted samples and of the SCMs shown in Figure 3.
        max_scms: score only the first ``max_scms`` SCMs of the split of each dataset.
        average: ``"task"`` or ``"scm"``, see :mod:`activa_ppl.evaluation`.
        figure_scms: SCMs per Figure 3 (chosen at random from the split, as in the paper); 0
            skips the figure.
        progress: progress bars over SCMs.

    Returns:
        The report dict that is also written to ``results.json``.
    """
    from activa_ppl.plotting import plot_interventional_samples

    if not datasets:
        raise ValueError("no dataset given")
    if not methods and not all(isinstance(d, DatasetSpec) and d.methods for d in datasets):
        raise ValueError("no method given")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"format": "activa_ppl.evaluation", "format_version": 1,
              "machine": machine_description(), "split": split, "average": average, "seed": seed,
              "max_scms": max_scms, "methods": list(methods), "datasets": []}
    all_records = []
    for spec in datasets:
        spec = parse_dataset_spec(spec) if isinstance(spec, str) else spec
        dataset = load_dataset(spec.path)
        label = spec.label or dataset_label(dataset, fallback=Path(spec.path).name)
        predictors: dict[str, Predictor] = {}
        specs: dict[str, str] = {}
        for method in spec.methods or methods:
            if "{model}" in method:
                if spec.model is None:
                    raise ValueError(f"method {method!r} needs a model for dataset {spec.path!r}; "
                                     "give it as PATH@MODEL")
                method = method.replace("{model}", spec.model)
            predictor = predictor_from_spec(method, seed=seed)
            name = predictor.label_for(dataset)
            if name in predictors:
                raise ValueError(f"two methods are labelled {name!r} on {label}")
            predictors[name], specs[name] = predictor, method
        entry = {"label": label, "path": str(spec.path), "metadata": dict(dataset.metadata), "methods": []}
        for name, predictor in predictors.items():
            t0 = time.perf_counter()
            records = evaluate_tasks(dataset, {name: predictor}, split=split, seed=seed,
                                     max_scms=max_scms, progress=progress)
            seconds = time.perf_counter() - t0
            entry["num_scms"] = int(records["scm"].nunique())
            entry["num_tasks"] = int(records[["scm", "query"]].drop_duplicates().shape[0])
            entry["methods"].append({"spec": specs[name], "label": name, "method": predictor.label,
                                     "privileged": list(predictor.privileged),
                                     "seconds": round(seconds, 2),
                                     "results": summarize(records, average=average)[name]})
            all_records.append(records.assign(dataset=label))
            if progress:
                print(f"{label}: {name} evaluated in {seconds:.1f} s")
        report["datasets"].append(entry)
        if figure_scms > 0 and dataset.num_vars >= 2:
            scms = np.flatnonzero(np.isin(np.arange(dataset.num_scms), dataset.tasks(split).scm))
            chosen = np.sort(np.random.default_rng(seed).choice(scms, size=min(figure_scms, len(scms)),
                                                                replace=False))
            slug = re.sub(r"[^a-z0-9]+", "", label.lower()) or "data"
            entry["figure3"] = f"figure3-{slug}.png"
            entry["figure3_scms"] = chosen.tolist()
            plot_interventional_samples(dataset, chosen, predictors, out / entry["figure3"], seed=seed,
                                        title=f"{label}: samples projected on "
                                              f"({dataset.variable_names[0]}, {dataset.variable_names[1]})")
    write_report_files(report, pd.concat(all_records), out)
    return report


def write_report_files(report: dict, records: pd.DataFrame, out_dir) -> None:
    """Write a report of :func:`run_evaluation` to ``out_dir``: ``figure4.png``, ``table1.md``,
    ``results.json`` and ``records.csv.gz`` (the per-task ``records``, column ``dataset``
    added); the Figure 3 files of its datasets are expected there already."""
    from activa_ppl.plotting import plot_ate_errors

    out = Path(out_dir)
    plot_ate_errors(report, out / "figure4.png")
    report["figure4"] = "figure4.png"
    text = ["# Evaluation", "", f"Machine: {report['machine']}.", "",
            "## Table 1: energy distance (ERG) and negative log-likelihood (NLL)", "",
            format_table1(report), "", format_legend(report), "",
            "## ATE mean absolute error (Figure 4)", "", format_ate_table(report), "",
            "![Figure 4](figure4.png)", ""]
    for ds in report["datasets"]:
        if "figure3" in ds:
            text += [f"![Figure 3, {ds['label']}]({ds['figure3']})", ""]
    (out / "table1.md").write_text("\n".join(text))
    write_json(out / "results.json", report)
    records.to_csv(out / "records.csv.gz", index=False)

