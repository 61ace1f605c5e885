"""The one training driver of the library: compiled chunks, validation, best parameters,
``metrics.jsonl``, atomic resumable checkpoints, the non-finite policy and a progress bar.

Every trained model (ACTIVA in :mod:`activa_ppl.training`, MACE-TNP in
:mod:`activa_ppl.baselines.mace_tnp.training`) supplies the same small interface, a
:class:`Chunks` object, and :func:`run` does the rest:

* ``Chunks.run(length, state) -> (state, losses (length,))``: ``length`` optimizer steps in one
  compiled call (built with :func:`chunk_function` over a pure ``update(state, *batch) ->
  (state, loss)`` step);
* ``Chunks.params(state)``, ``Chunks.validation_nll(params)``, ``Chunks.train_metrics(losses)``,
  ``Chunks.learning_rate(step)`` and ``Chunks.rescaled(scale)`` (the same run with its learning
  rate times ``scale``; the optimizer state carries over unchanged).

After each chunk the validation NLL is computed, the best parameters are kept, a JSON line is
appended to ``metrics.jsonl`` and a checkpoint is written atomically (``workdir``). Each
checkpoint records the run's configuration and the SHA-256 of its data (:func:`data_digest`);
a resume with another configuration or on other data is refused with a message naming both, and
the checkpoint's arrays are checked against the model's state and parameter tree (names,
shapes, dtypes, from each entry's header before any data is read) and its counters for type. A killed run
resumes from its last checkpoint and ends bit-identical (on the same machine) to an uninterrupted
run: all randomness comes from keys inside the state or derived from the step count.

Each ``metrics.jsonl`` line holds ``step``, the model's training metric(s) of the chunk,
``valid_nll``, ``best_valid_nll``, ``best_step``, ``learning_rate`` and ``elapsed_s`` (training
wall time summed over resumed runs).

Numerical faults: a chunk whose loss or state holds NaN/inf, or after which the validation NLL is
NaN/inf, is never accepted: the state rolls back to the start of the chunk, nothing is written,
and ``on_nonfinite`` decides: ``"stop"`` raises :class:`TrainingDiverged` (carrying the last good
step, the checkpoint path and the best model so far); ``"retry"`` halves the learning rate, logs
a warning on the ``activa_ppl.loop`` logger and runs the chunk again, at most ``max_retries``
times per run; the reduced rate is stored in the checkpoint, so a resumed run continues with it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from tqdm.auto import tqdm

from activa_ppl.checkpoint import CheckpointError, array_digest, load_arrays, read_meta, save_arrays
from activa_ppl.model_io import flatten_params, unflatten_params
from activa_ppl.validation import check_positive_int

__all__ = ["Chunks", "LoopResult", "TrainingDiverged", "run", "chunk_function", "all_finite",
           "validation_subset", "merge_overrides", "check_policy", "run_summary", "NONFINITE_POLICIES",
           "CHECKPOINT_NAME", "METRICS_NAME", "MAX_EVAL_EVERY", "MAX_STEPS", "data_digest"]

CHECKPOINT_NAME = "checkpoint.npz"
METRICS_NAME = "metrics.jsonl"
#: The longest chunk (``eval_every``): its loss buffer holds one float per step.
MAX_EVAL_EVERY = 10**6
#: The most optimizer steps of a run (the step counter is an int32).
MAX_STEPS = 2**31 - 1
#: The values of ``on_nonfinite``.
NONFINITE_POLICIES = ("stop", "retry")

logger = logging.getLogger(__name__)


class TrainingDiverged(FloatingPointError):
    """The loss, the parameters or the validation NLL became NaN/inf.

    Nothing non-finite is ever written or returned: the checkpoint, if any, keeps the last good
    state.

    Attributes:
        step: the last good step (0 if no chunk completed).
        checkpoint: path of the checkpoint holding the last good state, or ``None``.
        fitted: the fitted model with the best parameters so far (the initial parameters when no
            chunk completed, ``info["best_step"] == -1`` then), or ``None``.
    """

    def __init__(self, message: str, *, step: int | None = None, checkpoint: Path | None = None,
                 fitted: Any = None):
        super().__init__(message)
        self.step, self.checkpoint, self.fitted = step, checkpoint, fitted


class Chunks(Protocol):
    """What a model's trainer hands to :func:`run` (see the module docstring).

    ``train_arrays`` and ``valid_arrays`` (tuples of arrays) are the data the run trains and
    validates on; their digest (:func:`data_digest`) goes into every checkpoint, and a resume on
    other data is refused.
    """

    train_arrays: tuple
    valid_arrays: tuple

    def run(self, length: int, state) -> tuple[Any, jax.Array]:
        """``length`` optimizer steps from ``state`` in one compiled call: ``(state, losses (length,))``."""

    def params(self, state) -> Any:
        """The model parameters held by ``state``."""

    def validation_nll(self, params) -> float:
        """Mean NLL per held-out interventional sample under ``params`` (lower is better)."""

    def train_metrics(self, losses: np.ndarray) -> dict:
        """The chunk's training metric(s) for ``metrics.jsonl``, from its ``(length,)`` losses."""

    def learning_rate(self, step: int) -> float:
        """The learning rate in force at ``step`` (for the log)."""

    def rescaled(self, scale: float) -> "Chunks":
        """The same run with its learning rate times ``scale``; the optimizer state carries over."""


