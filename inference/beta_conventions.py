"""Which Beta-noise convention reproduces the paper's Beta 2 baseline rows? (docs/results.md)

Re-samples the test SCMs of the Beta 2 set (same graphs, weights and Beta parameters as
``linear_dataset(num_scms=3000, num_vars=2, noise="beta", seed=0)``) under variants of the
noise and intervention conventions, and prints Linear Causal and Gaussian Conditional
ERG / NLL on All∖V_t, Descendants and Non-descendants next to the paper's Table 1:

* ``ours``: eps ~ Beta(a, b) uncentred, do(V_i = 5 + N(0, 0.1)) with 0.1 a standard deviation;
* ``centred``: eps - E[eps];
* ``scaled x2``: 2 eps;
* ``jitter var 0.1``: the intervention jitter N(0, 0.1) read as a variance (std 0.316).

    python inference/beta_conventions.py
"""

from __future__ import annotations

if __name__ == "__main__":  # glibc's huge-page allocator, set before JAX loads (ACTIVA_NO_HUGETLB=1: off)
    from activa_ppl.allocator import apply_hugetlb

    apply_hugetlb()

import dataclasses

import numpy as np

import activa_ppl as ap
from activa_ppl.evaluation import evaluate
from activa_ppl.predictors import gaussian_conditional_predictor, linear_causal_predictor

PAPER = "LC 0.16/0.82 0.31/1.44 0.01/0.19 | GC 2.00/37.8 0.31/1.43 3.69/74.14"


def resample(base, noise, jitter=0.1, value=5.0, seed=1):
    """Copy of ``base`` whose test SCMs are re-sampled with ``noise(rng, s, shape)``."""
    rng = np.random.default_rng(seed)
    weights, d = base.extras["weights"], base.num_vars
    obs = np.zeros_like(base.observational)
    inter = np.zeros_like(base.interventional)
    for s in np.flatnonzero(base.split == 2):
        obs[s] = noise(rng, s, obs.shape[1:]) @ np.linalg.inv(np.eye(d) - weights[s])
        for i in range(d):
            cut = weights[s].copy()
            cut[:, i] = 0.0  # graph surgery: V_i loses its parents
            eps = noise(rng, s, inter.shape[2:])
            eps[:, i] = value + jitter * rng.standard_normal(len(eps))
            inter[s, i] = eps @ np.linalg.inv(np.eye(d) - cut)
    return dataclasses.replace(base, observational=obs, interventional=inter)


def main():
    base = ap.simulate.linear_dataset(num_scms=3000, num_vars=2, noise="beta", num_samples=100, seed=0)
    a, b = base.extras["beta_a"], base.extras["beta_b"]

    def beta(rng, s, shape):
        return rng.beta(a[s], b[s], size=shape)

    variants = {
        "ours": (beta, 0.1),
        "centred": (lambda rng, s, shape: beta(rng, s, shape) - a[s] / (a[s] + b[s]), 0.1),
        "scaled x2": (lambda rng, s, shape: 2.0 * beta(rng, s, shape), 0.1),
        "jitter var 0.1": (beta, 0.1**0.5),
    }
    print(f"{'variant':16s} LC All∖V_t Desc. Non-desc. | GC All∖V_t Desc. Non-desc.  (ERG/NLL)")
    for name, (noise, jitter) in variants.items():
        data = resample(base, noise, jitter=jitter)
        res = evaluate(data, {"LC": linear_causal_predictor(), "GC": gaussian_conditional_predictor()},
                       progress=False)
        cells = [" ".join(f"{res[m][k]['energy']['mean']:.2f}/{res[m][k]['nll']['mean']:.2f}"
                          for k in ("all_but_target", "descendants", "non_descendants")) for m in ("LC", "GC")]
        print(f"{name:16s} LC {cells[0]} | GC {cells[1]}")
    print(f"{'paper':16s} {PAPER}")


if __name__ == "__main__":
    main()
