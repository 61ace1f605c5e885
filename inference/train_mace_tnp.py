"""Train the MACE-TNP joint extension (paper Appendix D) on a linear-SCM data set.

The options are those of ``inference/train.py`` (defined once, in :mod:`activa_ppl.arguments`,
with the same defaults) that MACE-TNP's trainer takes: the data set (``--data``, or a linear-SCM
set simulated on the fly), ``--out``, ``--preset``, ``--steps`` (default 12000 here),
``--batch-size``, ``--lr``, ``--eval-every``, ``--seed``, ``--workdir``, ``--no-resume`` and
``--quiet`` (also spelled ``--no-progress``). ACTIVA's non-finite policy, ``--standardize``
and the data-parallel and multi-host options do not apply.

Examples::

    # Gauss 2 of the paper, small CPU preset, 12k steps of 32 tasks, resumable in the workdir
    python inference/train_mace_tnp.py --noise gauss --num-vars 2 --num-scms 3000 \
        --num-samples 100 --preset small --steps 12000 --workdir /work/runs/mace-gauss2 \
        --out /work/runs/mace-gauss2/model

    # a data set written by `activa simulate`
    python inference/train_mace_tnp.py --data data/beta2 --preset small --steps 12000 --out runs/mace-beta2/model

Killed runs resume from ``--workdir`` when started again with the same arguments (the cosine
schedule spans ``--steps``, so the step count must stay the same).
"""

from __future__ import annotations

if __name__ == "__main__":  # glibc's huge-page allocator, set before JAX loads (ACTIVA_NO_HUGETLB=1: off)
    from activa_ppl.allocator import apply_hugetlb

    apply_hugetlb()

import argparse
import json

import activa_ppl as ap
from activa_ppl.arguments import (add_common_training_arguments, add_linear_data_arguments,
                                  training_data_from_args)

#: The default ``--steps`` of this script.
DEFAULT_STEPS = 12000


def build_parser() -> argparse.ArgumentParser:
    """The script's parser: the data options and the training options MACE-TNP's trainer takes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_linear_data_arguments(parser)
    add_common_training_arguments(parser, default_steps=DEFAULT_STEPS)
    parser.add_argument("--no-progress", dest="quiet", action="store_true",
                        help="the same as --quiet (default: off)")
    return parser


def train_and_save(args) -> ap.FittedMaceTnp:
    """Build the data set and the model from ``args``, train with :func:`activa_ppl.train_mace_tnp`, save."""
    data = training_data_from_args(args)
    config = ap.MaceTnpConfig.preset(args.preset, num_vars=data.num_vars)
    fitted = ap.train_mace_tnp(config, data, num_steps=args.steps, seed=args.seed,
                               batch_size=args.batch_size, learning_rate=args.lr,
                               eval_every=args.eval_every, workdir=args.workdir,
                               resume=not args.no_resume, progress=not args.quiet)
    fitted.info["machine"] = ap.report.machine_description()  # for the model card
    fitted.save(args.out)
    print(json.dumps({k: fitted.info[k] for k in ("num_steps", "best_step", "best_valid_nll", "wall_time_s")}))
    return fitted


def main(argv=None):
    train_and_save(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
