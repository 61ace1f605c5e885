"""How far each method moves every variable's mean under the intervention, against the truth.

For every task of a split and every non-target variable j, in units of the observational
standard deviation of j:

* the true shift: the interventional samples' mean minus the observational mean;
* the predicted shift: the predicted mixture's mean minus the observational mean;
* the spread: the weighted mean distance of the mixture's component means from its mean (how
  much of the prediction is hedged across components rather than placed at one shift).

The variables are grouped by their relation to the target in the true graph (descendants,
ancestors, neither). Printed per method and group: the least-squares slope of the predicted on
the true shift through the origin (1: the right size; below 1: shrunk towards "no change"), the
mean absolute error, the mean |true| and |predicted| shift, and the spread. The energy distance
of the descendants is dominated by their mean (docs/ablations.md, round 12); this shows whether a
method's error there is a shrunk, a noisy or a wrong-signed shift.

Usage (from the repository root)::

    python benchmarks/mean_shift.py --dataset data/sergio8 --split valid --max-scms 100 \\
        --methods activa:sergio8,gaussian-conditional,linear-causal
"""

from __future__ import annotations

import argparse
import platform

import networkx as nx
import numpy as np

RELATIONS = ("descendants", "ancestors", "neither")


def relations(adjacency: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """``{relation: (Q, d) bool}`` for tasks with adjacency ``(Q, d, d)`` and targets ``(Q, d)``."""
    out = {name: np.zeros(targets.shape, bool) for name in RELATIONS}
    for q in range(len(targets)):
        graph = nx.DiGraph(adjacency[q])
        for t in np.flatnonzero(targets[q]):
            out["descendants"][q, list(nx.descendants(graph, int(t)))] = True
            out["ancestors"][q, list(nx.ancestors(graph, int(t)))] = True
    out["ancestors"] &= ~out["descendants"]
    out["neither"] = ~out["descendants"] & ~out["ancestors"] & (targets == 0)
    out["descendants"] &= targets == 0
    out["ancestors"] &= targets == 0
    return out


def shift_table(true: np.ndarray, predicted: np.ndarray, spread: np.ndarray, groups: dict) -> list[dict]:
    """One row per relation from ``(Q, d)`` true and predicted shifts and mixture spreads."""
    rows = []
    for name, mask in groups.items():
        x, y = true[mask], predicted[mask]
        rows.append(dict(relation=name, n=int(mask.sum()), slope=float((x * y).sum() / max((x * x).sum(), 1e-12)),
                         mae=float(np.abs(x - y).mean()), true=float(np.abs(x).mean()),
                         predicted=float(np.abs(y).mean()), spread=float(spread[mask].mean())))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, help="a dataset folder (activa simulate --out)")
    parser.add_argument("--split", default="valid", choices=("train", "valid", "test"))
    parser.add_argument("--max-scms", type=int, default=100)
    parser.add_argument("--methods", default="activa:sergio8,gaussian-conditional,linear-causal",
                        help="comma-separated predictor specs, as activa evaluate --methods takes")
    args = parser.parse_args(argv)

    from activa_ppl.dispatch import evaluation_runtime

    evaluation_runtime()
    import jax

    from activa_ppl.data import load_dataset
    from activa_ppl.evaluation import _select_scms
    from activa_ppl.predictors import predictor_from_spec

    dataset = load_dataset(args.dataset)
    tasks = _select_scms(dataset.tasks(args.split), args.max_scms)
    if len(tasks.scm) == 0:
        parser.error(f"split {args.split!r} of {args.dataset} has no tasks ({dataset!r}); choose another --split")
    obs_mean, obs_sd = tasks.observational.mean(1), tasks.observational.std(1)  # (Q, d)
    obs_sd = np.maximum(obs_sd, 1e-6)
    true = (tasks.interventional.mean(1) - obs_mean) / obs_sd
    groups = relations(np.asarray(dataset.adjacency[tasks.scm]), np.asarray(tasks.targets))
    print(f"{args.dataset}, {args.split} split, {len(np.unique(tasks.scm))} SCMs, {len(tasks.scm)} tasks; "
          f"{platform.machine()} {platform.system()}, jax {jax.__version__}")
    print("| method | relation | variables | slope | MAE | mean abs true shift | mean abs predicted shift | spread |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.methods.split(","):
        mixture = predictor_from_spec(spec)(tasks, dataset)
        weights, locs = np.asarray(mixture.weights), np.asarray(mixture.locs)  # (Q, K), (Q, K, d)
        mean = np.einsum("qk,qkd->qd", weights, locs)
        spread = np.einsum("qk,qkd->qd", weights, np.abs(locs - mean[:, None])) / obs_sd
        for row in shift_table(true, (mean - obs_mean) / obs_sd, spread, groups):
            print(f"| {spec} | {row['relation']} | {row['n']} | {row['slope']:.2f} | {row['mae']:.3f} | "
                  f"{row['true']:.3f} | {row['predicted']:.3f} | {row['spread']:.3f} |")


if __name__ == "__main__":
    main()
