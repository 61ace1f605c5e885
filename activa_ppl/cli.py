"""The ``activa`` command line: demo, simulate, train, predict, evaluate, models.

Every command reports bad input, a file it cannot read or write, and a training run that
diverged (NaN/inf loss) as one line ``activa: error: …`` and exits with status 2, without a
traceback.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


def _cmd_demo(args):
    from activa_ppl.demo import run_demo

    run_demo(args.out, num_steps=args.steps, num_scms=args.num_scms, seed=args.seed,
             preset=args.preset, eval_scms=args.eval_scms, progress=not args.quiet)


def _cmd_simulate(args):
    if args.num_samples < 2 or args.num_scms < 1:
        raise ValueError("--num-samples must be at least 2 (a dataset needs 2 samples to be used) "
                         "and --num-scms at least 1")
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
    from activa_ppl.config import ActivaConfig
    from activa_ppl.data import load_dataset
    from activa_ppl.model import Activa
    from activa_ppl.training import train

    if args.distributed:  # before any JAX computation
        from activa_ppl.distributed import initialize

        initialize(args.coordinator, args.num_processes, args.process_id)
    data = load_dataset(args.data)
    standardize = {}
    if args.standardize:  # z-scored inputs: the model needs each index's value in data units
        from activa_ppl.standardize import nominal_intervention_values

        standardize = dict(standardize=True, intervention_values=nominal_intervention_values(data))
    config = ActivaConfig.preset(args.preset, num_interventions=max(1, data.num_interventions),
                                 **standardize)
    fitted = train(Activa(config), data, num_steps=args.steps, seed=args.seed,
                   batch_size=args.batch_size, learning_rate=args.lr, eval_every=args.eval_every,
                   workdir=args.workdir, resume=not args.no_resume, progress=not args.quiet,
                   on_nonfinite=args.on_nonfinite, max_retries=args.max_retries,
                   data_parallel=args.data_parallel)
    import jax

    if jax.process_index() != 0:  # multi-host: process 0 writes the model
        return
    fitted.save(args.out)
    print(f"best validation NLL {fitted.info['best_valid_nll']:.4f} at step "
          f"{fitted.info['best_step']}; model written to {args.out}")


def _resolve_model(name_or_path: str):
    from activa_ppl.fitted import load
    from activa_ppl.zoo import load_pretrained

    if Path(name_or_path).exists():
        return load(name_or_path)
    return load_pretrained(name_or_path)


def read_csv(path):
    """Read a CSV of observational samples (header row of variable names) with clear errors.

    The file must be UTF-8 text (a byte-order mark is allowed) whose first non-blank line names
    the variables; every further non-blank line holds one sample with one number per column.
    Blank lines are skipped, spaces around fields are ignored, fields may be double-quoted
    (strictly: a quote must close before the next delimiter). ``nan``/``inf`` parse as numbers
    (and are refused later, by :func:`activa_ppl.validation.as_observations`, with their column
    and row).

    Returns:
        ``pandas.DataFrame`` of float64 columns named by the header (names stripped of
        surrounding spaces).

    Raises:
        ValueError: a message naming the file and, where there is one, the line and column:
            missing file, not UTF-8 text, NUL bytes, malformed quoting (with its line), an empty
            file, a header without rows, an empty or duplicate column name, a first line of
            numbers only (no header), a line whose field
            count differs from the header's, an empty cell, or a cell that is not a number.
    """
    import io

    import numpy as np
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save the CSV as UTF-8") from e
    if "\x00" in text:
        raise ValueError(f"{path}: contains NUL bytes; not a text CSV file")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, skipinitialspace=True)
    lines = []  # (line number, fields) of the non-blank lines
    try:
        for row in reader:
            if row and not (len(row) == 1 and not row[0].strip()):
                lines.append((reader.line_num, row))
    except csv.Error as e:
        raise ValueError(f"{path}: malformed CSV on line {reader.line_num} ({e})") from e
    if not lines:
        raise ValueError(f"{path}: the file is empty")
    (_, header), body = lines[0], lines[1:]
    names = [c.strip() for c in header]
    unnamed = [j for j, c in enumerate(names) if not c]
    if unnamed:
        raise ValueError(f"{path}: column {unnamed[0] + 1} of the header has no name")
    if len(set(names)) != len(names):
        dup = sorted({c for c in names if names.count(c) > 1})
        raise ValueError(f"{path}: duplicate column names {dup}")
    if all(_is_number(c) for c in names):
        raise ValueError(f"{path}: the first line holds numbers ({', '.join(names[:3])}), not column "
                         "names; add a header row naming the variables")
    if not body:
        raise ValueError(f"{path}: has a header but no rows")
    for number, row in body:
        if len(row) != len(names):
            raise ValueError(f"{path}: line {number} has {len(row)} field(s) but the header names "
                             f"{len(names)} columns")
    columns = {}
    for j, name in enumerate(names):
        values = np.empty(len(body), dtype=np.float64)
        for i, (number, row) in enumerate(body):
            cell = row[j].strip()
            if not cell:
                raise ValueError(f"{path}: column {name!r} has an empty cell on line {number}")
            try:
                if "_" in cell:  # float() reads "1_000"; a CSV reader should not
                    raise ValueError(cell)
                values[i] = float(cell)
            except ValueError:
                raise ValueError(f"{path}: column {name!r} is non-numeric: line {number} holds "
                                 f"{cell[:40]!r}") from None
        columns[name] = values
    return pd.DataFrame(columns)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _cmd_predict(args):
    import numpy as np
    import pandas as pd

    frame = read_csv(args.data)
    fitted = _resolve_model(args.model)
    targets = [t.strip() for t in args.target.split(",")]
    targets = [int(t) if t.isdigit() and t not in frame.columns else t for t in targets]
    mix = fitted.predict(frame, target=targets, intervention=args.intervention, seed=args.seed)
    samples = np.asarray(mix.sample(args.num_samples, args.seed))
    pd.DataFrame(samples, columns=list(mix.variable_names)).to_csv(args.out, index=False)
    obs_mean = frame.to_numpy(dtype=float).mean(0)
    print(f"do({', '.join(map(str, targets))}) with intervention index {args.intervention}: "
          f"{mix.num_components}-component Gaussian mixture")
    print(f"{'variable':>12} {'obs. mean':>10} {'pred. mean':>10} {'pred. sd':>9} {'ATE':>8}")
    sd = np.sqrt(np.diag(np.asarray(mix.covariance)))
    for name, m0, m1, s in zip(mix.variable_names, obs_mean, np.asarray(mix.mean), sd):
        print(f"{name:>12} {m0:10.3f} {m1:10.3f} {s:9.3f} {m1 - m0:8.3f}")
    print(f"wrote {args.num_samples} samples to {args.out}")


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

    models = available_models()
    if not models:
        print("no pretrained models installed")
    for name, path in models.items():
        card = path / "card.md"
        title = card.read_text().splitlines()[0].lstrip("# ") if card.is_file() else ""
        summary = title.split(":", 1)[1].strip() if ":" in title else title
        print(f"{name:12s} {summary}\n{'':12s} {path}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``activa``."""
    parser = argparse.ArgumentParser(prog="activa", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="simulate Gauss 2, train a small model (~2 min), evaluate, plot")
    p.add_argument("--out", default="activa-demo", help="output folder (default: activa-demo)")
    p.add_argument("--steps", type=int, default=1200, help="SVI steps (default: 1200)")
    p.add_argument("--num-scms", type=int, default=3000)
    p.add_argument("--eval-scms", type=int, default=150, help="test SCMs evaluated (default 150)")
    p.add_argument("--preset", default="small", choices=["tiny", "small", "paper"])
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
    p.add_argument("--data", required=True, help="dataset folder written by `activa simulate`")
    p.add_argument("--out", required=True, help="folder for the trained model")
    p.add_argument("--preset", default="small", choices=["tiny", "small", "paper"])
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="checkpoint + metrics folder (enables resume)")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--on-nonfinite", choices=["stop", "retry"], default="stop",
                   help="a NaN/inf loss rolls back the chunk, then stops (default) or retries it "
                   "with a halved learning rate")
    p.add_argument("--max-retries", type=int, default=3, help="learning-rate halvings allowed")
    p.add_argument("--standardize", action="store_true",
                   help="ActivaConfig(standardize=True): z-score each dataset per variable (for data "
                   "whose scale varies between SCMs, e.g. 8-variable sets and SERGIO)")
    p.add_argument("--data-parallel", action="store_true",
                   help="shard each minibatch over all devices (batch size divisible by their number)")
    p.add_argument("--distributed", action="store_true",
                   help="multi-host: call jax.distributed.initialize first (auto-detects SLURM etc.; "
                   "every host needs the same --data); use with --data-parallel")
    p.add_argument("--coordinator", default=None, help="with --distributed: host:port of process 0")
    p.add_argument("--num-processes", type=int, default=None, help="with --distributed --coordinator")
    p.add_argument("--process-id", type=int, default=None, help="with --distributed --coordinator")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("predict", help="predict p(V | do(target)) for observational data in a CSV")
    p.add_argument("--model", required=True, help="zoo name (see `activa models`) or model folder")
    p.add_argument("--data", required=True, help="CSV of observational samples, header = variable names")
    p.add_argument("--target", required=True, help="intervened column name(s) or index(es), comma-separated")
    p.add_argument("--intervention", type=int, default=0, help="intervention value index i (default 0)")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="samples.csv")
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

    p = sub.add_parser("models", help="list the pretrained models")
    p.set_defaults(func=_cmd_models)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``activa`` command."""
    args = build_parser().parse_args(argv)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