@dataclasses.dataclass
class LoopResult:
    """The outcome of :func:`run`: where it stopped and the best parameters seen."""

    step: int
    best_step: int
    best_nll: float
    best_params: Any
    elapsed_s: float
    retries: int
    lr_scale: float


def chunk_function(update: Callable, minibatch: Callable, step_of: Callable, max_length: int,
                   out_shardings=None):
    """A compiled loop of ``length`` optimizer steps, ``1 <= length <= max_length``.

    Args:
        update: ``update(state, *batch) -> (state, loss)``, one pure optimizer step.
        minibatch: ``minibatch(key, arrays) -> batch``, the step's minibatch from the training
            arrays and a key that depends only on the run's batch key and the step count.
        step_of: ``step_of(state) -> int32 scalar``, optimizer steps taken.
        max_length: the longest chunk (the size of the loss buffer).
        out_shardings: passed to ``jax.jit`` (data parallelism keeps the state replicated).

    Returns:
        jitted ``run(state, length, batch_key, *arrays) -> (state, losses (max_length,))``;
        ``length`` is traced, so every chunk length shares one compiled function, and only
        ``losses[:length]`` are meaningful.
    """

    def run_chunk(state, length, batch_key, *arrays):
        def one_step(i, carry):
            s, losses = carry
            batch = minibatch(jax.random.fold_in(batch_key, step_of(s)), arrays)
            s, loss = update(s, *batch)
            return s, losses.at[i].set(loss)

        losses = jnp.zeros((max_length,), jnp.float32)
        return jax.lax.fori_loop(0, length, one_step, (state, losses))

    return jax.jit(run_chunk) if out_shardings is None else jax.jit(run_chunk, out_shardings=out_shardings)


def check_policy(on_nonfinite: str, max_retries: int) -> None:
    """Raise ``ValueError`` unless ``on_nonfinite`` is a policy and ``max_retries`` a count."""
    if on_nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"on_nonfinite must be one of {NONFINITE_POLICIES}, got {on_nonfinite!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be a non-negative integer, got {max_retries!r}")


def all_finite(tree) -> bool:
    """Whether every floating-point leaf of ``tree`` is free of NaN/inf (integer leaves skipped)."""
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(tree)
               if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact))


def merge_overrides(config, num_steps: int | None, seed: int | None, overrides: dict):
    """``config`` (a frozen dataclass) with ``num_steps``, ``seed`` and ``overrides`` replaced.

    Raises:
        ValueError: ``num_steps`` above :data:`MAX_STEPS`, ``eval_every`` above
            :data:`MAX_EVAL_EVERY`, or ``seed`` not an integer in ``0..2**63-1`` (checked
            before anything is allocated); the message names the field.
    """
    fields = dict(overrides)
    if num_steps is not None:
        fields["num_steps"] = num_steps
    if seed is not None:
        fields["seed"] = seed
    config = dataclasses.replace(config, **fields)
    for name, bound in (("num_steps", MAX_STEPS), ("eval_every", MAX_EVAL_EVERY)):
        if check_positive_int(getattr(config, name), name) > bound:
            raise ValueError(f"{name}: at most {bound} (each step of a chunk keeps its loss in a buffer "
                             f"of eval_every floats), got {getattr(config, name)}")
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or not 0 <= config.seed < 2**63:
        raise ValueError(f"seed: expected an integer in 0..2**63-1, got {config.seed!r}")
    return config


def data_digest(chunks) -> str:
    """SHA-256 of the training and validation arrays of ``chunks`` (names, dtypes, shapes, bytes;
    streamed, no copy of host arrays): the identity of the data a run is on."""
    def host(x):
        if getattr(x, "is_fully_addressable", True) is False:  # multi-host: every device holds it all
            x = x.addressable_shards[0].data
        return np.asarray(x)

    arrays = {f"{part}/{i}": host(x) for part in ("train_arrays", "valid_arrays")
              for i, x in enumerate(jax.tree_util.tree_leaves(getattr(chunks, part)))}
    return array_digest(arrays)


