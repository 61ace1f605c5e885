#!/usr/bin/env python
"""Speed of the JAX SERGIO simulator vs avici's reference SERGIO, side by side on this machine.

One "simulation" is one network: its observational condition plus all d single-gene
knockouts (d + 1 = 9 conditions for 8 genes), 30 cells per condition, as in the paper.

* ours: ``activa_ppl.simulate.sergio_dataset`` (graphs, parameters, batched jit-compiled
  simulation in blocks, assembly of the InterventionalDataset). It is run twice; the first run
  includes XLA compilation, the second one (warm cache) gives the throughput.
* reference: avici's ``GRNSergio`` (the paper's simulator) run in a separate interpreter (the avici
  venv), on the SAME adjacency matrices (the first ``--reference-networks`` of ours), with the
  same parameter priors: ``GRNSergio(b=Uniform(0, 1), k_param=Uniform(1, 5),
  k_sign_p=Beta(1, 1), hill, decays, noise_params (one value per network drawn from Table 2's
  sets), cell_types=RandInt(C, C), n_ko_genes=-1)`` called with 30 observational and 30 * d
  interventional cells. Its graph sampling is not timed.

Usage::

    python benchmarks/bench_sergio.py                               # C = 5 and C = 1 cell types
    python benchmarks/bench_sergio.py --cell-types 5 --networks 1024 --reference-networks 30
    python benchmarks/bench_sergio.py --no-reference                # ours only
    python benchmarks/bench_sergio.py --graph /path/to/ecoli_transcriptional_network_regulonDB_6_7.tsv
    python benchmarks/bench_sergio.py --json bench_sergio.json

Timings on a shared CPU box vary by about +-30 % run to run; both sides run in the same call.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from bench_lib.machine import machine_info, write_json  # same folder: run as python benchmarks/bench_sergio.py

DEFAULT_REFERENCE_PYTHON = "/work/avici-venv/bin/python"


# ----------------------------------------------------------------------------- reference side
REFERENCE_CODE = r"""
import json, sys, time
import numpy as np
from avici.synthetic.gene import GRNSergio
from avici.synthetic.distributions import Uniform, Beta, RandInt

spec = json.loads(sys.argv[1])
adjacency = np.load(spec["graphs"])["adjacency"]
rng = np.random.default_rng(spec["seed"])
models = {}
times = []
for g in adjacency:
    hill, decay, noise = (float(rng.choice(spec[key])) for key in ("hill", "decays", "noise"))
    key = (hill, decay, noise)
    if key not in models:
        models[key] = GRNSergio(b=Uniform(*spec["b"]), k_param=Uniform(*spec["k"]), k_sign_p=Beta(*spec["k_sign"]),
                                hill=hill, decays=decay, noise_params=noise,
                                cell_types=RandInt(spec["cell_types"], spec["cell_types"]), n_ko_genes=-1)
    d = g.shape[0]
    start = time.perf_counter()
    data = models[key](rng, g.astype(int), spec["num_cells"], spec["num_cells"] * d)
    times.append(time.perf_counter() - start)
    assert data.x_obs.shape == (spec["num_cells"], d, 2) and data.x_int.shape == (spec["num_cells"] * d, d, 2)
import avici
print(json.dumps({"seconds": times, "avici_version": getattr(avici, "__version__", "?"),
                  "numpy": np.__version__}))
"""


def run_reference(python: str, adjacency: np.ndarray, config, num_cells: int, seed: int) -> dict:
    """Time avici's GRNSergio on ``adjacency: (M, d, d)`` in the interpreter ``python``."""
    with tempfile.TemporaryDirectory() as tmp:
        graphs = os.path.join(tmp, "graphs.npz")
        np.savez(graphs, adjacency=adjacency.astype(np.int64))
        spec = {"graphs": graphs, "seed": seed, "num_cells": num_cells, "cell_types": config.num_cell_types,
                "b": list(config.basal_range), "k": list(config.k_range), "k_sign": list(config.k_sign_beta),
                "hill": list(config.hill_values), "decays": list(config.decay_values),
                "noise": list(config.noise_values)}
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run([python, "-c", REFERENCE_CODE, json.dumps(spec)], capture_output=True,
                              text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"reference run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- our side
def run_ours(preset: str, cell_types: int, num_networks: int, num_cells: int, seed: int,
             block_size: int, graph: str) -> tuple[dict, np.ndarray]:
    from activa_ppl.simulate import sergio

    config = sergio.SergioConfig.preset(preset, num_cell_types=cell_types)
    kwargs = dict(num_networks=num_networks, preset=config, num_cells=num_cells, seed=seed,
                  block_size=block_size, progress=False, graph=graph)
    start = time.perf_counter()
    first = sergio.sergio_dataset(**kwargs)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    second = sergio.sergio_dataset(**kwargs)
    warm = time.perf_counter() - start
    assert np.array_equal(first.interventional, second.interventional)
    return {"config": config, "cold_s": cold, "warm_s": warm, "networks_per_s": num_networks / warm,
            "networks": num_networks}, np.asarray(first.adjacency)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="in_distribution", choices=["in_distribution", "ood"])
    parser.add_argument("--cell-types", default="5,1", help="comma-separated numbers of cell types C")
    parser.add_argument("--graph", default="er",
                        help="'er', 'scale_free' or a network edge-list file (e.g. avici's E. coli file)")
    parser.add_argument("--networks", type=int, default=1024, help="networks simulated by ours per run")
    parser.add_argument("--reference-networks", type=int, default=20, help="networks timed on the reference")
    parser.add_argument("--num-cells", type=int, default=30)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference-python", default=DEFAULT_REFERENCE_PYTHON)
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--json", help="also write all numbers to this JSON file")
    args = parser.parse_args(argv)

    info = machine_info()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    rows = []
    for cell_types in (int(c) for c in args.cell_types.split(",")):
        ours, adjacency = run_ours(args.preset, cell_types, args.networks, args.num_cells, args.seed,
                                   args.block_size, args.graph)
        config = ours.pop("config")
        row = {"preset": args.preset, "graph": os.path.basename(args.graph), "genes": config.num_genes,
               "cell_types": cell_types,
               "conditions": config.num_genes + 1, "cells_per_condition": args.num_cells, "ours": ours}
        if not args.no_reference:
            ref = run_reference(args.reference_python, adjacency[: args.reference_networks], config,
                                args.num_cells, args.seed)
            seconds = np.asarray(ref["seconds"])
            row["reference"] = {"networks": int(seconds.size), "mean_s_per_network": float(seconds.mean()),
                                "median_s_per_network": float(np.median(seconds)),
                                "networks_per_s": float(1.0 / seconds.mean()),
                                "avici_version": ref["avici_version"]}
            row["speedup"] = ours["networks_per_s"] / row["reference"]["networks_per_s"]
        rows.append(row)
        ref_text = ("" if args.no_reference else
                    f" | reference {row['reference']['networks_per_s']:.2f} sims/s "
                    f"({row['reference']['mean_s_per_network']:.2f} s/sim over {row['reference']['networks']})"
                    f" | speedup {row['speedup']:.0f}x")
        print(f"{args.preset} {row['graph'][:20]} d={config.num_genes} C={cell_types} ({config.num_genes + 1} conditions x "
              f"{args.num_cells} cells): ours {ours['networks_per_s']:.1f} sims/s "
              f"({args.networks} networks in {ours['warm_s']:.2f} s; first run incl. compile "
              f"{ours['cold_s']:.2f} s){ref_text}", flush=True)
    write_json(args.json, {"machine": info, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
