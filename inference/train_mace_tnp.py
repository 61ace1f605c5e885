"""Train the MACE-TNP joint extension (paper Appendix D) on a linear-SCM data set.

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

import argparse
import json

import activa_ppl as ap
from activa_ppl.mace_tnp import FittedMaceTnp, MaceTnpConfig, train_mace_tnp


def train_and_save(args) -> FittedMaceTnp:
    """Build the data set and the model from ``args``, train with :func:`train_mace_tnp`, save."""
    if args.data:
        data = ap.load_dataset(args.data)
    else:
        data = ap.simulate.linear_dataset(num_scms=args.num_scms, num_vars=args.num_vars,
                                          noise=args.noise, num_samples=args.num_samples,
                                          seed=args.data_seed)
    config = MaceTnpConfig.preset(args.preset, num_vars=data.num_vars)
    fitted = train_mace_tnp(config, data, num_steps=args.steps, seed=args.seed, batch_size=args.batch_size,
                            learning_rate=args.lr, eval_every=args.eval_every, workdir=args.workdir,
                            progress=not args.no_progress)
    fitted.info["machine"] = ap.report.machine_description()  # for the model card
    fitted.save(args.out)
    print(json.dumps({k: fitted.info[k] for k in ("num_steps", "best_step", "best_valid_nll", "wall_time_s")}))
    return fitted


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="dataset folder (otherwise simulate a linear set)")
    parser.add_argument("--noise", choices=["gauss", "beta"], default="gauss")
    parser.add_argument("--num-vars", type=int, default=2)
    parser.add_argument("--num-scms", type=int, default=3000)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "paper"])
    parser.add_argument("--steps", type=int, default=12000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--out", required=True)
    train_and_save(parser.parse_args(argv))


if __name__ == "__main__":
    main()
