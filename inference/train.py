"""Train ACTIVA on a linear-SCM data set (simulated on the fly or loaded from disk).

The options are those of ``activa train`` (defined once, in :mod:`activa_ppl.arguments`, with
the same defaults) with two differences: ``--data`` is optional, without it a linear-SCM set is
simulated on the fly (``--noise``, ``--num-vars``, ``--num-scms``, ``--num-samples``,
``--data-seed``), and ``--steps`` defaults to 20000 instead of 5000. The saved model's
training summary also records the machine (for the model card), and the script prints that
summary as one JSON line.

Examples::

    # the Gauss 2 set of the paper, small CPU preset, 20k steps, resumable in runs/gauss2
    python inference/train.py --noise gauss --num-vars 2 --num-scms 3000 --num-samples 100 \
        --preset small --steps 20000 --workdir runs/gauss2 --out runs/gauss2/model

    # a data set written by `activa simulate`
    python inference/train.py --data data/beta2 --preset small --steps 20000 --out runs/beta2/model

    # data parallel over all GPUs of one machine; on a cluster add --distributed (one process
    # per host, each with the same --data); see docs/scaling.md
    python inference/train.py --data data/beta2 --preset paper --batch-size 64 --data-parallel \
        --steps 20000 --out runs/beta2/model

Killed runs resume from ``--workdir`` when started again with the same arguments.
"""

from __future__ import annotations

if __name__ == "__main__":  # glibc's huge-page allocator, set before JAX loads (ACTIVA_NO_HUGETLB=1: off)
    from activa_ppl.allocator import apply_hugetlb

    apply_hugetlb()

import argparse
import json

import jax

import activa_ppl as ap
from activa_ppl.arguments import add_linear_data_arguments, add_training_arguments, train_activa_from_args

#: The default ``--steps`` of this script (``activa train``: 5000).
DEFAULT_STEPS = 20000


def build_parser() -> argparse.ArgumentParser:
    """The script's parser: ``activa train``'s options, the on-the-fly simulation, more steps."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_linear_data_arguments(parser)
    add_training_arguments(parser, default_steps=DEFAULT_STEPS)
    return parser


def train_and_save(args) -> ap.FittedActiva:
    """Build the data set and the model from ``args``, train with :func:`activa_ppl.train`, save
    (:func:`activa_ppl.arguments.train_activa_from_args`); print the training summary."""
    fitted = train_activa_from_args(
        args, info=lambda: {"machine": ap.report.machine_description()})  # for the model card
    if jax.process_index() == 0:  # multi-host: process 0 wrote the model
        print(json.dumps({k: fitted.info[k] for k in ("num_steps", "best_step", "best_valid_nll",
                                                      "wall_time_s")}))
    return fitted


def main(argv=None):
    train_and_save(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