def validation_subset(data, num_validation_tasks: int, seed: int):
    """``(train_tasks, valid_tasks, pick)``: the splits and a fixed, seeded subset of at most
    ``num_validation_tasks`` validation task indices.

    Raises:
        ValueError: the train or valid split is empty.
    """
    train_tasks, valid_tasks = data.tasks("train"), data.tasks("valid")
    if len(train_tasks.scm) == 0 or len(valid_tasks.scm) == 0:
        raise ValueError("the dataset needs non-empty 'train' and 'valid' splits")
    num_valid = min(num_validation_tasks, len(valid_tasks.scm))
    pick = np.random.default_rng(seed).permutation(len(valid_tasks.scm))[:num_valid]
    return train_tasks, valid_tasks, pick


def run_summary(result: LoopResult, config, data) -> dict:
    """The ``info`` of a fitted model after a training run (ACTIVA and MACE-TNP alike)."""
    info = {
        "num_steps": result.step,
        "best_step": result.best_step,
        "best_valid_nll": result.best_nll,
        "train_config": config.to_dict(),
        "dataset": data.metadata,
        "wall_time_s": round(result.elapsed_s, 1),
    }
    if result.retries:
        info.update(nonfinite_retries=result.retries,
                    final_learning_rate=config.learning_rate * result.lr_scale)
    return info


def _restore_state(template, leaves: list[np.ndarray], path: Path):
    ref, treedef = jax.tree_util.tree_flatten(template)
    if len(ref) != len(leaves) or any(
        a.shape != b.shape or a.dtype != b.dtype for a, b in zip(ref, leaves)
    ):
        raise CheckpointError(
            f"{path}: the checkpoint does not match this model/optimizer (different architecture?)"
        )
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in leaves])


def _truncate_metrics(path: Path | None, step: int) -> None:
    """Drop metric lines logged after the checkpoint a run resumes from."""
    if path is None or not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            break  # a line cut short by the kill
    path.write_text("".join(l + "\n" for l in kept))


def _chunk_fault(losses: np.ndarray, state, step: int) -> str | None:
    """Why a chunk that started after ``step`` must be rejected, or ``None``."""
    if not np.all(np.isfinite(losses)):
        bad = int(np.argmax(~np.isfinite(losses)))
        return f"non-finite loss ({losses[bad]}) at step {step + bad + 1}"
    if not all_finite(state):
        return f"non-finite parameters or optimizer state after step {step + len(losses)}"
    return None


_NUMBERS = {"step": (int,), "best_step": (int,), "num_state_leaves": (int,), "best_nll": (int, float),
            "elapsed_s": (int, float), "lr_scale": (int, float), "retries": (int,)}


def _check_saved_meta(saved: dict, path: Path) -> None:
    """Refuse checkpoint metadata whose counters are missing or of the wrong type or range."""
    defaults = {"elapsed_s": 0.0, "retries": 0, "lr_scale": 1.0}
    for key, types in _NUMBERS.items():
        value = saved.get(key, defaults.get(key))
        ok = not isinstance(value, bool) and isinstance(value, types) and not math.isnan(value)
        if ok and key != "best_nll":
            least = -1 if key == "best_step" else 0
            ok = math.isfinite(value) and value >= least and (key != "lr_scale" or value > 0)
        if not ok:
            kind = "a number" if float in types else "a non-negative integer"
            raise CheckpointError(f"{path}: metadata field {key!r} must be {kind}, got {value!r:.40}")


def _differences(saved: dict, meta: dict) -> str:
    """The configuration fields in which ``saved`` and ``meta`` differ, for an error message."""
    found = []
    for part in ("model_config", "train_config"):
        a, b = saved.get(part), meta.get(part)
        a, b = (a if isinstance(a, dict) else {}), (b if isinstance(b, dict) else {})
        found += [f"{part}.{k}: checkpoint {a.get(k)!r:.30}, this run {b.get(k)!r:.30}"
                  for k in sorted(set(a) | set(b), key=str) if a.get(k) != b.get(k)]
    return "; ".join(found[:6]) or "format or model"


def _describe(dataset) -> str:
    """A dataset's metadata in a few words (its generator, seed and sizes, where recorded)."""
    if not isinstance(dataset, dict):
        return f"{dataset!r:.60}"
    keys = [k for k in ("generator", "seed", "noise", "num_vars", "num_scms") if k in dataset]
    return "{" + ", ".join(f"{k!r}: {dataset[k]!r:.30}" for k in keys) + "}" if keys else f"{dataset!r:.80}"


