"""Command-line options shared by ``activa train`` and the training scripts of ``inference/``.

Each option is defined once here, with one default, so that ``activa train``,
``inference/train.py`` and ``inference/train_mace_tnp.py`` cannot drift apart:

* :func:`add_common_training_arguments`: the options every trainer takes (:func:`activa_ppl.train`
  and :func:`activa_ppl.train_mace_tnp`): ``--out``, ``--preset``, ``--steps``,
  ``--batch-size``, ``--lr``, ``--eval-every``, ``--seed``, ``--workdir``, ``--no-resume``,
  ``--quiet``;
* :func:`add_training_arguments`: those plus the options only ACTIVA's trainer takes:
  ``--on-nonfinite``, ``--max-retries``, ``--standardize``, the model-quality options
  (``--decoder-context``, ``--covariance-head``, ``--cholesky-floor``, ``--lr-schedule``,
  ``--warmup-steps``, ``--samples-per-task``, ``--time-budget-s``), ``--data-parallel`` and the
  multi-host ``--distributed``, ``--coordinator``, ``--num-processes``, ``--process-id``;
* :func:`add_linear_data_arguments`: ``--data`` optional, otherwise a linear-SCM set simulated
  on the fly (``--noise``, ``--num-vars``, ``--num-scms``, ``--num-samples``, ``--data-seed``),
  for the ``inference/`` scripts;
* :func:`train_activa_from_args`: the dataset, the :class:`~activa_ppl.ActivaConfig`, the
  training run and the saved model of parsed arguments (``activa train`` and
  ``inference/train.py``).

Only the default of ``--steps`` is the caller's (:data:`DEFAULT_STEPS` for ``activa train``,
larger in the scripts). This module imports only the standard library at module level, so
that building the ``activa`` parser stays fast; the library is imported when a command runs.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

__all__ = ["DEFAULT_STEPS", "PRESETS", "add_common_training_arguments", "add_linear_data_arguments",
           "add_training_arguments", "train_activa_from_args", "training_data_from_args"]

#: The architecture presets of ``ActivaConfig.preset`` and ``MaceTnpConfig.preset``.
PRESETS = ("tiny", "small", "paper")
#: The default ``--steps`` of ``activa train`` (the ``inference/`` scripts pass a larger one).
DEFAULT_STEPS = 5000


#: ``(flag, ActivaConfig field, type, help)`` of the options that override one preset field.
_PRESET_OVERRIDES = (
    ("--beta", "beta", float, "the KL weight of the β-ELBO (paper: 0.5)"),
    ("--num-particles", "num_particles", int, "latent draws per task in the ELBO (paper: 4)"),
    ("--predictive-latents", "num_predictive_latents", int,
     "latent draws S of the predictive mixture (paper: 10)"),
    ("--validation-latents", "num_validation_latents", int,
     "latent draws of the validation NLL (paper: 5)"),
    ("--num-encoder-blocks", "num_encoder_blocks", int,
     "attention blocks of each dataset encoder (paper: 4, small preset: 2)"),
    ("--num-decoder-blocks", "num_decoder_blocks", int,
     "attention blocks of the decoder (paper: 4, small preset: 2)"),
    ("--predictive-weight", "predictive_weight", float,
     "weight of the hybrid objective's prior-predictive term (paper: 0, the ELBO alone)"),
    ("--energy-weight", "energy_weight", float,
     "weight of the prior-predictive energy-score term (paper: 0, not used)"),
    ("--marginal-energy-weight", "marginal_energy_weight", float,
     "weight of the 1-D marginals' energy scores inside the energy term (paper: 0, not used)"),
    ("--energy-scale", "energy_scale", str,
     "units of the energy term under --standardize: 'variable' (z-scores) or 'task' (data units over "
     "one scale per task; default 'variable')"),
)


def _flag(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    parser.add_argument(name, action="store_true", help=f"{help} (default: off)")


def add_common_training_arguments(parser: argparse.ArgumentParser, *,
                                  default_steps: int = DEFAULT_STEPS) -> None:
    """Add the options every trainer takes: output, preset, optimisation, checkpoints, progress.

    Args:
        parser: the parser (or sub-parser) to extend.
        default_steps: the default of ``--steps``; the help of one other than
            :data:`DEFAULT_STEPS` also names that of ``activa train``.
    """
    parser.add_argument("--out", required=True, help="folder for the trained model (required)")
    parser.add_argument("--preset", default="small", choices=PRESETS,
                        help="architecture preset (default: %(default)s)")
    other = "" if default_steps == DEFAULT_STEPS else f"; `activa train`: {DEFAULT_STEPS}"
    parser.add_argument("--steps", type=int, default=default_steps,
                        help=f"training steps, one minibatch each (default: %(default)s{other})")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="tasks per minibatch (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=5e-4,
                        help="learning rate (default: %(default)s)")
    parser.add_argument("--eval-every", type=int, default=250,
                        help="steps per compiled chunk; validation and a checkpoint follow each "
                        "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="root seed of the training run (default: %(default)s)")
    parser.add_argument("--workdir", default=None,
                        help="checkpoint + metrics folder; a killed run started again with the same "
                        "arguments resumes from it (default: none, nothing kept)")
    _flag(parser, "--no-resume", "start afresh even if --workdir holds a checkpoint")
    _flag(parser, "--quiet", "no progress bar")


def add_training_arguments(parser: argparse.ArgumentParser, *,
                           default_steps: int = DEFAULT_STEPS) -> None:
    """Add every option of ACTIVA's training (:func:`add_common_training_arguments` and those of
    :func:`activa_ppl.train` alone: the non-finite policy, ``--standardize``, data parallelism
    and multi-host runs).

    Args:
        parser: the parser (or sub-parser) to extend.
        default_steps: the default of ``--steps``.
    """
    add_common_training_arguments(parser, default_steps=default_steps)
    parser.add_argument("--on-nonfinite", choices=["stop", "retry"], default="stop",
                        help="a NaN/inf loss rolls back the chunk, then stops or retries it with a "
                        "halved learning rate (default: %(default)s)")
    parser.add_argument("--max-retries", type=int, default=3,
                        help="learning-rate halvings allowed with --on-nonfinite retry "
                        "(default: %(default)s)")
    _flag(parser, "--standardize", "ActivaConfig(standardize=True): z-score each dataset per "
          "variable (for data whose scale varies between SCMs, e.g. 8-variable sets and SERGIO)")
    _flag(parser, "--decoder-context", "ActivaConfig(decoder_context=True): the decoder also sees "
          "the observational context, p(V | z, D_obs, do) (not in the paper; docs/ablations.md)")
    _flag(parser, "--regression-context", "ActivaConfig(regression_context=True): the decoder's "
          "tokens also get the observational regression's prediction under the query "
          "(activa_ppl.regression; not in the paper; docs/ablations.md)")
    _flag(parser, "--regression-residual", "ActivaConfig(regression_residual=True): every decoded "
          "component's mean gets a learned, gated copy of the observational regression's "
          "conditional mean (not in the paper; docs/ablations.md)")
    _flag(parser, "--exact-targets", "ActivaConfig(exact_targets=True): the intervened variables' "
          "mean is the intervened value and their sd one learned scale per intervention index "
          "(not in the paper; docs/ablations.md)")
    parser.add_argument("--covariance-head", choices=["lowrank", "cholesky"], default="lowrank",
                        help="decoded covariances: the paper's low-rank + eps, or a floored Cholesky "
                        "factor (default: %(default)s)")
    parser.add_argument("--predictive-estimate", choices=["per_particle", "per_step"], default="per_particle",
                        help="with --predictive-weight > 0: estimate the hybrid term in every ELBO particle "
                        "or once per step (cheaper) (default: %(default)s)")
    parser.add_argument("--cholesky-floor", type=float, default=0.05,
                        help="with --covariance-head cholesky: smallest diagonal entry of L "
                        "(default: %(default)s)")
    for flag, field, kind, what in _PRESET_OVERRIDES:
        parser.add_argument(flag, dest=field, type=kind, default=None, help=f"ActivaConfig.{field}: {what} "
                            "(default: the preset's)")
    parser.add_argument("--lr-schedule", choices=["constant", "warmup_cosine"], default="constant",
                        help="learning-rate schedule (default: %(default)s)")
    parser.add_argument("--warmup-steps", type=int, default=0,
                        help="with --lr-schedule warmup_cosine: linear warm-up steps (default: %(default)s)")
    parser.add_argument("--samples-per-task", type=int, default=None,
                        help="train each step on a random subset of this many samples per task "
                        "(default: all samples)")
    parser.add_argument("--time-budget-s", type=float, default=None,
                        help="stop after the chunk at which training time reaches this many seconds "
                        "(default: none, run all --steps)")
    _flag(parser, "--data-parallel",
          "shard each minibatch over all devices (batch size divisible by their number)")
    _flag(parser, "--distributed", "multi-host: call jax.distributed.initialize first "
          "(auto-detects SLURM etc.; every host needs the same data); use with --data-parallel")
    parser.add_argument("--coordinator", default=None,
                        help="with --distributed: host:port of process 0 (default: auto-detected)")
    parser.add_argument("--num-processes", type=int, default=None,
                        help="with --distributed --coordinator: number of processes "
                        "(default: auto-detected)")
    parser.add_argument("--process-id", type=int, default=None,
                        help="with --distributed --coordinator: this process's index "
                        "(default: auto-detected)")


def add_linear_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--data`` (optional) and the options of a linear-SCM set simulated on the fly without it
    (:func:`activa_ppl.simulate.linear_dataset`, the defaults of ``activa simulate``)."""
    parser.add_argument("--data", default=None,
                        help="dataset folder written by `activa simulate` (default: none, simulate a "
                        "linear-SCM set with the options below)")
    parser.add_argument("--noise", choices=["gauss", "beta"], default="gauss",
                        help="without --data: noise family (default: %(default)s)")
    parser.add_argument("--num-vars", type=int, default=2,
                        help="without --data: variables per SCM (default: %(default)s)")
    parser.add_argument("--num-scms", type=int, default=3000,
                        help="without --data: SCMs simulated (default: %(default)s)")
    parser.add_argument("--num-samples", type=int, default=100,
                        help="without --data: observational samples per SCM (default: %(default)s)")
    parser.add_argument("--data-seed", type=int, default=0,
                        help="without --data: seed of the simulation (default: %(default)s)")


