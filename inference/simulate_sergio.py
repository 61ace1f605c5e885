"""Generate the SERGIO datasets of the paper (Appendix C.2): in-distribution (8 genes) and OOD (11 genes).

Each network gets one observational condition and all single-gene knockouts ``do(V_i = 0)``,
``--num-cells`` cells each. In-distribution networks are split 80/10/10 into train/valid/test;
OOD networks are all test. The paper used 15,000 in-distribution and 1,800 OOD networks on
random E. coli / S. cerevisiae modules (``--paper-scale``; the two networks ship with the
package, ``activa_ppl/simulate/networks/``, and are the default ``--graph``).

Examples::

    # paper scale on E. coli and yeast modules: data/sergio8 and data/sergio11 (sergio8's data)
    python inference/simulate_sergio.py --paper-scale --out data

    # moderate scale on Erdos-Renyi graphs
    python inference/simulate_sergio.py --out-in-dist data/sergio8 --out-ood data/sergio11 \\
        --num-networks 2000 --num-ood 300 --graph er
"""

from __future__ import annotations

if __name__ == "__main__":  # glibc's huge-page allocator, set before JAX loads (ACTIVA_NO_HUGETLB=1: off)
    from activa_ppl.allocator import apply_hugetlb

    apply_hugetlb()

import argparse
import json
import time

from pathlib import Path

from activa_ppl.simulate.graphs import SHIPPED_NETWORKS
from activa_ppl.simulate.sergio import sergio_dataset

PAPER_NETWORKS = {"in_distribution": 15000, "ood": 1800}


def generate(args) -> dict:
    """Simulate and save the requested sets; returns {preset: {"out", "seconds", "repr"}}."""
    graphs = [str(Path(args.networks) / SHIPPED_NETWORKS[g]) if args.networks and g in SHIPPED_NETWORKS else g
              for g in args.graph]
    graph = graphs[0] if len(graphs) == 1 else graphs
    out_in_dist = args.out_in_dist or (str(Path(args.out) / "sergio8") if args.out else None)
    out_ood = args.out_ood or (str(Path(args.out) / "sergio11") if args.out else None)
    jobs = []
    if out_in_dist:
        jobs.append(("in_distribution", out_in_dist, args.num_networks, args.seed))
    if out_ood:
        jobs.append(("ood", out_ood, args.num_ood, args.seed + 1))
    if not jobs:
        raise SystemExit("nothing to do: pass --out, --out-in-dist and/or --out-ood")
    report = {}
    for preset, out, num, seed in jobs:
        if args.paper_scale:
            num = PAPER_NETWORKS[preset]
        start = time.perf_counter()
        data = sergio_dataset(num_networks=num, preset=preset, num_cells=args.num_cells, graph=graph,
                              seed=seed, progress=not args.quiet, num_cell_types=args.cell_types,
                              technical_noise=args.technical_noise, count_data=args.count_data)
        data.save(out)
        seconds = time.perf_counter() - start
        report[preset] = {"out": out, "seconds": round(seconds, 1), "repr": repr(data)}
        print(f"{preset}: wrote {data!r} to {out} in {seconds:.1f} s", flush=True)
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-in-dist", help="output folder of the in-distribution set (8 genes)")
    parser.add_argument("--out-ood", help="output folder of the OOD set (11 genes)")
    parser.add_argument("--out", help="parent folder: writes OUT/sergio8 and OUT/sergio11 (unless "
                        "--out-in-dist / --out-ood say otherwise)")
    parser.add_argument("--num-networks", type=int, default=2000, help="in-distribution networks")
    parser.add_argument("--num-ood", type=int, default=300, help="OOD networks")
    parser.add_argument("--paper-scale", action="store_true", help="15,000 + 1,800 networks (paper)")
    parser.add_argument("--num-cells", type=int, default=30, help="cells per condition")
    parser.add_argument("--graph", nargs="+", default=["ecoli", "yeast"],
                        help="'ecoli', 'yeast' (the paper's networks, shipped with the package), 'er', "
                        "'scale_free' and/or network edge-list files; one drawn per network "
                        "(default: ecoli yeast)")
    parser.add_argument("--networks", metavar="DIR",
                        help="read 'ecoli' and 'yeast' from the files of the same names in DIR "
                        f"({', '.join(SHIPPED_NETWORKS.values())}) instead of the shipped copies")
    parser.add_argument("--cell-types", type=int, default=5, help="cell types per simulation")
    parser.add_argument("--technical-noise", default=None,
                        choices=["10x-chromium", "illumina", "drop-seq", "smart-seq"])
    parser.add_argument("--count-data", action="store_true", help="Poisson UMI counts")
    parser.add_argument("--seed", type=int, default=0, help="in-distribution seed (OOD uses seed + 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    report = generate(args)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