def _resume(path: Path, state, params, meta: dict, compatible: Callable, digest: str):
    """``(state, LoopResult)`` from the checkpoint at ``path``, after checking that it
    comes from this configuration and this data and holds the arrays of this model."""
    saved = read_meta(path)
    if not compatible(saved):
        raise CheckpointError(f"{path}: written by a run with a different configuration "
                              f"({_differences(saved, meta)}); use another workdir or resume=False")
    if saved.get("data_sha256", digest) != digest:
        raise CheckpointError(
            f"{path}: written by a run on other data (training and validation arrays with SHA-256 "
            f"{str(saved.get('data_sha256'))[:16]}…, dataset {_describe(saved.get('dataset'))}); this run's "
            f"data has SHA-256 {digest[:16]}… (dataset {_describe(meta.get('dataset'))}); use another workdir "
            "or resume=False")
    _check_saved_meta(saved, path)
    template = jax.tree_util.tree_leaves(state)
    if saved["num_state_leaves"] != len(template):
        raise CheckpointError(f"{path}: holds {saved['num_state_leaves']} state arrays, this model and "
                              f"optimizer have {len(template)} (different architecture?)")
    expected = {f"state/{i:04d}": (tuple(x.shape), np.dtype(x.dtype).str) for i, x in enumerate(template)}
    expected.update({f"best/{k}": (tuple(v.shape), np.dtype(v.dtype).str)
                     for k, v in traverse_util.flatten_dict(params, sep="/").items()})
    arrays, saved = load_arrays(path, expected)  # shapes checked before any data is read
    leaves = [arrays[f"state/{i:04d}"] for i in range(len(template))]
    state = _restore_state(state, leaves, path)
    best = unflatten_params({k[5:]: v for k, v in arrays.items() if k.startswith("best/")})
    if not all_finite(state) or not all_finite(best):
        raise CheckpointError(f"{path}: holds NaN/inf values; refusing to resume from it")
    result = LoopResult(step=saved["step"], best_step=saved["best_step"], best_nll=float(saved["best_nll"]),
                        best_params=best, elapsed_s=float(saved.get("elapsed_s", 0.0)),
                        retries=int(saved.get("retries", 0)), lr_scale=float(saved.get("lr_scale", 1.0)))
    return state, result


