#!/usr/bin/env python
"""Quality per CPU-minute: train named model variants on the same data and seed for the same
wall-clock budget, score each on held-out tasks, and draw their learning curves.

Every design choice of the model-quality work (decoder context, covariance head, learning-rate
schedule, sample subsets, size) is decided by this script; its table and figure go into
``docs/ablations.md``.

For each variant (``--variants``, names from :data:`VARIANTS`):

* **equal compute, measured side by side**: first every variant's compiled training step is
  timed in one process, interleaved (``--calibration-reps`` rounds of a ``--calibration-steps``
  chunk each, median), so the speed ratios do not depend on what else the machine runs; each
  variant then trains for ``budget / (its seconds per step)`` steps. Training itself is
  deterministic in steps, so the comparison survives a busy machine; only the absolute minutes
  scale with the load (the JSON records the calibration and the load average);
* **training**: :func:`activa_ppl.train` (or :func:`activa_ppl.train_mace_tnp` for the
  ``mace-tnp`` variant, whose cosine schedule spans exactly its steps) on the training split,
  validation NLL every ``--eval-every`` steps; each variant runs in its own process with its
  own resumable ``workdir`` under ``--out``, so a killed run continues where it stopped and a
  finished one is not retrained;
* **scoring**: the best-validation parameters on ``--eval-scms`` SCMs of ``--eval-split`` (the
  validation split by default: tune on validation, report on test): NLL and energy distance on
  All∖V_t, descendants and non-descendants, next to Gaussian Conditional on the same tasks;
* **learning curve**: validation NLL against compute (steps × measured seconds per step) and
  against steps.

Outputs in ``--out``: ``quality.json`` (every number, the machine, the command),
``quality.md`` (the table), ``learning_curves.png``, and each variant's per-task scores in
``<variant>/records.csv.gz`` (the columns of :func:`activa_ppl.evaluation.evaluate_tasks`; pair
two variants with ``python benchmarks/paired_records.py OUT/A/records.csv.gz
OUT/B/records.csv.gz --method A --method-b B``).

Usage::

    python benchmarks/bench_quality.py --data gauss8 --budget-s 600 --out runs/quality-gauss8
    python benchmarks/bench_quality.py --data gauss8 --variants paper-small,context --budget-s 60 \\
        --num-scms 400 --out /tmp/q                      # a quick look
    python benchmarks/bench_quality.py --quick --out /tmp/q   # smoke test (tiny, seconds)
    # the step-time ratio that gives two zoo trainings on a saved set the same compute
    python benchmarks/bench_quality.py --data-dir data/sergio8 --variants recipe,mace-tnp \
        --calibrate-only --calibration-reps 5 --out runs/quality-sergio8

Timings on a shared 2-core machine vary by ±30 % between runs, and two CPU-heavy jobs at once
each run at half speed: that is why the budget is converted to steps from speeds measured side
by side, in one process, at one time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_lib

#: name -> (ActivaConfig overrides, TrainConfig overrides), on top of the ``small`` preset with
#: standardized inputs. ``paper-small`` is Eq. 4 as written (the shipped 8-variable recipe).
VARIANTS: dict[str, tuple[dict, dict]] = {
    "paper-small": ({}, {}),
    "context": ({"decoder_context": True}, {}),
    "context-cholesky": ({"decoder_context": True, "covariance_head": "cholesky"}, {}),
    "context-cosine": ({"decoder_context": True},
                       {"lr_schedule": "warmup_cosine", "learning_rate": 1e-3, "warmup_steps": 200}),
    "context-subsample": ({"decoder_context": True}, {"samples_per_task": 32}),
    "context-noclip": ({"decoder_context": True}, {"clip_norm": None}),
    "context-lr1e-3": ({"decoder_context": True}, {"learning_rate": 1e-3}),
    "context-particles1": ({"decoder_context": True, "num_particles": 1}, {}),
    "context-batch64": ({"decoder_context": True}, {"batch_size": 64}),
    # Round 2: on top of the round-1 winner (context + 32-sample subsets).
    "cs-beta1": ({"decoder_context": True, "beta": 1.0}, {"samples_per_task": 32}),
    "cs-lr1e-3": ({"decoder_context": True}, {"samples_per_task": 32, "learning_rate": 1e-3}),
    "cs-particles1": ({"decoder_context": True, "num_particles": 1}, {"samples_per_task": 32}),
    "cs-mid": ({"decoder_context": True, "embed_dim": 64, "hidden_dim": 128, "covariance_rank": 32},
               {"samples_per_task": 32}),
    "cs-batch64": ({"decoder_context": True}, {"samples_per_task": 32, "batch_size": 64}),
    # The library's recommended recipe: _configs builds it with ActivaConfig.recommended and
    # TrainConfig.recommended(steps) (whose warm-up depends on the steps), so it stays the library's.
    "recipe": ({"ActivaConfig": "recommended"}, {"TrainConfig": "recommended"}),
    # Round 4 (2026-12-01), capacity where the descendants' effect is computed: the recipe with
    # K = 4 decoder blocks (the small preset: 2), or with L = 3 encoder blocks (2).
    "recipe-dec4": ({"ActivaConfig": "recommended", "num_decoder_blocks": 4}, {"TrainConfig": "recommended"}),
    "recipe-enc3": ({"ActivaConfig": "recommended", "num_encoder_blocks": 3}, {"TrainConfig": "recommended"}),
    # Round 5 (2026-12-01): the recipe whose decoder tokens also get the observational
    # regression's prediction under the query (ActivaConfig.regression_context).
    "recipe-reg": ({"ActivaConfig": "recommended", "regression_context": True}, {"TrainConfig": "recommended"}),
    # Round 6 (2026-12-01): the hybrid objective, the ELBO plus w times the prior-predictive
    # log-likelihood of the task's samples (ActivaConfig.predictive_weight).
    "recipe-pred1": ({"ActivaConfig": "recommended", "predictive_weight": 1.0}, {"TrainConfig": "recommended"}),
    "recipe-pred0.3": ({"ActivaConfig": "recommended", "predictive_weight": 0.3}, {"TrainConfig": "recommended"}),
    # ... with that term estimated once per step instead of in each ELBO particle
    # (ActivaConfig.predictive_estimate; the same objective, more variance, cheaper steps).
    "recipe-pred1-step": ({"ActivaConfig": "recommended", "predictive_weight": 1.0,
                           "predictive_estimate": "per_step"}, {"TrainConfig": "recommended"}),
    # Round 7 (2026-12-02): the recipe plus λ times the energy score of the prior-predictive
    # mixture against the task's samples (ActivaConfig.energy_weight), the scoring rule whose
    # divergence Table 1's energy distance is.
    "recipe-es1": ({"ActivaConfig": "recommended", "energy_weight": 1.0}, {"TrainConfig": "recommended"}),
    "recipe-es10": ({"ActivaConfig": "recommended", "energy_weight": 10.0}, {"TrainConfig": "recommended"}),
    "recipe-es30": ({"ActivaConfig": "recommended", "energy_weight": 30.0}, {"TrainConfig": "recommended"}),
    "recipe-es100": ({"ActivaConfig": "recommended", "energy_weight": 100.0}, {"TrainConfig": "recommended"}),
    # ... with the term estimated once per step instead of in each ELBO particle.
    "recipe-es10-step": ({"ActivaConfig": "recommended", "energy_weight": 10.0, "predictive_estimate": "per_step"},
                         {"TrainConfig": "recommended"}),
    # Round 9 (2026-12-02): round 5's regression features under the energy-score objective,
    # which charges for the mass a likelihood spreads between the regression's answer and the
    # unchanged marginal (round 5's suspected failure).
    "recipe-reg-es10": ({"ActivaConfig": "recommended", "regression_context": True, "energy_weight": 10.0},
                        {"TrainConfig": "recommended"}),
    # Round 10 (2026-12-02): the energy-score recipe with the intervened coordinates set exactly
    # (ActivaConfig.exact_targets): λ = 10 alone spread V_t to sd 0.75 (round 8's withdrawn gauss8).
    "recipe-es10-exact": ({"ActivaConfig": "recommended", "energy_weight": 10.0, "exact_targets": True},
                          {"TrainConfig": "recommended"}),
    # Round 11 (2026-12-03): round 10's model with round 5's regression features, for SERGIO,
    # where Gaussian Conditional (whose marginals the features are) leads on the descendants.
    "recipe-reg-es10-exact": ({"ActivaConfig": "recommended", "regression_context": True, "energy_weight": 10.0,
                               "exact_targets": True}, {"TrainConfig": "recommended"}),
    # Round 12 (2026-12-03): round 10's model whose decoded means get a gated copy of the
    # regression's conditional mean (ActivaConfig.regression_residual), for SERGIO's descendants.
    "recipe-resid-es10-exact": ({"ActivaConfig": "recommended", "regression_residual": True, "energy_weight": 10.0,
                                 "exact_targets": True}, {"TrainConfig": "recommended"}),
    # Round 13 (2026-12-03): cheaper steps for round 10's model on SERGIO, so that the same
    # compute buys more of them: the energy term estimated once per step, or one ELBO particle
    # (the paper: 4); and a larger energy weight.
    "recipe-es10-exact-step": ({"ActivaConfig": "recommended", "energy_weight": 10.0, "exact_targets": True,
                                "predictive_estimate": "per_step"}, {"TrainConfig": "recommended"}),
    "recipe-es10-exact-p1": ({"ActivaConfig": "recommended", "energy_weight": 10.0, "exact_targets": True,
                              "num_particles": 1}, {"TrainConfig": "recommended"}),
    "recipe-es30-exact": ({"ActivaConfig": "recommended", "energy_weight": 30.0, "exact_targets": True},
                          {"TrainConfig": "recommended"}),
    # Round 14 (2026-12-03): round 10's model with the 1-D marginals' energy scores added to the
    # energy term (ActivaConfig.marginal_energy_weight), which charge one variable's mean fully.
    "recipe-es10-m10-exact": ({"ActivaConfig": "recommended", "energy_weight": 10.0, "marginal_energy_weight": 10.0,
                               "exact_targets": True}, {"TrainConfig": "recommended"}),
    # Round 15 (2026-12-03): round 10's energy term measured in data units over one scale per task
    # (ActivaConfig.energy_scale="task"), the proportions in which Table 1's energy distance
    # weighs a task's variables, instead of z-scores, which weigh them alike.
    "recipe-es10-task-exact": ({"ActivaConfig": "recommended", "energy_weight": 10.0, "energy_scale": "task",
                                "exact_targets": True}, {"TrainConfig": "recommended"}),
    # ... and with round 12's gated regression residual: do the two descendants' gains add?
    "recipe-resid-es10-task-exact": ({"ActivaConfig": "recommended", "regression_residual": True,
                                      "energy_weight": 10.0, "energy_scale": "task", "exact_targets": True},
                                     {"TrainConfig": "recommended"}),
    "mace-tnp": ({}, {}),
}

#: name -> simulate.linear_dataset keyword arguments (the paper's sets, Appendix C.1).
DATASETS = {
    "gauss2": dict(num_vars=2, noise="gauss", num_samples=100),
    "beta2": dict(num_vars=2, noise="beta", num_samples=100),
    "gauss8": dict(num_vars=8, noise="gauss", num_samples=80),
    "beta8": dict(num_vars=8, noise="beta", num_samples=80),
}
MARGINALS = ("all_but_target", "descendants", "non_descendants")


def machine() -> dict:
    """The machine the numbers come from (:func:`bench_lib.machine.machine_info`)."""
    from bench_lib.machine import machine_info

    return machine_info()


def worker_env() -> dict:
    """The environment of a worker process: this checkout importable."""
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _dataset(args):
    import activa_ppl as ap

    if args.data_dir:
        return ap.load_dataset(args.data_dir)
    if args.quick:
        return ap.simulate.linear_dataset(num_scms=60, num_vars=2, num_samples=20, seed=args.data_seed)
    return ap.simulate.linear_dataset(num_scms=args.num_scms, seed=args.data_seed, **DATASETS[args.data])


def _summary(results: dict) -> dict:
    """``{marginal: {"nll", "energy", "nll_se", "energy_se"}}`` of one method's
    :func:`activa_ppl.evaluation.evaluate` table: the means and their standard errors."""
    return {m: {**{k: results[m][k]["mean"] for k in ("nll", "energy")},
                **{f"{k}_se": results[m][k]["se"] for k in ("nll", "energy")}}
            for m in MARGINALS if m in results}


def _configs(args, name: str, data, steps: int | None = None):
    """``(model config, training config)`` of variant ``name`` (MACE-TNP's or ACTIVA's) for
    ``steps`` training steps (``None``: ``--max-steps``)."""
    import activa_ppl as ap
    from activa_ppl.standardize import nominal_intervention_values

    preset = "tiny" if args.quick else args.preset
    if name == "mace-tnp":
        from activa_ppl.baselines.mace_tnp import MaceTnpTrainConfig

        return (ap.MaceTnpConfig.preset(preset, num_vars=data.num_vars),
                MaceTnpTrainConfig(num_steps=steps or args.max_steps, eval_every=args.eval_every, seed=args.seed))
    steps = steps or args.max_steps
    fields = dict(num_interventions=max(1, data.num_interventions), standardize=True,
                  intervention_values=nominal_intervention_values(data))
    model_over, train_over = VARIANTS[name]
    if model_over.get("ActivaConfig") == "recommended":  # the recipe, plus the variant's fields
        extra = {k: v for k, v in model_over.items() if k != "ActivaConfig"}
        return (ap.ActivaConfig.recommended(preset, **fields, **extra),
                ap.TrainConfig.recommended(steps, eval_every=args.eval_every, seed=args.seed))
    config = ap.ActivaConfig.preset(preset, **fields, **model_over)
    train_config = ap.TrainConfig(**{"num_steps": steps, "eval_every": args.eval_every,
                                     "seed": args.seed, **train_over})
    return config, train_config


def calibrate(args, names: list[str]) -> dict[str, float]:
    """Seconds per training step of every variant, timed side by side in this process: each
    variant's chunk of ``--calibration-steps`` steps is compiled, then all are timed in
    ``--calibration-reps`` interleaved rounds; the median of each."""
    import jax
    import numpy as np

    import activa_ppl as ap
    from activa_ppl import training
    from activa_ppl.baselines.mace_tnp import training as mace_training

    data = _dataset(args)
    k = args.calibration_steps
    runners = {}
    for name in names:
        config, train_config = _configs(args, name, data)
        train_config = dataclasses.replace(train_config, eval_every=k)
        if name == "mace-tnp":
            arrays = mace_training._task_arrays(data.tasks("train"), data)[:3]
            compiled = mace_training._chunk_function(config, train_config, arrays[0].shape[0])
            state = mace_training.init_state(config, train_config, arrays[0].shape[1])
            key = jax.random.PRNGKey(0)
            runners[name] = (lambda c=compiled, s=state, a=arrays, key=key:
                             c(s, np.int32(k), key, *a))
        else:
            arrays = training.task_arrays(data.tasks("train"))
            chunks = training.svi_chunks(ap.Activa(config), train_config, arrays[0].shape[0])
            state = chunks.init(*arrays)
            runners[name] = lambda c=chunks, s=state, a=arrays: c.run(k, s, *a)
        jax.block_until_ready(runners[name]())  # compile
    times = {name: [] for name in names}
    for _ in range(args.calibration_reps):
        for name in names:
            t0 = time.perf_counter()
            jax.block_until_ready(runners[name]())
            times[name].append((time.perf_counter() - t0) / k)
    return {name: float(np.median(t)) for name, t in times.items()}


def run_variant(args, name: str, steps: int) -> dict:
    """Train (or resume) variant ``name`` for ``steps`` steps and score it (a worker process)."""
    import jax

    import activa_ppl as ap
    from activa_ppl.evaluation import evaluate_tasks, summarize
    from activa_ppl.predictors import activa_predictor, gaussian_conditional_predictor, mace_tnp_predictor

    data = _dataset(args)
    workdir = Path(args.out) / name
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    config, train_config = _configs(args, name, data, steps)
    if name == "mace-tnp":
        fitted = ap.train_mace_tnp(config, data, config=train_config, workdir=workdir, progress=False)
        predictor = mace_tnp_predictor(fitted)
    else:
        fitted = ap.train(ap.Activa(config), data, config=train_config, workdir=workdir, progress=False)
        predictor = activa_predictor(fitted, seed=args.seed)
    wall = time.perf_counter() - t0
    records = evaluate_tasks(data, {name: predictor, "Gaussian Cond.": gaussian_conditional_predictor()},
                             split=args.eval_split, max_scms=args.eval_scms, seed=args.seed, progress=False)
    # per-task scores, for paired comparisons of two variants (benchmarks/paired_records.py)
    records.to_csv(workdir / "records.csv.gz", index=False)
    scores = summarize(records)
    curve = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {"variant": name, "overrides": VARIANTS[name] if name in VARIANTS else None,
            "steps": fitted.info["num_steps"], "best_step": fitted.info["best_step"],
            "best_valid_nll": fitted.info["best_valid_nll"], "train_wall_s": fitted.info["wall_time_s"],
            "process_wall_s": round(wall, 1), "load_at_start": load,
            "scores": _summary(scores[name]), "gaussian_conditional": _summary(scores["Gaussian Cond."]),
            "curve": [{k: r[k] for k in ("step", "valid_nll", "elapsed_s")} for r in curve],
            "jax_devices": str(jax.devices())}


def plot_curves(report: dict, path: Path) -> None:
    """Validation NLL against wall time and against steps, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    finals = sorted(row["curve"][-1]["valid_nll"] for row in report["variants"] if row["curve"])
    lowest = min(r["valid_nll"] for row in report["variants"] for r in row["curve"])
    # zoom on the leaders: up to twice the median final NLL (worse curves leave the top edge)
    top = 2 * finals[len(finals) // 2] if finals else None
    colors = plt.get_cmap("tab20").colors  # 20 distinct colours: beyond the default cycle's 10
    for i, row in enumerate(report["variants"]):
        steps = [r["step"] for r in row["curve"]]
        nll = [r["valid_nll"] for r in row["curve"]]
        minutes = [r["step"] * row["seconds_per_step"] / 60 for r in row["curve"]]
        style = {"label": row["variant"], "color": colors[(2 * i) % 20 + (2 * i) // 20 % 2],
                 "linestyle": "-" if i < 10 else "--"}
        axes[0].plot(minutes, nll, **style)
        axes[1].plot(steps, nll, **style)
    for ax, xlabel in zip(axes, ("compute: steps × measured s/step (min)", "steps")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation NLL per sample")
        ax.set_yscale("log")
        if top is not None:
            ax.set_ylim(0.95 * lowest, top)
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"{report['data']}: learning curves (budget {report['budget_s']:.0f} s per variant)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(report: dict) -> str:
    """Markdown: per variant, steps in budget and held-out NLL / energy distance per marginal
    (``mean ± standard error`` where the scores carry one)."""
    head = ["variant", "s/step", "steps", "best valid NLL"] + [f"{m} {k}" for m in MARGINALS for k in ("NLL", "ERG")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(score: dict, k: str) -> str:
        se = score.get(f"{k}_se")
        return f"{score[k]:.2f}" + ("" if se is None else f" ± {se:.2f}")

    def cells(scores):
        return [cell(scores[m], k) if m in scores else "—" for m in MARGINALS for k in ("nll", "energy")]

    for row in report["variants"]:
        lines.append("| " + " | ".join([row["variant"], f"{row['seconds_per_step']:.3f}", str(row["steps"]),
                                        f"{row['best_valid_nll']:.2f}"]
                                       + cells(row["scores"])) + " |")
    if report["variants"]:
        lines.append("| " + " | ".join(["Gaussian Cond.", "", "", ""] + cells(report["variants"][0]["gaussian_conditional"]))
                     + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=sorted(DATASETS), default="gauss8", help="dataset (default gauss8)")
    p.add_argument("--data-dir", help="a dataset folder written by `activa simulate` or "
                   "inference/simulate_sergio.py (e.g. data/sergio8), used instead of simulating "
                   "--data (default: none)")
    p.add_argument("--num-scms", type=int, default=6000, help="SCMs simulated (default 6000)")
    p.add_argument("--data-seed", type=int, default=0, help="simulation seed (default 0)")
    p.add_argument("--variants", default="paper-small,context,mace-tnp",
                   help=f"comma-separated, from: {', '.join(VARIANTS)} (default: %(default)s)")
    p.add_argument("--preset", default="small", help="architecture preset of every variant (default small)")
    p.add_argument("--budget-s", type=float, default=600.0,
                   help="compute per variant: seconds at its measured speed (default 600)")
    p.add_argument("--max-steps", type=int, default=100000, help="step cap (default 100000)")
    p.add_argument("--calibration-steps", type=int, default=20, help="steps per timed chunk (default 20)")
    p.add_argument("--calibration-reps", type=int, default=3, help="interleaved timing rounds (default 3)")
    p.add_argument("--eval-every", type=int, default=100, help="steps between validations (default 100)")
    p.add_argument("--eval-split", choices=["valid", "test"], default="valid",
                   help="split scored after training (default valid; report on test)")
    p.add_argument("--eval-scms", type=int, default=100, help="SCMs scored (default 100)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--out", required=True, help="output folder (workdirs, JSON, table, figure)")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny data, tiny preset, 2 s budgets")
    p.add_argument("--calibrate-only", action="store_true",
                   help="time the variants side by side, write calibration.json and stop (the step "
                   "ratios that give two long trainings the same compute)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-steps", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.budget_s, args.eval_every, args.eval_scms, args.max_steps = 2.0, 5, 3, 40
        args.calibration_steps, args.calibration_reps = 2, 1
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        result = run_variant(args, args.worker, args.worker_steps)
        (out / args.worker / "result.json").write_text(json.dumps(result, indent=1) + "\n")
        return 0
    report = {"command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
              "data": args.data_dir or args.data,
              "num_scms": args.num_scms, "budget_s": args.budget_s, "eval_split": args.eval_split,
              "eval_scms": args.eval_scms, "preset": args.preset, "machine": machine(), "variants": []}
    names = args.variants.split(",")
    report["load_at_calibration"] = os.getloadavg()[0]
    calibration_file = out / "calibration.json"
    seconds = json.loads(calibration_file.read_text()) if calibration_file.exists() else {}
    missing = [n for n in names if n not in seconds]  # a resumed comparison keeps its step counts
    if missing:
        # New variants are timed beside one already-timed reference, and put on the cached scale
        # by the reference's ratio, so every step budget stays a side-by-side measurement.
        reference = next(iter(seconds), None)
        print(f"[bench_quality] timing {len(missing)} variants side by side"
              f"{f' with the reference {reference}' if reference else ''} ...", flush=True)
        timed = calibrate(args, missing + ([reference] if reference else []))
        scale = seconds[reference] / timed[reference] if reference else 1.0
        seconds.update({n: timed[n] * scale for n in missing})
        calibration_file.write_text(json.dumps(seconds, indent=1) + "\n")
    report["seconds_per_step"] = seconds
    if args.calibrate_only:
        for name in names:
            print(f"{name}: {seconds[name]:.4f} s/step ({seconds[name] / seconds[names[0]]:.3f}x {names[0]})")
        print(f"wrote {calibration_file}")
        return 0
    for name in names:
        steps = max(args.eval_every, min(args.max_steps, int(args.budget_s / seconds[name])))
        result_file = out / name / "result.json"
        if result_file.exists() and json.loads(result_file.read_text())["steps"] == steps:
            print(f"[bench_quality] {name}: done before, {result_file}", flush=True)
        else:
            print(f"[bench_quality] {name}: {seconds[name]:.3f} s/step -> {steps} steps ...", flush=True)
            cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]), "--worker", name,
                   "--worker-steps", str(steps)]
            subprocess.run(cmd, check=True, env=worker_env())
        row = json.loads(result_file.read_text())
        row["seconds_per_step"] = seconds[name]
        report["variants"].append(row)
        print(f"[bench_quality] {name}: {row['steps']} steps, best valid NLL {row['best_valid_nll']:.3f}, "
              f"All-but-target ERG {row['scores']['all_but_target']['energy']:.3f} "
              f"(GC {row['gaussian_conditional']['all_but_target']['energy']:.3f})", flush=True)
    (out / "quality.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "quality.md").write_text(format_table(report) + "\n")
    plot_curves(report, out / "learning_curves.png")
    print(format_table(report))
    print(f"wrote {out / 'quality.json'}, {out / 'quality.md'}, {out / 'learning_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
