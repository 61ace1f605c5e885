"""The ``activa`` command line: demo, simulate, train, predict, evaluate, models.

Every command reports bad input, a file it cannot read or write, and a training run that
diverged (NaN/inf loss) as one line ``activa: error: …`` and exits with status 2, without a
traceback; so are sizes beyond memory and, as an "internal error", anything unforeseen
(``ACTIVA_DEBUG=1`` re-raises it with its traceback). The package's own warnings (an input
unlike the training data, a folder shadowing a zoo model) are one ``activa: warning: …`` line each.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from activa_ppl.arguments import add_training_arguments

__all__ = ["main", "build_parser"]


def _cmd_demo(args):
    from activa_ppl.demo import run_demo

    run_demo(args.out, num_steps=args.steps, num_scms=args.num_scms, seed=args.seed,
             preset=args.preset, eval_scms=args.eval_scms, progress=not args.quiet, paper_model=args.paper_model)


def _cmd_simulate(args):
    if args.num_samples < 2 or args.num_scms < 1:
        raise ValueError("--num-samples must be at least 2 (a dataset needs 2 samples to be used) "
                         "and --num-scms at least 1")
    from activa_ppl.memory import check_memory, simulate_bytes

    check_memory(simulate_bytes(args.num_scms, args.num_samples, args.num_vars), f"simulating --num-scms "
                 f"{args.num_scms} x --num-samples {args.num_samples} x --num-vars {args.num_vars}")
    from activa_ppl.simulate.ambiguous import ambiguous_dataset
    from activa_ppl.simulate.linear import linear_dataset

    if args.generator == "ambiguous":
        if args.num_vars != 2:
            raise ValueError("the ambiguous generator has exactly 2 variables")
        data = ambiguous_dataset(num_scms=args.num_scms, num_samples=args.num_samples, seed=args.seed)
    elif args.generator == "sergio":
        from activa_ppl.simulate.sergio import sergio_dataset

        graph = args.graph[0] if len(args.graph) == 1 else args.graph
        data = sergio_dataset(num_networks=args.num_scms, preset=args.sergio_preset,
                              num_cells=args.num_samples, graph=graph, seed=args.seed,
                              num_cell_types=args.cell_types, progress=True)
    else:
        data = linear_dataset(num_scms=args.num_scms, num_vars=args.num_vars, noise=args.noise,
                              num_samples=args.num_samples, seed=args.seed)
    data.save(args.out)
    print(f"wrote {data!r} to {args.out}")


def _cmd_train(args):
    from activa_ppl.arguments import train_activa_from_args

    fitted = train_activa_from_args(args)
    import jax

    if jax.process_index() != 0:  # multi-host: process 0 wrote the model
        return
    print(f"best validation NLL {fitted.info['best_valid_nll']:.4f} at step "
          f"{fitted.info['best_step']}; model written to {args.out}")


def _check_out(out: str, data: str, force: bool) -> None:
    """Refuse an ``--out`` that is the ``--data`` file, or that exists without ``--force``."""
    out_path = Path(out)
    if out_path.exists() or out_path.is_symlink():
        if Path(data).exists() and out_path.resolve() == Path(data).resolve():
            raise ValueError(f"--out {out}: is the input file --data {data}; write the predictions elsewhere")
        if not force:
            raise ValueError(f"--out {out}: exists; pass --force to overwrite it")


def _cmd_predict(args):
    from activa_ppl.predict_report import run_predict

    for out in (args.out, args.json, args.plot):
        if out:
            _check_out(out, args.data, args.force)
    run_predict(args)


def _cmd_evaluate(args):
    from activa_ppl.report import run_evaluation

    methods = [m for m in args.methods.split(",") if m.strip()]
    report = run_evaluation(args.dataset, methods, args.out, split=args.split, seed=args.seed,
                            max_scms=args.max_scms, average=args.average,
                            figure_scms=args.figure_scms, progress=not args.quiet)
    print((Path(args.out) / "table1.md").read_text())
    print(f"wrote table1.md, results.json, records.csv.gz and figures to {args.out} "
          f"({sum(len(d['methods']) for d in report['datasets'])} method rows)")


def _cmd_models(args):
    from activa_ppl.zoo import available_models

    import json

    from activa_ppl.model_info import describe_model

    models = available_models()
    if not models:
        print("no pretrained models installed")
    for name, path in models.items():
        card = path / "card.md"
        lines = card.read_text(encoding="utf-8", errors="replace").splitlines() if card.is_file() else []
        title = lines[0].lstrip("# ") if lines else ""
        summary = title.split(":", 1)[1].strip() if ":" in title else title
        saved = json.loads((path / "config.json").read_text())
        about = describe_model(None, saved.get("model_config", {}), saved.get("info", {})).split(", ", 1)[1]
        print(f"{name:12s} {summary}\n{'':12s} {about}\n{'':12s} {path}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``activa``."""
    parser = argparse.ArgumentParser(prog="activa", description=__doc__.splitlines()[0].replace("``", ""))
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="simulate Gauss 2, train a small model (~2 min), evaluate, plot")
    p.add_argument("--out", default="activa-demo", help="output folder (default: activa-demo)")
    p.add_argument("--steps", type=int, default=1200, help="SVI steps (default: 1200)")
    p.add_argument("--num-scms", type=int, default=3000)
    p.add_argument("--eval-scms", type=int, default=150, help="test SCMs evaluated (default 150)")
    p.add_argument("--preset", default="small", choices=["tiny", "small", "paper"],
                   help="architecture size (default: small)")
    p.add_argument("--paper-model", action="store_true",
                   help="train Eq. 4 exactly as in the paper (decoder sees z only, beta 0.5, S = 10, constant "
                        "learning rate) instead of the recommended recipe (docs: Concepts, 'Beyond Eq. 4')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("simulate", help="simulate a dataset (linear Gauss/Beta SCMs of Appendix C.1, "
                       "or the ambiguous-direction 2-variable set)")
    p.add_argument("--generator", choices=["linear", "ambiguous", "sergio"], default="linear",
                   help="linear: paper Appendix C.1; ambiguous: X0->X1 or X1->X0, direction not "
                   "identifiable (activa_ppl.simulate.ambiguous); sergio: SERGIO gene expression with "
                   "every single-gene knockout (Appendix C.2; --num-scms networks, --num-samples cells "
                   "per condition, 30 in the paper)")
    p.add_argument("--sergio-preset", choices=["in_distribution", "ood"], default="in_distribution",
                   help="SERGIO parameter ranges of Table 2: 8 genes, or 11 genes (OOD, all test split)")
    p.add_argument("--graph", nargs="+", default=["er"],
                   help="SERGIO graphs: 'er', 'scale_free' and/or E. coli / yeast edge-list files "
                   "(docs/sergio.md)")
    p.add_argument("--cell-types", type=int, default=5, help="SERGIO cell types per simulation")
    p.add_argument("--noise", choices=["gauss", "beta"], default="gauss")
    p.add_argument("--num-vars", type=int, default=2)
    p.add_argument("--num-scms", type=int, default=3000)
    p.add_argument("--num-samples", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder (data.npz + manifest.json)")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("train", help="train ACTIVA on a saved dataset")
    p.add_argument("--data", required=True, help="dataset folder written by `activa simulate` (required)")
    add_training_arguments(p)  # shared with inference/train.py (activa_ppl.arguments)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("predict", help="predict p(V | do(target)) for observational data in a CSV",
                       description="Predict the joint distribution of every variable after intervening on "
                       "--target, zero-shot, from observational samples; print it per variable and as "
                       "modes (more than one: the data leave the causal effect ambiguous). Warns when the "
                       "input is unlike the model's training data (--strict: error).")
    p.add_argument("--model", required=True, help="zoo name (see `activa models`) or model folder (required)")
    p.add_argument("--data", required=True,
                   help="CSV of observational samples, header = variable names (required)")
    p.add_argument("--target", required=True,
                   help="intervened column name(s) or index(es), comma-separated (required)")
    p.add_argument("--value", type=float, default=None,
                   help="intervention value, e.g. 5 for do(X0 = 5); must be one the model was trained on "
                   "(listed by `activa models`; default: the value of --intervention)")
    p.add_argument("--intervention", type=int, default=None,
                   help="intervention value by index i instead of --value (default 0)")
    p.add_argument("--num-samples", type=int, default=1000,
                   help="predicted samples written to --out (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the prediction and the samples (default 0)")
    p.add_argument("--strict", action="store_true",
                   help="an input outside the training data's range is an error, not a warning (default: off)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write the report (per-variable table, modes, warnings) as JSON (default: none)")
    p.add_argument("--plot", default=None, metavar="PATH",
                   help="also plot observed vs predicted samples to this image, e.g. out.png (default: none)")
    p.add_argument("--plot-vars", default=None, metavar="A[,B]",
                   help="one or two variables of --plot (default: the first two)")
    p.add_argument("--out", default="samples.csv",
                   help="CSV of predicted samples (default: samples.csv; never the --data file)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file (default: off)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("evaluate", help="Table 1, Figures 3 and 4 for methods on saved datasets",
                       description="Evaluate methods on the test split of one or more datasets (paper "
                       "Section 6.3) and write table1.md, results.json, records.csv.gz and figures.")
    p.add_argument("--dataset", action="append", required=True, metavar="[LABEL=]PATH[@MODEL]",
                   help="dataset folder (repeatable); MODEL replaces {model} in --methods")
    p.add_argument("--methods", default="gaussian-conditional,linear-causal",
                   help="comma-separated: activa:MODEL (zoo name or folder; activa:{model} takes the "
                   "dataset's @MODEL), gaussian-conditional, linear-causal, and any registered method")
    p.add_argument("--out", default="evaluation", help="output folder (default: evaluation)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--max-scms", type=int, default=None, help="evaluate only the first N SCMs")
    p.add_argument("--average", default="task", choices=["task", "scm"],
                   help="average over tasks (default; matches the paper) or per SCM first")
    p.add_argument("--figure-scms", type=int, default=4, help="SCMs in Figure 3 (0: no figure)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("models", help="list the pretrained models with their intervention values")
    p.set_defaults(func=_cmd_models)
    return parser


#: Subcommands that run XLA for long (training, evaluation): they re-execute once with glibc's
#: huge-page allocator (:mod:`activa_ppl.allocator`; ``ACTIVA_NO_HUGETLB=1`` turns it off).
HUGETLB_COMMANDS = ("demo", "train", "evaluate")


def _wants_hugetlb(argv: list[str]) -> bool:
    """Whether the command line ``argv`` (without the program name) runs a
    :data:`HUGETLB_COMMANDS` subcommand (its first word that is not an option)."""
    words = [a for a in argv if not a.startswith("-")]
    return bool(words) and words[0] in HUGETLB_COMMANDS


def main(argv=None) -> int:
    """Entry point of the ``activa`` command."""
    if argv is None and _wants_hugetlb(sys.argv[1:]):  # the real command line, not a library call
        from activa_ppl.allocator import apply_hugetlb

        apply_hugetlb()
    args = build_parser().parse_args(argv)
    if args.command == "evaluate":  # before JAX's first computation (an XLA hang: activa_ppl.dispatch)
        from activa_ppl.dispatch import evaluation_runtime

        evaluation_runtime()
    python_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        """The package's own warnings as one ``activa: warning: …`` line; others as Python shows them."""
        if category.__module__.startswith("activa_ppl"):
            print(f"activa: warning: {' '.join(str(message).split())}", file=sys.stderr)
        else:
            python_show(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.showwarning = show
        return _run(args)


def _run(args) -> int:
    """``args.func(args)``, every failure one ``activa: error:`` line and status 2."""
    try:
        args.func(args)
    except (ValueError, OSError, FloatingPointError) as e:
        # ValueError: bad input (CheckpointError included); OSError: unreadable or unwritable
        # paths (missing, permission, disk full); FloatingPointError: TrainingDiverged.
        prefix = "training diverged: " if isinstance(e, FloatingPointError) else ""
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"activa: error: {prefix}{message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("activa: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, OverflowError, RecursionError) as e:  # sizes beyond what the checks foresaw
        print(f"activa: error: {type(e).__name__}: {' '.join(str(e).split())[:300]} (input too large?)",
              file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 (the one-line contract: no traceback reaches a user)
        if os.environ.get("ACTIVA_DEBUG"):
            raise
        print(f"activa: error: internal error, {type(e).__name__}: {' '.join(str(e).split())[:300]} "
              "(please report it; ACTIVA_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