def run(chunks: Chunks, state, *, num_steps: int, eval_every: int, workdir: str | Path | None,
        resume: bool, meta: dict, compatible: Callable[[dict], bool], finish: Callable,
        restore: Callable = lambda state: state, progress: bool = True, desc: str = "training",
        on_nonfinite: str = "stop", max_retries: int = 3, time_budget_s: float | None = None,
        writer: bool = True, name: str = "training") -> LoopResult:
    """Train from ``state`` to ``num_steps`` steps in chunks of ``eval_every``.

    Args:
        chunks: the model's :class:`Chunks`.
        state: the initial optimizer state (replaced by the checkpoint's when resuming).
        num_steps: total optimizer steps of the run.
        eval_every: steps per chunk; validation, metrics and a checkpoint follow each.
        workdir: folder for ``checkpoint.npz`` and ``metrics.jsonl``; ``None`` keeps nothing.
        resume: continue from ``workdir/checkpoint.npz`` if present.
        meta: JSON-serialisable description of the run stored in every checkpoint.
        compatible: ``compatible(saved_meta) -> bool``, whether a checkpoint may be resumed by
            this run (same model and training configuration, up to the fields that may change).
        finish: ``finish(best_params, result) -> fitted model``, for :class:`TrainingDiverged`.
        restore: applied to a state read from a checkpoint (e.g. replicate it over a mesh).
        progress: show a progress bar (labelled ``desc``).
        on_nonfinite, max_retries: the non-finite policy (module docstring).
        time_budget_s: stop after the first chunk at which the training wall time (summed over
            resumes) reaches this many seconds (``None``: run to ``num_steps``).
        writer: whether this process writes files (with several processes only process 0 does).
        name: the model's name in log messages.

    Raises:
        TrainingDiverged: see the module docstring.
        ValueError: invalid ``on_nonfinite`` / ``max_retries``.
        CheckpointError: the checkpoint is corrupted, unsafe, from another configuration, or
            holds NaN/inf values.
    """
    check_policy(on_nonfinite, max_retries)
    result = LoopResult(step=0, best_step=-1, best_nll=math.inf, best_params=chunks.params(state),
                        elapsed_s=0.0, retries=0, lr_scale=1.0)
    workdir = Path(workdir) if workdir is not None else None
    ckpt_path = workdir / CHECKPOINT_NAME if workdir else None
    metrics_path = workdir / METRICS_NAME if workdir else None
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    elapsed_before = 0.0
    digest = data_digest(chunks) if ckpt_path is not None else None
    if ckpt_path is not None and resume and ckpt_path.exists():
        state, result = _resume(ckpt_path, state, result.best_params, meta, compatible, digest)
        state = restore(state)
        elapsed_before = result.elapsed_s
        if result.lr_scale != 1.0:  # the run had halved its learning rate after a non-finite chunk
            chunks = chunks.rescaled(result.lr_scale)
        if writer:
            _truncate_metrics(metrics_path, result.step)
    elif metrics_path is not None and metrics_path.exists() and writer:
        metrics_path.unlink()  # a fresh run starts a fresh log

    start = time.perf_counter()
    bar = tqdm(total=num_steps, initial=result.step, disable=not (progress and writer), desc=desc,
               unit="step", dynamic_ncols=True)
    try:
        while result.step < num_steps:
            step = result.step
            length = min(eval_every, num_steps - step)
            new_state, losses = chunks.run(length, state)
            losses = np.asarray(losses)
            fault = _chunk_fault(losses, new_state, step)
            if fault is None:
                params = chunks.params(new_state)
                nll = float(chunks.validation_nll(params))
                if not math.isfinite(nll):
                    fault = f"non-finite validation NLL ({nll}) after step {step + length}"
            if fault is not None:
                # Roll back: ``state`` still holds the last good state; nothing was written.
                has_ckpt = ckpt_path is not None and ckpt_path.exists()
                good = f"last good state is step {step}" + (f" (checkpoint {ckpt_path})" if has_ckpt else "")
                learning_rate = chunks.learning_rate(step)
                if on_nonfinite == "retry" and result.retries < max_retries:
                    result.retries, result.lr_scale = result.retries + 1, result.lr_scale / 2
                    chunks = chunks.rescaled(result.lr_scale)
                    logger.warning(
                        "%s: %s; rolled back to step %d and retrying with learning rate %g (was %g; "
                        "retry %d of %d)", name, fault, step, chunks.learning_rate(step), learning_rate,
                        result.retries, max_retries)
                    continue
                hint = (f"; gave up after {result.retries} retr{'y' if result.retries == 1 else 'ies'} "
                        f"with halved learning rates (last {learning_rate:g})" if on_nonfinite == "retry"
                        else "; lower the learning rate, set clip_norm, or train(on_nonfinite='retry')")
                result.elapsed_s = elapsed_before + time.perf_counter() - start
                raise TrainingDiverged(
                    f"{fault}; stopped, {good}; no non-finite value was written{hint}",
                    step=step, checkpoint=ckpt_path if has_ckpt else None,
                    fitted=finish(result.best_params, result))
            state, result.step = new_state, step + length
            if nll < result.best_nll:
                result.best_nll, result.best_step, result.best_params = nll, result.step, params
            result.elapsed_s = elapsed_before + time.perf_counter() - start
            record = {"step": result.step, **chunks.train_metrics(losses), "valid_nll": nll,
                      "best_valid_nll": result.best_nll, "best_step": result.best_step,
                      "learning_rate": chunks.learning_rate(result.step),
                      "elapsed_s": round(result.elapsed_s, 3)}
            if ckpt_path is not None and writer:
                # Metrics first: a kill before the checkpoint lands leaves a line past the
                # checkpoint, which a resumed run drops and rewrites (_truncate_metrics).
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                leaves = jax.tree_util.tree_leaves(state)
                arrays = {f"state/{i:04d}": np.asarray(x) for i, x in enumerate(leaves)}
                arrays.update({f"best/{k}": v for k, v in flatten_params(result.best_params).items()})
                save_arrays(ckpt_path, arrays, {
                    **meta, "step": result.step, "best_step": result.best_step, "best_nll": result.best_nll,
                    "num_state_leaves": len(leaves), "elapsed_s": record["elapsed_s"],
                    "lr_scale": result.lr_scale, "retries": result.retries, "data_sha256": digest,
                })
            bar.update(length)
            first = next(iter(chunks.train_metrics(losses).values()))
            bar.set_postfix(loss=f"{first:.3f}", valid_nll=f"{nll:.3f}")
            if time_budget_s is not None and result.elapsed_s >= time_budget_s:
                break
    finally:
        bar.close()
    result.elapsed_s = elapsed_before + time.perf_counter() - start
    return result
