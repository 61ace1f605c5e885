#!/usr/bin/env python
"""How many latent draws the predictive mixture needs: score one trained variant of
``bench_quality.py`` with S = 10, 50, 100, ... prior draws (``num_predictive_latents``).

ACTIVA's prediction is a Monte-Carlo mixture, (1/S) Σ_s p_γ(V | z_s, ·) with z_s drawn from the
conditional GMM prior; the paper uses S = 10. With few draws the mixture is a noisy, too-narrow
approximation of the model's own predictive distribution, and the NLL pays for the mismatch.
This script measures the effect on the same parameters, data and queries, so the only change is S.

It reuses the workdir of a finished ``bench_quality.py`` run (same ``--data``, ``--num-scms``,
``--out`` and variant; the training resumes from its checkpoint and does not run again) and
writes ``latents-<variant>.json`` next to it.

Usage::

    python benchmarks/bench_quality.py --data gauss8 --num-scms 6000 --budget-s 660 \\
        --variants context-subsample --out runs/quality-gauss8
    python benchmarks/bench_latents.py --data gauss8 --num-scms 6000 --variant context-subsample \\
        --latents 10,50,100,200 --out runs/quality-gauss8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_quality  # noqa: E402  (the harness this script extends)

#: Prefix of the line on which a worker prints its scores.
WORKER_TAG = "BENCH_LATENTS "


def score_latents(args) -> dict:
    """``{S: {marginal: {"nll", "energy"}}}`` of the variant's best parameters for every S."""
    import activa_ppl as ap
    from activa_ppl.evaluation import evaluate
    from activa_ppl.fitted import FittedActiva
    from activa_ppl.predictors import activa_predictor

    quality = bench_quality.parse_args(["--data", args.data, "--num-scms", str(args.num_scms),
                                        "--out", args.out, "--variants", args.variant]
                                       + (["--quick"] if args.quick else []))
    result = json.loads((Path(args.out) / args.variant / "result.json").read_text())
    data = bench_quality._dataset(quality)
    config, train_config = bench_quality._configs(quality, args.variant, data)
    train_config = dataclasses.replace(train_config, num_steps=result["steps"])
    fitted = ap.train(ap.Activa(config), data, config=train_config, workdir=Path(args.out) / args.variant,
                      progress=False)  # resumes the finished run: no training step
    scores = {}
    for num_latents in (int(s) for s in args.latents.split(",")):
        model = ap.Activa(dataclasses.replace(config, num_predictive_latents=num_latents))
        predictor = activa_predictor(FittedActiva(activa=model, params=fitted.params, info=fitted.info),
                                     seed=args.seed)
        table = evaluate(data, {"ACTIVA": predictor}, split=args.eval_split, max_scms=args.eval_scms,
                         seed=args.seed, progress=False)
        scores[str(num_latents)] = bench_quality._summary(table["ACTIVA"])
    return scores


def format_table(scores: dict) -> str:
    """A Markdown table: one row per S, NLL and energy distance per marginal."""
    marginals = [m for m in bench_quality.MARGINALS if m in next(iter(scores.values()))]
    head = "| S | " + " | ".join(f"{m} NLL | {m} ERG" for m in marginals) + " |"
    rows = [head, "|" + "---|" * (1 + 2 * len(marginals))]
    for num_latents, cells in scores.items():
        rows.append(f"| {num_latents} | " + " | ".join(f"{cells[m]['nll']:.2f} | {cells[m]['energy']:.2f}"
                                                       for m in marginals) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    from activa_ppl.dispatch import evaluation_runtime  # an intermittent XLA hang (activa_ppl.dispatch)

    evaluation_runtime()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=sorted(bench_quality.DATASETS), default="gauss8",
                   help="dataset of the bench_quality run (default gauss8)")
    p.add_argument("--num-scms", type=int, default=6000, help="SCMs of the bench_quality run (default 6000)")
    p.add_argument("--variant", required=True, help="an ACTIVA variant the bench_quality run trained")
    p.add_argument("--latents", default="10,50,100", help="comma-separated S values (default: %(default)s)")
    p.add_argument("--eval-split", choices=["valid", "test"], default="valid", help="split scored (default valid)")
    p.add_argument("--eval-scms", type=int, default=100, help="SCMs scored (default 100)")
    p.add_argument("--seed", type=int, default=0, help="prediction seed (default 0)")
    p.add_argument("--out", required=True, help="the bench_quality output folder")
    p.add_argument("--quick", action="store_true", help="for a `bench_quality.py --quick` run (smoke test)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.eval_scms = 3
    if args.variant == "mace-tnp" or args.variant not in bench_quality.VARIANTS:
        p.error(f"--variant must be an ACTIVA variant of bench_quality.py, got {args.variant!r}")
    if args.worker:
        print(WORKER_TAG + json.dumps(score_latents(args)), flush=True)
        return 0
    scores = {}
    for num_latents in args.latents.split(","):
        # One process per S: a process that scored one S and compiled the scoring step for a
        # second mixture size sometimes hung inside XLA (every thread idle; activa_ppl.dispatch).
        cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--worker",
               "--latents", num_latents]
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=bench_quality.worker_env())
        line = next(x for x in proc.stdout.splitlines() if x.startswith(WORKER_TAG))
        scores.update(json.loads(line[len(WORKER_TAG):]))
        cells = ", ".join(f"{m} NLL {v['nll']:.3f} ERG {v['energy']:.3f}" for m, v in scores[num_latents].items())
        print(f"[bench_latents] S = {num_latents}: {cells}", flush=True)
    report = {"variant": args.variant, "data": args.data, "eval_split": args.eval_split,
              "eval_scms": args.eval_scms, "machine": bench_quality.machine(), "scores": scores}
    path = Path(args.out) / f"latents-{args.variant}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    path.with_suffix(".md").write_text(format_table(report["scores"]) + "\n")
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
