#!/usr/bin/env python
"""Cross-check ``activa_ppl.simulate.sergio`` against avici's SERGIO (the paper's simulator).

Both simulators run on the SAME graphs and parameters (drawn here, written to ``input.npz``):

1. **Pathwise**: the reference's random generator is replaced by one that replays our draws
   (the cell sampling steps and both "dpd" normals of every gene, cell type and step, in the
   order avici consumes them), so both must produce the same cells up to rounding. Ours runs in
   float64 (``JAX_ENABLE_X64=1``) and in float32. This checks the Hill functions,
   half-responses, initial states, levels/step counts, cell sampling and knockouts exactly.
2. **Distributional**: R independent replicates per network on each side with each side's own
   randomness (ours: the production path, ``simulate_networks``, one normal per step), then
   per-gene steady-state means and knockout effects (mean under knockout minus observational
   mean) are compared by z-scores from the replicate-to-replicate spread.

The reference side needs only numpy and avici's ``synthetic/sergio/sim.py`` (loaded by file path,
so avici's TensorFlow/haiku imports are not triggered); it runs in the separate avici venv.

Usage (from the repository root)::

    /work/venv/bin/python docs/scripts/sergio_crosscheck.py \\
        --reference-python /work/avici-venv/bin/python --replicates 100 \\
        --network /work/avici-venv/lib/python3.11/site-packages/avici/assets/ecoli_transcriptional_network_regulonDB_6_7.tsv

Writes ``docs/sergio_crosscheck.json`` (all numbers, tolerances, pass/fail) and prints a summary.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Tolerances (stated up front; see docs/sergio.md).
PATH_TOL_F64 = 1e-9  # max |ours - ref| / (1 + |ref|), float64 pathwise
PATH_TOL_F32 = 1e-3  # same, float32 pathwise (rounding accumulates over ~10^2-10^3 steps)
FAMILYWISE_ALPHA = 1e-3  # distributional z-tests, Bonferroni over all comparisons


# ----------------------------------------------------------------------------- our side
def _network_specs(network_path: str | None) -> list[dict]:
    """Networks to compare: (preset, graph kind, density, seed)."""
    specs = [
        {"preset": "in_distribution", "graph": "er", "edges_per_var": 1.0, "seed": 11},
        {"preset": "in_distribution", "graph": "er", "edges_per_var": 2.0, "seed": 12},
        {"preset": "in_distribution", "graph": "er", "edges_per_var": 3.0, "seed": 13},
        {"preset": "in_distribution", "graph": "scale_free", "edges_per_var": 2.0, "seed": 14},
        {"preset": "ood", "graph": "er", "edges_per_var": 2.0, "seed": 15},
        {"preset": "ood", "graph": "scale_free", "edges_per_var": 1.0, "seed": 16},
    ]
    if network_path:
        specs.insert(4, {"preset": "in_distribution", "graph": network_path, "edges_per_var": 1.0, "seed": 17})
    return specs


def make_input(work: str, network_path: str | None, num_cells: int, cell_types: int) -> None:
    """Draw graphs, parameters and the pathwise randomness; write ``work/input.npz``."""
    from activa_ppl.simulate import sergio as sg

    arrays: dict[str, np.ndarray] = {}
    specs = _network_specs(network_path)
    for s, spec in enumerate(specs):
        config = sg.SergioConfig.preset(spec["preset"], num_cell_types=cell_types)
        rng = np.random.default_rng(spec["seed"])
        adjacency, *_ = sg.sample_graphs(1, config.num_genes, rng, spec["graph"],
                                         edges_per_var=spec["edges_per_var"])
        params = sg.sample_params(rng, adjacency, config)
        d, num_sc = config.num_genes, config.cells_per_type(num_cells)
        steps = sg.simulation_steps(config, num_cells)
        arrays.update({
            f"net{s}_adjacency": adjacency[0].astype(np.int64), f"net{s}_k": params.k[0].astype(np.float64),
            f"net{s}_basal": params.basal[0].astype(np.float64),
            f"net{s}_scalars": np.array([params.hill[0], params.decay[0], params.noise[0]], np.float64),
            f"net{s}_offsets": rng.integers(0, config.sampling_state * num_sc, size=(d + 1, num_sc)),
            f"net{s}_noise": rng.standard_normal((d + 1, steps, 2, config.num_cell_types, d)),
        })
    arrays["meta"] = np.array(json.dumps({
        "specs": specs, "num_cells": num_cells, "cell_types": cell_types,
        "sampling_state": config.sampling_state, "safety_steps": config.safety_steps, "dt": config.dt,
        "noise_type": config.noise_type}))
    np.savez(os.path.join(work, "input.npz"), **arrays)


def _load_input(work: str) -> tuple[dict, dict]:
    with np.load(os.path.join(work, "input.npz")) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return json.loads(str(arrays.pop("meta"))), arrays


def run_ours(work: str, replicates: int, tag: str) -> None:
    """Pathwise (and, for float32, replicate) simulations with activa_ppl; write ``work/ours_<tag>.npz``."""
    import jax
    import jax.numpy as jnp

    from activa_ppl.simulate import sergio as sg

    meta, arrays = _load_input(work)
    dtype = jnp.float64 if tag == "f64" else jnp.float32
    out: dict[str, np.ndarray] = {}
    seconds = 0.0
    for s, spec in enumerate(meta["specs"]):
        config = sg.SergioConfig.preset(spec["preset"], num_cell_types=meta["cell_types"])
        d = config.num_genes
        hill, decay, noise = arrays[f"net{s}_scalars"]
        params = sg.SergioParams(
            adjacency=jnp.asarray(arrays[f"net{s}_adjacency"], dtype), k=jnp.asarray(arrays[f"net{s}_k"], dtype),
            basal=jnp.asarray(arrays[f"net{s}_basal"], dtype), hill=jnp.asarray(hill, dtype),
            decay=jnp.asarray(decay, dtype), noise=jnp.asarray(noise, dtype),
            technical=sg.TechnicalNoiseParams(*(jnp.zeros((), dtype) for _ in sg.TechnicalNoiseParams._fields)))
        knockouts = jnp.concatenate([jnp.zeros((1, d), dtype), jnp.eye(d, dtype=dtype)])
        cells = sg.simulate_condition_from_noise(params, knockouts, jnp.asarray(arrays[f"net{s}_noise"], dtype),
                                                 jnp.asarray(arrays[f"net{s}_offsets"], jnp.int32), config)
        out[f"net{s}_path"] = np.asarray(cells, np.float64)  # (d + 1, C, d, n_sc)
        if tag == "f32" and replicates:
            batch = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (replicates, *a.shape)), params)
            start = time.perf_counter()
            rep, _ = sg.simulate_networks(jax.random.PRNGKey(1000 + s), batch, config, meta["num_cells"])
            out[f"net{s}_rep"] = np.asarray(rep, np.float64)  # (R, d + 1, N, d)
            seconds += time.perf_counter() - start
    out["seconds"] = np.array(seconds)
    np.savez(os.path.join(work, f"ours_{tag}.npz"), **out)


# ----------------------------------------------------------------------------- reference side
def _load_reference_sim():
    """avici's ``synthetic/sergio/sim.py`` as a module, without importing the avici package."""
    spec = importlib.util.find_spec("avici")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("avici is not installed in this interpreter")
    path = os.path.join(list(spec.submodule_search_locations)[0], "synthetic", "sergio", "sim.py")
    module_spec = importlib.util.spec_from_file_location("avici_sergio_sim", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module, path


class ReplayRNG:
    """Stands in for SERGIO's numpy Generator: replays given sampling steps and normals.

    ``integers`` returns the cell-sampling indices (SERGIO's negative indices); ``normal`` returns
    the next ``size`` values of a queue built, after the levels are known, in the order avici's
    ``CLE_simulator_`` draws them: level by level from the top, step by step, gene by gene (in
    ``level2verts_`` order), first the production normals of all cell types, then the decay ones.
    """

    def __init__(self, indices: np.ndarray):
        self.indices = indices
        self.queue: list[np.ndarray] = []
        self.position = 0

    def integers(self, low, high, size):
        assert np.all((self.indices >= low) & (self.indices < high)) and size == self.indices.size
        return self.indices.copy()

    def build(self, sim, noise: np.ndarray) -> None:
        """noise: (T, 2, C, d) ours; step t of gene g uses noise[t, 0, :, g] (p) and noise[t, 1, :, g] (d)."""
        for level in range(sim.maxLevels_, -1, -1):
            genes = [bins[0].ID for bins in sim.level2verts_[level]]
            for step in range(sim.calculate_required_steps_(level) - 1):
                for gene in genes:
                    self.queue.append(noise[step, 0, :, gene])
                    self.queue.append(noise[step, 1, :, gene])

    def normal(self, size):
        value = self.queue[self.position]
        assert value.shape == (size,), (value.shape, size)
        self.position += 1
        return value


def _reference_condition(sim_module, rng, adjacency, k, basal, hill, decay, noise_scale, knockout,
                         num_sc, meta, replay_noise=None):
    """One avici ``GRNSergio`` condition: returns expressions (C, d, n_sc)."""
    d = adjacency.shape[0]
    sim = sim_module.Sergio(rng=rng, number_genes=d, number_bins=basal.shape[1], number_sc=num_sc,
                            noise_params=noise_scale, noise_type=meta["noise_type"], decays=decay,
                            sampling_state=meta["sampling_state"], kout=knockout.astype(bool),
                            dt=meta["dt"], safety_steps=meta["safety_steps"])
    sim.custom_graph(g=adjacency, k=k, b=basal, hill=hill * np.ones((d, d)))
    if replay_noise is not None:
        rng.build(sim, replay_noise)
    sim.simulate()
    if replay_noise is not None:
        assert rng.position == len(rng.queue), "not all replayed normals were consumed"
    return sim.getExpressions()


def run_reference(work: str, replicates: int) -> None:
    """Pathwise and replicate simulations with avici's SERGIO; write ``work/reference.npz``."""
    sim_module, path = _load_reference_sim()
    meta, arrays = _load_input(work)
    out: dict[str, np.ndarray] = {}
    seconds, num_sims = 0.0, 0
    for s, _ in enumerate(meta["specs"]):
        adjacency, k, basal = arrays[f"net{s}_adjacency"], arrays[f"net{s}_k"], arrays[f"net{s}_basal"]
        hill, decay, noise_scale = (float(x) for x in arrays[f"net{s}_scalars"])
        d, num_types = adjacency.shape[0], basal.shape[1]
        num_sc = math.ceil(meta["num_cells"] / num_types)
        knockouts = np.concatenate([np.zeros((1, d)), np.eye(d)])
        path_cells = []
        for c in range(d + 1):
            replay = ReplayRNG(arrays[f"net{s}_offsets"][c] - meta["sampling_state"] * num_sc)
            path_cells.append(_reference_condition(sim_module, replay, adjacency, k, basal, hill, decay,
                                                   noise_scale, knockouts[c], num_sc, meta,
                                                   replay_noise=arrays[f"net{s}_noise"][c]))
        out[f"net{s}_path"] = np.stack(path_cells)
        rng = np.random.default_rng(2000 + s)
        reps = np.empty((replicates, d + 1, meta["num_cells"], d))
        start = time.perf_counter()
        for r in range(replicates):
            for c in range(d + 1):  # as GRNSergio.__call__: simulate, concatenate cell types, shuffle
                expr = _reference_condition(sim_module, rng, adjacency, k, basal, hill, decay, noise_scale,
                                            knockouts[c], num_sc, meta)
                x = rng.permutation(np.concatenate(expr, axis=1).T, axis=0)
                reps[r, c] = x[: meta["num_cells"]]
            num_sims += 1
        seconds += time.perf_counter() - start
        out[f"net{s}_rep"] = reps
        print(f"reference network {s}: {replicates} replicates done", file=sys.stderr, flush=True)
    out["seconds"] = np.array(seconds)
    out["num_sims"] = np.array(num_sims)
    out["sim_path"] = np.array(path)
    np.savez(os.path.join(work, "reference.npz"), **out)


# ----------------------------------------------------------------------------- comparison
def _z_scores(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Welch z of the mean over axis 0 (replicates) of two independent samples."""
    se2 = ours.var(axis=0, ddof=1) / ours.shape[0] + ref.var(axis=0, ddof=1) / ref.shape[0]
    diff = ours.mean(axis=0) - ref.mean(axis=0)
    return np.where(se2 > 0, diff / np.sqrt(np.where(se2 > 0, se2, 1.0)), np.where(diff == 0, 0.0, np.inf))


def compare(work: str) -> dict:
    from scipy.stats import norm

    meta, _ = _load_input(work)
    with np.load(os.path.join(work, "ours_f32.npz")) as npz:
        ours32 = {k: npz[k] for k in npz.files}
    with np.load(os.path.join(work, "ours_f64.npz")) as npz:
        ours64 = {k: npz[k] for k in npz.files}
    with np.load(os.path.join(work, "reference.npz")) as npz:
        ref = {k: npz[k] for k in npz.files}

    networks, all_mean_z, all_effect_z, all_std_z = [], [], [], []
    worst64 = worst32 = 0.0
    for s, spec in enumerate(meta["specs"]):
        r_path = ref[f"net{s}_path"]
        err64 = float(np.max(np.abs(ours64[f"net{s}_path"] - r_path) / (1.0 + np.abs(r_path))))
        err32 = float(np.max(np.abs(ours32[f"net{s}_path"] - r_path) / (1.0 + np.abs(r_path))))
        worst64, worst32 = max(worst64, err64), max(worst32, err32)
        o_rep, r_rep = ours32[f"net{s}_rep"], ref[f"net{s}_rep"]  # (R, d + 1, N, d)
        d = o_rep.shape[-1]
        o_mean, r_mean = o_rep.mean(axis=2), r_rep.mean(axis=2)  # (R, d + 1, d) cell means per replicate
        o_std, r_std = o_rep.std(axis=2, ddof=1), r_rep.std(axis=2, ddof=1)
        off_target = ~np.eye(d, dtype=bool)  # (KO i, gene g), g != i
        z_mean = _z_scores(o_mean, r_mean)  # (d + 1, d)
        z_std = _z_scores(o_std, r_std)
        z_effect = _z_scores(o_mean[:, 1:] - o_mean[:, :1], r_mean[:, 1:] - r_mean[:, :1])[off_target]
        knocked = np.eye(d, dtype=bool)
        zero_ko = all((o_rep[:, 1 + i, :, i] == 0).all() and (r_rep[:, 1 + i, :, i] == 0).all()
                      for i in range(d))
        valid = ~knocked  # exclude knocked-out genes (identically 0 on both sides) from mean/std z
        z_mean_valid = np.concatenate([z_mean[:1].ravel(), z_mean[1:][valid]])
        z_std_valid = np.concatenate([z_std[:1].ravel(), z_std[1:][valid]])
        all_mean_z.append(z_mean_valid)
        all_std_z.append(z_std_valid)
        all_effect_z.append(z_effect)
        rel = np.abs(o_mean.mean(0) - r_mean.mean(0)) / np.maximum(np.abs(r_mean.mean(0)), 1e-12)
        networks.append({
            "preset": spec["preset"], "graph": os.path.basename(str(spec["graph"])),
            "edges": int(np.load(os.path.join(work, "input.npz"))[f"net{s}_adjacency"].sum()),
            "pathwise_max_rel_err_f64": err64, "pathwise_max_rel_err_f32": err32,
            "obs_mean_ours": o_mean[:, 0].mean(0).round(4).tolist(),
            "obs_mean_ref": r_mean[:, 0].mean(0).round(4).tolist(),
            "max_rel_diff_condition_means": float(np.nanmax(np.where(np.abs(r_mean.mean(0)) > 1e-3, rel, 0.0))),
            "max_abs_z_mean": float(np.max(np.abs(z_mean_valid))),
            "max_abs_z_std": float(np.max(np.abs(z_std_valid))),
            "max_abs_z_knockout_effect": float(np.max(np.abs(z_effect))),
            "knocked_out_genes_zero": zero_ko,
        })
    z_mean = np.concatenate(all_mean_z)
    z_std = np.concatenate(all_std_z)
    z_effect = np.concatenate(all_effect_z)
    num_tests = z_mean.size + z_std.size + z_effect.size
    z_crit = float(norm.isf(FAMILYWISE_ALPHA / (2 * num_tests)))
    checks = {
        "pathwise_f64": {"max_rel_err": worst64, "tolerance": PATH_TOL_F64, "pass": worst64 <= PATH_TOL_F64},
        "pathwise_f32": {"max_rel_err": worst32, "tolerance": PATH_TOL_F32, "pass": worst32 <= PATH_TOL_F32},
        "means": {"max_abs_z": float(np.abs(z_mean).max()), "num": int(z_mean.size)},
        "cell_stds": {"max_abs_z": float(np.abs(z_std).max()), "num": int(z_std.size)},
        "knockout_effects": {"max_abs_z": float(np.abs(z_effect).max()), "num": int(z_effect.size)},
        "z_critical": z_crit, "familywise_alpha": FAMILYWISE_ALPHA,
        "fraction_abs_z_gt_2": float(np.mean(np.abs(np.concatenate([z_mean, z_std, z_effect])) > 2)),
        "knocked_out_genes_zero": all(n["knocked_out_genes_zero"] for n in networks),
    }
    for name in ("means", "cell_stds", "knockout_effects"):
        checks[name]["pass"] = checks[name]["max_abs_z"] <= z_crit
    checks["pass"] = all(v["pass"] for v in checks.values() if isinstance(v, dict)) and checks["knocked_out_genes_zero"]
    return {"meta": meta, "replicates": int(ours32["net0_rep"].shape[0]), "checks": checks,
            "networks": networks, "reference_sim": str(ref["sim_path"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=["all", "input", "ours", "reference", "compare"], default="all")
    parser.add_argument("--tag", choices=["f32", "f64"], default="f32", help="precision of --side ours")
    parser.add_argument("--work", help="folder for the exchanged .npz files (default: a temp folder)")
    parser.add_argument("--reference-python", default="/work/avici-venv/bin/python")
    parser.add_argument("--replicates", type=int, default=100)
    parser.add_argument("--num-cells", type=int, default=30)
    parser.add_argument("--cell-types", type=int, default=5)
    parser.add_argument("--network", help="regulatory network edge list (e.g. avici's E. coli file)")
    parser.add_argument("--json", default=os.path.join(REPO, "docs", "sergio_crosscheck.json"))
    args = parser.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="sergio_crosscheck_")
    os.makedirs(work, exist_ok=True)
    if args.side == "input":
        make_input(work, args.network, args.num_cells, args.cell_types)
    elif args.side == "ours":
        run_ours(work, args.replicates, args.tag)
    elif args.side == "reference":
        run_reference(work, args.replicates)
    elif args.side == "compare":
        print(json.dumps(compare(work), indent=2))
    else:
        me = [sys.executable, os.path.abspath(__file__), "--work", work, "--replicates", str(args.replicates)]
        make_input(work, args.network, args.num_cells, args.cell_types)
        env64 = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
        subprocess.run(me + ["--side", "ours", "--tag", "f64", "--replicates", "0"], check=True, env=env64)
        subprocess.run(me + ["--side", "ours", "--tag", "f32"], check=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
        subprocess.run([args.reference_python, os.path.abspath(__file__), "--work", work, "--side", "reference",
                        "--replicates", str(args.replicates)], check=True)
        result = compare(work)
        result["command"] = " ".join([sys.executable, "docs/scripts/sergio_crosscheck.py",
                                      *(argv if argv is not None else sys.argv[1:])])
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
        checks = result["checks"]
        print(f"pathwise float64 max rel err {checks['pathwise_f64']['max_rel_err']:.2e} "
              f"(tol {PATH_TOL_F64:.0e}); float32 {checks['pathwise_f32']['max_rel_err']:.2e} (tol {PATH_TOL_F32:.0e})")
        print(f"max |z|: means {checks['means']['max_abs_z']:.2f} ({checks['means']['num']}), "
              f"cell stds {checks['cell_stds']['max_abs_z']:.2f} ({checks['cell_stds']['num']}), "
              f"knockout effects {checks['knockout_effects']['max_abs_z']:.2f} "
              f"({checks['knockout_effects']['num']}); critical {checks['z_critical']:.2f}")
        for net in result["networks"]:
            print(f"  {net['preset']:>15} {net['graph'][:24]:>24} edges={net['edges']:>2} "
                  f"path64={net['pathwise_max_rel_err_f64']:.1e} path32={net['pathwise_max_rel_err_f32']:.1e} "
                  f"z_mean={net['max_abs_z_mean']:.2f} z_effect={net['max_abs_z_knockout_effect']:.2f}")
        print("PASS" if checks["pass"] else "FAIL", f"-> {args.json}")
        return 0 if checks["pass"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
