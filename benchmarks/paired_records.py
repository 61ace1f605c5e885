"""Paired per-task comparison of one method's scores in two evaluation runs.

Two models scored on the same tasks (e.g. a candidate and the shipped zoo model, each by its own
``activa evaluate`` run, since one run takes one ACTIVA method) differ per task much less than
their means' standard errors suggest: the tasks' difficulty is shared. This script pairs the two
runs' ``records.csv.gz`` rows by (SCM, query) and prints, per marginal and metric, the mean
difference B − A with its standard error clustered by SCM (as ``activa_ppl.evaluation``'s
``"task"`` averaging does), and the share of tasks on which B is lower (better).

Usage (from the repository root)::

    python benchmarks/paired_records.py runs/eval-gauss8-shipped/records.csv.gz \\
        runs/eval-gauss8-dec4/records.csv.gz [--method ACTIVA] [--method-b ACTIVA]
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from activa_ppl.evaluation import summarize

MARGINALS = ("all_but_target", "descendants", "non_descendants")
METRICS = ("energy", "nll")


def paired_differences(a: pd.DataFrame, b: pd.DataFrame, method_a: str, method_b: str) -> list[dict]:
    """One row per (marginal, metric): ``n`` paired tasks, ``mean`` and ``se`` of B − A (se
    clustered by SCM: :func:`activa_ppl.evaluation.summarize`'s task averaging applied to the
    differences), and ``b_better``, the share of tasks where B's score is lower."""
    keys = ["scm", "query", "marginal", "metric"]

    def values(frame, method):
        return frame[frame.method == method].set_index(keys).value

    diff = (values(b, method_b) - values(a, method_a)).dropna().rename("value").reset_index()
    summary = summarize(diff.assign(method="B − A")).get("B − A", {})
    rows = []
    for marginal in MARGINALS:
        for metric in METRICS:
            entry = summary.get(marginal, {}).get(metric)
            if entry is None:
                continue
            part = diff.value[(diff.marginal == marginal) & (diff.metric == metric)]
            rows.append(dict(marginal=marginal, metric=metric, n=entry["n"], mean=entry["mean"],
                             se=entry["se"], b_better=float((part < 0).mean())))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="records.csv.gz of run A (the reference)")
    parser.add_argument("b", help="records.csv.gz of run B (the candidate)")
    parser.add_argument("--method", default="ACTIVA", help="method label in run A (default: ACTIVA)")
    parser.add_argument("--method-b", help="method label in run B (default: --method)")
    args = parser.parse_args(argv)
    a, b = pd.read_csv(args.a), pd.read_csv(args.b)
    rows = paired_differences(a, b, args.method, args.method_b or args.method)
    if not rows:
        print("no paired tasks: do the runs score the same split, SCMs and method?", file=sys.stderr)
        return 1
    print(f"B − A per task, paired by (SCM, query); A = {args.a}, B = {args.b}")
    print("| marginal | metric | tasks | mean B − A | s.e. | B lower on |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['marginal']} | {r['metric']} | {r['n']} | {r['mean']:+.3f} | {r['se']:.3f} | "
              f"{100 * r['b_better']:.0f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
