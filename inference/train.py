"""Train ACTIVA on a linear-SCM data set (simulated on the fly or loaded from disk).

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

import argparse
import json

import jax

import activa_ppl as ap


def train_and_save(args) -> ap.FittedActiva:
    """Build the data set and the model from ``args``, train with :func:`activa_ppl.train`, save."""
    if getattr(args, "distributed", False):  # before any JAX computation
        from activa_ppl.distributed import initialize

        initialize(args.coordinator, args.num_processes, args.process_id)
    if args.data:
        data = ap.load_dataset(args.data)
    else:
        data = ap.simulate.linear_dataset(num_scms=args.num_scms, num_vars=args.num_vars,
                                          noise=args.noise, num_samples=args.num_samples,
                                          seed=args.data_seed)
    standardize = {}
    if args.standardize:  # z-scored inputs; the model needs each index's value in data units
        from activa_ppl.standardize import nominal_intervention_values

        standardize = dict(standardize=True, intervention_values=nominal_intervention_values(data))
    model = ap.Activa(ap.ActivaConfig.preset(args.preset, num_interventions=data.num_interventions,
                                             **standardize))
    fitted = ap.train(model, data, num_steps=args.steps, seed=args.seed, batch_size=args.batch_size,
                      learning_rate=args.lr, eval_every=args.eval_every, workdir=args.workdir,
                      data_parallel=getattr(args, "data_parallel", False))
    if jax.process_index() != 0:  # multi-host: process 0 writes the model
        return fitted
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
    parser.add_argument("--standardize", action="store_true",
                        help="ActivaConfig(standardize=True): z-score each dataset per variable "
                        "(for data whose scale varies between SCMs, e.g. 8-variable sets and SERGIO)")
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--out", required=True)
    parser.add_argument("--data-parallel", action="store_true",
                        help="shard each minibatch over all devices (batch size divisible by their number)")
    parser.add_argument("--distributed", action="store_true",
                        help="multi-host: jax.distributed.initialize first (auto-detects SLURM etc.)")
    parser.add_argument("--coordinator", default=None, help="with --distributed: host:port of process 0")
    parser.add_argument("--num-processes", type=int, default=None)
    parser.add_argument("--process-id", type=int, default=None)
    train_and_save(parser.parse_args(argv))


if __name__ == "__main__":
    main()
