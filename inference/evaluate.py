"""Evaluate methods on saved datasets: Table 1, Figure 3 and Figure 4 (same as ``activa evaluate``).

Examples::

    # baselines only
    python inference/evaluate.py --dataset data/gauss2 --out runs/eval-gauss2

    # ACTIVA (a zoo name or a model folder) against both baselines on two datasets
    python inference/evaluate.py --dataset "Gauss 2=data/gauss2@models/gauss2" \\
        --dataset "Beta 2=data/beta2@models/beta2" \\
        --methods "activa:{model},gaussian-conditional,linear-causal" --out runs/table1

Writes ``table1.md``, ``results.json``, ``records.csv.gz``, ``figure3-*.png`` and ``figure4.png``
to ``--out``; see :mod:`activa_ppl.report` for the formats. ``python inference/reproduce_table1.py``
regenerates the committed docs/results.md.
"""

from __future__ import annotations

import sys

from activa_ppl.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