def training_data_from_args(args: argparse.Namespace):
    """The dataset of parsed arguments: ``args.data`` loaded, or (where ``args.data`` is empty and
    the options of :func:`add_linear_data_arguments` are present) a linear-SCM set simulated."""
    from activa_ppl.data import load_dataset

    if getattr(args, "data", None) or not hasattr(args, "num_scms"):
        return load_dataset(args.data)
    from activa_ppl.simulate.linear import linear_dataset

    return linear_dataset(num_scms=args.num_scms, num_vars=args.num_vars, noise=args.noise,
                          num_samples=args.num_samples, seed=args.data_seed)


def train_activa_from_args(args: argparse.Namespace, *,
                           info: Callable[[], dict[str, Any]] | None = None):
    """Train ACTIVA as the parsed options of :func:`add_training_arguments` say, and save it.

    Steps: ``jax.distributed.initialize`` (with ``--distributed``, before any JAX computation);
    the dataset (:func:`training_data_from_args`); ``ActivaConfig.preset(args.preset,
    num_interventions=max(1, |I| of the data))``, with ``--standardize`` the z-scored
    configuration and the dataset's nominal intervention values; :func:`activa_ppl.train`;
    the training data's ranges in ``fitted.info["training_data"]``
    (:func:`activa_ppl.model_info.training_data_ranges`); ``fitted.save(args.out)`` on process 0
    only (other processes of a multi-host run write nothing).

    Args:
        args: parsed options of :func:`add_training_arguments` plus ``data`` (and optionally
            those of :func:`add_linear_data_arguments`).
        info: called after training; its entries are added to ``fitted.info`` before the save
            (e.g. the machine description of a model card).

    Returns:
        the :class:`~activa_ppl.FittedActiva` (on every process).

    Raises:
        ValueError, OSError, TrainingDiverged: as :func:`activa_ppl.train`, ``load_dataset`` and
            :meth:`~activa_ppl.FittedActiva.save`.
    """
    from activa_ppl import training  # looked up at call time (tests replace training.train)
    from activa_ppl.config import ActivaConfig
    from activa_ppl.model import Activa

    if args.distributed:  # before any JAX computation
        from activa_ppl.distributed import initialize

        initialize(args.coordinator, args.num_processes, args.process_id)
    data = training_data_from_args(args)
    units = {}
    if args.standardize or args.regression_context or args.regression_residual or args.exact_targets:  # the model needs each index's value in data units
        from activa_ppl.standardize import nominal_intervention_values

        units = dict(standardize=args.standardize, intervention_values=nominal_intervention_values(data))
    config = ActivaConfig.preset(args.preset, num_interventions=max(1, data.num_interventions),
                                 decoder_context=args.decoder_context,
                                 regression_context=args.regression_context,
                                 regression_residual=args.regression_residual,
                                 exact_targets=args.exact_targets, covariance_head=args.covariance_head,
                                 cholesky_floor=args.cholesky_floor,
                                 predictive_estimate=args.predictive_estimate, **units,
                                 **{field: getattr(args, field) for _, field, _, _ in _PRESET_OVERRIDES
                                    if getattr(args, field, None) is not None})
    fitted = training.train(Activa(config), data, num_steps=args.steps, seed=args.seed,
                            batch_size=args.batch_size, learning_rate=args.lr,
                            eval_every=args.eval_every, workdir=args.workdir,
                            resume=not args.no_resume, progress=not args.quiet,
                            on_nonfinite=args.on_nonfinite, max_retries=args.max_retries,
                            data_parallel=args.data_parallel, lr_schedule=args.lr_schedule,
                            warmup_steps=args.warmup_steps, samples_per_task=args.samples_per_task,
                            time_budget_s=args.time_budget_s)
    import jax

    if jax.process_index() != 0:  # multi-host: process 0 writes the model
        return fitted
    from activa_ppl.model_info import training_data_ranges

    fitted.info["training_data"] = training_data_ranges(data)  # checked by predict (model_info)
    if info is not None:
        fitted.info.update(info())
    fitted.save(args.out)
    return fitted
