"""``activa demo``: simulate Gauss 2, train a small ACTIVA, compare with Gaussian Conditional."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from activa_ppl.config import ActivaConfig, TrainConfig
from activa_ppl.evaluation import evaluate
from activa_ppl.predictors import activa_predictor, gaussian_conditional_predictor, linear_causal_predictor
from activa_ppl.model import Activa
from activa_ppl.plotting import plot_interventional_samples
from activa_ppl.report import format_table, machine_description
from activa_ppl.simulate import linear_dataset
from activa_ppl.training import train

__all__ = ["run_demo"]


def run_demo(out_dir="activa-demo", num_steps: int = 1200, num_scms: int = 3000, seed: int = 0,
             preset: str = "small", eval_scms: int = 150, progress: bool = True,
             paper_model: bool = False) -> dict:
    """Simulate the Gauss 2 set, train ACTIVA, evaluate it against the baselines, plot.

    The model is the recommended recipe (:meth:`ActivaConfig.recommended` and
    :meth:`TrainConfig.recommended` at ``preset``); ``paper_model=True`` trains Eq. 4 as written
    instead (:meth:`ActivaConfig.preset`, the paper's constant learning rate and β = 0.5).

    Writes ``out_dir/model`` (the trained model), ``out_dir/results.json``,
    ``out_dir/results.md`` and ``out_dir/demo.png``; returns the results dict.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = linear_dataset(num_scms=num_scms, num_vars=2, noise="gauss", num_samples=100, seed=seed)
    print(f"simulated {data!r} in {time.perf_counter() - t0:.1f} s")
    eval_every = min(200, num_steps)
    if paper_model:
        model = Activa(ActivaConfig.preset(preset))
        train_config = TrainConfig(num_steps=num_steps, seed=seed, eval_every=eval_every)
    else:
        model = Activa(ActivaConfig.recommended(preset))
        train_config = TrainConfig.recommended(num_steps, seed=seed, eval_every=eval_every)
    t0 = time.perf_counter()
    fitted = train(model, data, config=train_config, workdir=out / "run", resume=False, progress=progress)
    train_s = time.perf_counter() - t0
    print(f"trained {num_steps} steps in {train_s:.0f} s; best validation NLL "
          f"{fitted.info['best_valid_nll']:.3f} at step {fitted.info['best_step']}")
    fitted.save(out / "model")
    predictors = {p.label_for(data): p for p in (activa_predictor(fitted, seed=seed),
                                                     gaussian_conditional_predictor(),
                                                     linear_causal_predictor())}
    results = evaluate(data, predictors, split="test", seed=seed, max_scms=eval_scms, progress=progress)
    table = format_table(results, label="Gauss 2")
    test_scms = np.flatnonzero(data.split == 2)
    png = plot_interventional_samples(data, test_scms[:4], predictors, out / "demo.png", seed=seed)
    summary = {
        "machine": machine_description(),
        "train_seconds": round(train_s, 1), "num_steps": num_steps, "preset": preset,
        "model": "paper (Eq. 4)" if paper_model else "recommended recipe",
        "eval_scms": int(min(eval_scms, len(test_scms))), "results": results,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text(table + "\n")
    print("\nTest split of Gauss 2 (mean ± s.e., tasks averaged, s.e. clustered by SCM; lower is better):")
    print(table)
    a, g = results["ACTIVA"], results["Gaussian Cond."]
    if "non_descendants" in a and "non_descendants" in g:
        ratio = g["non_descendants"]["energy"]["mean"] / max(a["non_descendants"]["energy"]["mean"], 1e-12)
        print(f"\nNon-descendants: ACTIVA's energy distance is {ratio:.1f}x below Gaussian Conditional's "
              "(the spurious effect of conditioning instead of intervening).")
    print(f"figure: {png}\nmodel:  {out / 'model'}")
    return summary
