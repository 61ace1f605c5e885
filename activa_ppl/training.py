"""Training ACTIVA by SVI: compiled chunks of ``svi.update``, validation, best-parameter
tracking and atomic, resumable checkpoints.

:func:`train` is the convenience entry point. Under it, every ``eval_every`` steps run as one
compiled loop over ``svi.update`` (no per-step Python dispatch); after each chunk the validation NLL of the prior-predictive mixture is computed, the best
parameters are kept, a checkpoint is written atomically and a JSON line is appended to
``metrics.jsonl``. A killed run resumes from its last checkpoint and ends bit-identical to an
uninterrupted run with the same seed: all randomness comes from the PRNG key inside the SVI
state, which is checkpointed with it.

Each ``metrics.jsonl`` line holds ``step``; ``train_loss_per_sample``, the chunk's mean
β-weighted negative ELBO (the SVI loss) divided by the number of training tasks and of
interventional samples per task; ``valid_nll``, the mean NLL per held-out interventional sample
under the prior-predictive mixture; ``best_valid_nll`` and ``best_step``; ``learning_rate``, the
rate the chunk ran with (below ``TrainConfig.learning_rate`` only after a non-finite retry); and
``elapsed_s``, training wall time summed over resumed runs.

Numerical faults: a chunk whose loss, parameters or optimizer state hold NaN/inf, or after
which the validation NLL is NaN/inf, is never accepted: the state rolls back to the start of the
chunk, nothing is written, and ``train(on_nonfinite=...)`` decides what follows. ``"stop"``
(default) raises :class:`TrainingDiverged`, which carries the last good step, the checkpoint
path and a :class:`FittedActiva` of the best parameters so far. ``"retry"`` halves the
learning rate, logs a warning on the ``activa_ppl.training`` logger and runs the chunk again
from the rolled-back state, at most ``max_retries`` times per run; the reduced rate is kept
for the rest of the run and stored in the checkpoint, so a resumed run continues with it,
bit-identically.

Compilation: the chunk's step count is a traced argument (a ``lax.fori_loop`` writing the
losses into a fixed ``(eval_every,)`` buffer), so a shorter last chunk reuses the compiled
function, and the compiled chunk is cached on what is truly static (the model configuration,
learning rate, ``clip_norm``, batch size, number of training tasks, ``eval_every``, the device
mesh); seeds and keys are traced arguments. Training a second dataset of the same shapes with an
equal configuration, or the same dataset with another seed, does not compile again. A retry under
``on_nonfinite="retry"`` changes the learning rate and so compiles once more.

Data parallelism: ``TrainConfig(data_parallel=True)`` shards every step's minibatch over all
devices (:func:`data_mesh`, one ``"data"`` axis) while parameters and optimizer state stay
replicated; on several hosts call :func:`activa_ppl.distributed.initialize` first (see the
"Scaling" page of the documentation).

Users who want the plain NumPyro loop call ``activa.svi(optimizer, subsample_size=B).run(...)``
themselves (see the "Training your own" tutorial).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from activa_ppl.checkpoint import CheckpointError, load_arrays, save_arrays
from activa_ppl.config import TrainConfig
from activa_ppl.data import InterventionalDataset
from activa_ppl.fitted import FittedActiva, flatten_params, unflatten_params
from activa_ppl.model import Activa, decoded_distribution, predictive_arrays

__all__ = ["train", "make_optimizer", "svi_chunks", "SVIChunks", "task_arrays", "validation_nll",
           "TrainingDiverged", "data_mesh", "replicate"]

CHECKPOINT_NAME = "checkpoint.npz"
METRICS_NAME = "metrics.jsonl"
#: The values of ``train(on_nonfinite=...)``.
NONFINITE_POLICIES = ("stop", "retry")

logger = logging.getLogger(__name__)


class TrainingDiverged(FloatingPointError):
    """The loss, the parameters or the validation NLL became NaN/inf.

    Nothing non-finite is ever written or returned: the checkpoint, if any, keeps the last good
    state.

    Attributes:
        step: the last good step (0 if no chunk completed).
        checkpoint: path of the checkpoint holding the last good state, or ``None``.
        fitted: :class:`FittedActiva` with the best parameters so far (the initial parameters
            when no chunk completed, ``info["best_step"] == -1`` then), or ``None``.
    """

    def __init__(self, message: str, *, step: int | None = None, checkpoint: Path | None = None,
                 fitted: FittedActiva | None = None):
        super().__init__(message)
        self.step, self.checkpoint, self.fitted = step, checkpoint, fitted


def make_optimizer(config: TrainConfig):
    """Adam with optional global-norm gradient clipping, wrapped for NumPyro's SVI."""
    parts = [] if config.clip_norm is None else [optax.clip_by_global_norm(config.clip_norm)]
    return numpyro.optim.optax_to_numpyro(optax.chain(*parts, optax.adam(config.learning_rate)))


@partial(jax.jit, static_argnums=(0, 6))
def validation_nll(activa: Activa, params, key, observational, targets, intervention_index,
                   num_latents: int, interventional):
    """Mean NLL per interventional sample under the prior-predictive mixture.

    ``observational (Q, N, d)``, ``targets (Q, d)``, ``intervention_index (Q,)``,
    ``interventional (Q, N_int, d)`` → scalar.
    """
    weights, locs, covariances = predictive_arrays(
        activa, params, key, observational, targets, intervention_index, num_latents
    )
    # The S·B-component prior-predictive mixture, batch (Q, 1) against samples (Q, N_int, d).
    mixture = decoded_distribution(jnp.log(weights)[:, None], locs[:, None], covariances[:, None])
    return -mixture.log_prob(interventional).mean()


class SVIChunks(NamedTuple):
    """The compiled training loop of :func:`train`, built by :func:`svi_chunks`.

    Attributes:
        svi: the :class:`numpyro.infer.SVI` of the β-ELBO.
        init: ``init(*train_arrays) -> SVIState`` (replicated over ``mesh`` when it is set).
        run: ``run(length, state, *train_arrays) -> (state, losses (length,))``: ``length``
            SVI steps (``1 <= length <= config.eval_every``) in one compiled loop. ``length``
            is a traced argument, so every length shares one compiled function; the function is
            cached across :func:`svi_chunks` calls with an equal static configuration.
            ``run.lower(length, state, *train_arrays).compile()`` gives an executable called as
            ``compiled(state, *train_arrays) -> (state, losses (length,))``.
        valid_key: PRNG key of the validation latent draws.
        mesh: the device mesh of data-parallel training (``config.data_parallel``), else
            ``None``. The training arrays and the state must be :func:`replicate`-d over it.
    """

    svi: numpyro.infer.SVI
    init: Callable
    run: Callable
    valid_key: jax.Array
    mesh: Mesh | None = None


#: Name of the mesh axis the minibatch is sharded over.
DATA_AXIS = "data"
# Times the chunk loop has been traced (a Python side effect at trace time; tests read it).
_CHUNK_TRACES = [0]


def data_mesh(devices=None) -> Mesh:
    """A one-axis mesh ``("data",)`` over ``devices`` (default: ``jax.devices()``, all hosts).

    The axis is *Auto*: jax 0.10's default *Explicit* axes fail inside NumPyro's
    ``MultivariateNormal`` (``ShardingTypeError``).
    """
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices.reshape(-1), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicate(tree, mesh: Mesh | None):
    """Every leaf of ``tree`` as a global array replicated over ``mesh`` (``None``: unchanged).

    Works with several processes too: each process supplies its local copies from its own
    (identical) values, so every host must hold the same data.
    """
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec())

    def one(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree_util.tree_map(one, tree)


@functools.lru_cache(maxsize=8)
def _chunk_function(activa: Activa, optimizer_key: tuple, num_tasks: int, batch_size: int,
                    max_length: int, mesh: Mesh | None):
    """``(svi, run)`` for one static configuration, cached.

    ``run(state, length, batch_key, *arrays) -> (state, losses (max_length,))`` is jitted;
    only ``losses[:length]`` are meaningful. ``optimizer_key = (learning_rate, clip_norm)``.
    """
    learning_rate, clip_norm = optimizer_key
    svi = activa.svi(make_optimizer(TrainConfig(learning_rate=learning_rate, clip_norm=clip_norm)))
    batch_sharding = None if mesh is None else NamedSharding(mesh, PartitionSpec(DATA_AXIS))

    def run(state, length, batch_key, *arrays):
        _CHUNK_TRACES[0] += 1

        def one_step(i, carry):
            s, losses = carry
            batch = _minibatch(batch_key, s.optim_state[0], arrays, num_tasks, batch_size)
            if batch_sharding is not None:  # batch axis over the devices; the state stays replicated
                batch = tuple(jax.lax.with_sharding_constraint(a, batch_sharding) for a in batch)
            s, loss = svi.update(s, *batch, total_tasks=num_tasks)
            return s, losses.at[i].set(loss)

        losses = jnp.zeros((max_length,), jnp.float32)
        return jax.lax.fori_loop(0, length, one_step, (state, losses))

    if mesh is None:
        return svi, jax.jit(run)
    replicated = NamedSharding(mesh, PartitionSpec())
    return svi, jax.jit(run, out_shardings=replicated)


def _minibatch(batch_key, step_index, arrays, num_tasks: int, batch_size: int):
    """The ``batch_size`` tasks of step ``step_index``: drawn without replacement, keyed by the step."""
    idx = jax.random.choice(jax.random.fold_in(batch_key, step_index), num_tasks,
                            (batch_size,), replace=False)
    return tuple(a[idx] for a in arrays)


class _ChunkRunner:
    """``run(length, state, *arrays)`` of :class:`SVIChunks` over a cached compiled loop."""

    def __init__(self, compiled_run, batch_key, max_length: int, mesh: Mesh | None):
        self._run, self._batch_key, self._max_length, self._mesh = (
            compiled_run, batch_key, max_length, mesh)

    def _length(self, length) -> jax.Array:
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) \
                or not 1 <= length <= self._max_length:
            raise ValueError(f"a chunk runs 1..{self._max_length} (eval_every) steps, got {length!r}")
        return replicate(np.int32(length), self._mesh)

    def __call__(self, length, state, *arrays):
        state, losses = self._run(state, self._length(length), self._batch_key, *arrays)
        return state, losses[:length]

    def lower(self, length, state, *arrays):
        """Lower for ``length`` steps; ``.compile()`` gives ``compiled(state, *arrays)``."""
        return _LoweredChunk(self._run.lower(state, self._length(length), self._batch_key, *arrays),
                             self._length(length), self._batch_key, int(length))


class _LoweredChunk:
    def __init__(self, lowered, length, batch_key, num_steps: int):
        self._lowered, self._length, self._batch_key, self._num_steps = lowered, length, batch_key, num_steps

    def __getattr__(self, name):  # as_text, cost_analysis, ... of the jax Lowered
        return getattr(self._lowered, name)

    def compile(self):
        compiled, length, key, n = self._lowered.compile(), self._length, self._batch_key, self._num_steps

        def call(state, *arrays):
            state, losses = compiled(state, length, key, *arrays)
            return state, losses[:n]

        call.compiled = compiled
        return call


def svi_chunks(activa: Activa, config: TrainConfig, num_tasks: int) -> SVIChunks:
    """Build the compiled SVI chunk over a training set of ``num_tasks`` tasks.

    Each step draws ``config.batch_size`` tasks without replacement, keyed by the optimizer's
    step count (so a resumed run draws the same minibatches as an uninterrupted one), and calls
    ``svi.update`` with ``total_tasks`` scaling, so all ``num_particles`` latent draws of a
    step share one minibatch.

    The compiled loop is cached on ``(activa.config, learning_rate, clip_norm, num_tasks,
    batch size, eval_every, mesh)``; the seed enters as traced keys, so another seed or another
    dataset of the same shapes reuses it. With ``config.data_parallel`` the minibatch of each
    step is sharded over :func:`data_mesh` (the batch size must be divisible by the number of
    devices) and the state is kept replicated.

    Raises:
        ValueError: ``config.data_parallel`` and the batch size is not divisible by the number
            of devices.
    """
    batch_size = min(config.batch_size, num_tasks)
    mesh = None
    if config.data_parallel:
        mesh = data_mesh()
        if batch_size % mesh.size:
            raise ValueError(
                f"data-parallel training shards each minibatch over {mesh.size} devices: the batch "
                f"size ({batch_size}{' = the number of training tasks' if batch_size < config.batch_size else ''}) "
                f"must be divisible by {mesh.size}")
    svi, compiled_run = _chunk_function(activa, (config.learning_rate, config.clip_norm), num_tasks,
                                        batch_size, config.eval_every, mesh)
    init_key, valid_key, batch_key = jax.random.split(jax.random.PRNGKey(config.seed), 3)

    def init(*arrays):
        state = svi.init(init_key, *_minibatch(batch_key, 0, arrays, num_tasks, batch_size),
                         total_tasks=num_tasks)
        return replicate(state, mesh)

    runner = _ChunkRunner(compiled_run, replicate(batch_key, mesh), config.eval_every, mesh)
    return SVIChunks(svi, init, runner, valid_key, mesh)


def task_arrays(tasks) -> tuple[jax.Array, ...]:
    """``(observational, targets, intervention_index, interventional)`` as device arrays."""
    return (
        jnp.asarray(tasks.observational, jnp.float32),
        jnp.asarray(tasks.targets, jnp.float32),
        jnp.asarray(tasks.intervention_index, jnp.int32),
        jnp.asarray(tasks.interventional, jnp.float32),
    )


def _restore_state(template, leaves: list[np.ndarray], path: Path):
    ref, treedef = jax.tree_util.tree_flatten(template)
    if len(ref) != len(leaves) or any(
        a.shape != b.shape or a.dtype != b.dtype for a, b in zip(ref, leaves)
    ):
        raise CheckpointError(
            f"{path}: the checkpoint does not match this model/optimizer (different architecture?)"
        )
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in leaves])


def _run_summary(step: int, best_step: int, best_nll: float, config, data: InterventionalDataset,
                 wall_time_s: float) -> dict:
    """The ``info`` of a fitted model after a training run (ACTIVA and MACE-TNP alike)."""
    return {
        "num_steps": step,
        "best_step": best_step,
        "best_valid_nll": best_nll,
        "train_config": config.to_dict(),
        "dataset": data.metadata,
        "wall_time_s": round(wall_time_s, 1),
    }


def _all_finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(tree)
               if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact))


def _chunk_fault(losses: np.ndarray, state, step: int) -> str | None:
    """Why a chunk that started after ``step`` must be rejected, or ``None``."""
    if not np.all(np.isfinite(losses)):
        bad = int(np.argmax(~np.isfinite(losses)))
        return f"non-finite loss ({losses[bad]}) at step {step + bad + 1}"
    if not _all_finite(state.optim_state):
        return f"non-finite parameters or optimizer state after step {step + len(losses)}"
    return None


def _rescaled_chunks(activa: Activa, config: TrainConfig, scale: float, num_tasks: int,
                     initialised: numpyro.infer.SVI) -> SVIChunks:
    """The chunk of ``config`` with its learning rate times ``scale``, ready to continue a run.

    Adam's state does not depend on the rate, so the running state carries over unchanged.
    ``svi.init`` would set the new SVI's ``constrain_fn`` (the same model and guide give the same
    one); it is copied from the initialised SVI instead, since the state already exists.
    """
    chunks = svi_chunks(activa, dataclasses.replace(config, learning_rate=config.learning_rate * scale),
                        num_tasks)
    chunks.svi.constrain_fn = initialised.constrain_fn
    return chunks


def train(
    activa: Activa,
    data: InterventionalDataset,
    num_steps: int | None = None,
    seed: int | None = None,
    *,
    config: TrainConfig | None = None,
    workdir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    on_nonfinite: str = "stop",
    max_retries: int = 3,
    **overrides: Any,
) -> FittedActiva:
    """Train ``activa`` on the ``"train"`` split of ``data``; validate on ``"valid"``.

    Args:
        activa: the model (its config fixes architecture and the β-ELBO).
        data: a dataset with train and valid splits (:mod:`activa_ppl.simulate`).
        num_steps, seed, **overrides: shortcuts for fields of :class:`TrainConfig`.
        config: the full training configuration (defaults: ``TrainConfig()``).
        workdir: folder for ``checkpoint.npz`` and ``metrics.jsonl``; ``None`` keeps nothing
            on disk.
        resume: continue from ``workdir/checkpoint.npz`` if present. The checkpoint must come
            from the same model and training configuration; only ``num_steps`` may differ, so a
            finished run can be extended.
        progress: show a progress bar.
        on_nonfinite: what a chunk with a NaN/inf loss, parameter or validation NLL leads to,
            after rolling back to the state before it: ``"stop"`` raises
            :class:`TrainingDiverged`; ``"retry"`` halves the learning rate and runs the chunk
            again (see the module docstring).
        max_retries: the most learning-rate halvings of one run under ``"retry"`` (counted
            across resumes); the next fault then raises :class:`TrainingDiverged`.

    Returns:
        :class:`FittedActiva` with the parameters of the best validation NLL.

    Raises:
        TrainingDiverged: the loss, parameters or validation NLL became NaN/inf (and, under
            ``"retry"``, the retries are used up); the checkpoint keeps the last good state
            and the exception carries the best parameters so far.
        ValueError: the dataset does not fit the model (e.g. more intervention indices than
            ``config.num_interventions``) or has an empty split, or ``on_nonfinite`` /
            ``max_retries`` are invalid.
        CheckpointError: the checkpoint in ``workdir`` is corrupted, unsafe, from another
            configuration, or holds NaN/inf values.
    """
    if on_nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"on_nonfinite must be one of {NONFINITE_POLICIES}, got {on_nonfinite!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be a non-negative integer, got {max_retries!r}")
    config = config or TrainConfig()
    fields = dict(overrides)
    if num_steps is not None:
        fields["num_steps"] = num_steps
    if seed is not None:
        fields["seed"] = seed
    config = dataclasses.replace(config, **fields)

    if data.num_interventions > activa.config.num_interventions:
        raise ValueError(
            f"the dataset has |I| = {data.num_interventions} intervention indices but the model "
            f"takes {activa.config.num_interventions}; set ActivaConfig(num_interventions=...)"
        )
    train_tasks, valid_tasks = data.tasks("train"), data.tasks("valid")
    if len(train_tasks.scm) == 0 or len(valid_tasks.scm) == 0:
        raise ValueError("the dataset needs non-empty 'train' and 'valid' splits")
    train_arrays = task_arrays(train_tasks)
    num_valid = min(config.num_validation_tasks, len(valid_tasks.scm))
    pick = np.random.default_rng(config.seed).permutation(len(valid_tasks.scm))[:num_valid]
    valid_arrays = tuple(a[pick] for a in task_arrays(valid_tasks))

    num_tasks, num_int = train_arrays[0].shape[0], train_arrays[3].shape[1]
    chunks = svi_chunks(activa, config, num_tasks)
    svi, valid_key, mesh = chunks.svi, chunks.valid_key, chunks.mesh
    state = chunks.init(*train_arrays)
    train_arrays = replicate(train_arrays, mesh)  # data parallel: every device holds the training set
    # With several processes (activa_ppl.distributed) only process 0 writes files.
    writer = jax.process_index() == 0

    step, best_step, best_nll, elapsed_before = 0, -1, math.inf, 0.0
    lr_scale, retries = 1.0, 0
    best_params = svi.get_params(state)
    workdir = Path(workdir) if workdir is not None else None
    ckpt_path = workdir / CHECKPOINT_NAME if workdir else None
    metrics_path = workdir / METRICS_NAME if workdir else None
    meta_base = {
        "model_config": activa.config.to_dict(),
        "train_config": config.to_dict(),
        "dataset": data.metadata,
    }
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    if ckpt_path is not None and resume and ckpt_path.exists():
        arrays, meta = load_arrays(ckpt_path)
        # num_steps may grow; data_parallel only changes where the steps run (a single-device
        # checkpoint resumes data-parallel and back, numerically close but not bit-identical).
        # Fields missing from older checkpoints take their defaults.
        free = ("num_steps", "data_parallel")
        same_run = {k: v for k, v in config.to_dict().items() if k not in free}
        saved_run = {k: v for k, v in {**TrainConfig().to_dict(), **meta.get("train_config", {})}.items()
                     if k not in free}
        if meta.get("model_config") != meta_base["model_config"] or saved_run != same_run:
            raise CheckpointError(
                f"{ckpt_path}: written by a run with a different configuration; "
                "use another workdir or resume=False"
            )
        leaves = [arrays[f"state/{i:04d}"] for i in range(meta["num_state_leaves"])]
        state = replicate(_restore_state(state, leaves, ckpt_path), mesh)
        best_params = unflatten_params({k[5:]: v for k, v in arrays.items() if k.startswith("best/")})
        if not _all_finite(state) or not _all_finite(best_params):
            raise CheckpointError(f"{ckpt_path}: holds NaN/inf values; refusing to resume from it")
        step, best_step, best_nll = meta["step"], meta["best_step"], meta["best_nll"]
        elapsed_before = float(meta.get("elapsed_s", 0.0))
        lr_scale, retries = float(meta.get("lr_scale", 1.0)), int(meta.get("retries", 0))
        if lr_scale != 1.0:  # the run had halved its learning rate after a non-finite chunk
            chunks = _rescaled_chunks(activa, config, lr_scale, num_tasks, svi)
        if writer:
            _truncate_metrics(metrics_path, step)
    elif metrics_path is not None and metrics_path.exists() and writer:
        metrics_path.unlink()  # a fresh run starts a fresh log

    start = time.perf_counter()

    def summary() -> dict:
        info = _run_summary(step, best_step, best_nll, config, data,
                            elapsed_before + time.perf_counter() - start)
        if mesh is not None:
            info["data_parallel_devices"] = int(mesh.size)
        if retries:
            info.update(nonfinite_retries=retries, final_learning_rate=config.learning_rate * lr_scale)
        return info

    bar = tqdm(total=config.num_steps, initial=step, disable=not (progress and writer), desc="ACTIVA SVI",
               unit="step", dynamic_ncols=True)
    try:
        while step < config.num_steps:
            length = min(config.eval_every, config.num_steps - step)
            new_state, losses = chunks.run(length, state, *train_arrays)
            losses = np.asarray(losses)
            fault = _chunk_fault(losses, new_state, step)
            if fault is None:
                params = svi.get_params(new_state)
                if mesh is not None:  # validate (and keep the best) on this process's default device
                    params = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)), params)
                nll = float(validation_nll(activa, params, valid_key, *valid_arrays[:3],
                                           activa.config.num_validation_latents, valid_arrays[3]))
                if not math.isfinite(nll):
                    fault = f"non-finite validation NLL ({nll}) after step {step + length}"
            if fault is not None:
                # Roll back: ``state`` still holds the last good state; nothing was written.
                good = f"last good state is step {step}" + (
                    f" (checkpoint {ckpt_path})" if ckpt_path is not None and ckpt_path.exists() else "")
                learning_rate = config.learning_rate * lr_scale
                if on_nonfinite == "retry" and retries < max_retries:
                    retries, lr_scale = retries + 1, lr_scale / 2
                    logger.warning(
                        "ACTIVA training: %s; rolled back to step %d and retrying with learning rate "
                        "%g (was %g; retry %d of %d)", fault, step, config.learning_rate * lr_scale,
                        learning_rate, retries, max_retries)
                    chunks = _rescaled_chunks(activa, config, lr_scale, num_tasks, svi)
                    continue
                hint = (f"; gave up after {retries} retr{'y' if retries == 1 else 'ies'} with halved "
                        f"learning rates (last {learning_rate:g})" if on_nonfinite == "retry" else
                        "; lower the learning rate, set clip_norm, or train(on_nonfinite='retry')")
                raise TrainingDiverged(
                    f"{fault}; stopped, {good}; no non-finite value was written{hint}",
                    step=step, checkpoint=ckpt_path if ckpt_path is not None and ckpt_path.exists() else None,
                    fitted=FittedActiva(activa=activa, params=best_params, info=summary()),
                )
            state, step = new_state, step + length
            if nll < best_nll:
                best_nll, best_step, best_params = nll, step, params
            record = {
                "step": step,
                "train_loss_per_sample": float(losses.mean()) / (num_tasks * num_int),
                "valid_nll": nll,
                "best_valid_nll": best_nll,
                "best_step": best_step,
                "learning_rate": config.learning_rate * lr_scale,
                "elapsed_s": round(elapsed_before + time.perf_counter() - start, 3),
            }
            if ckpt_path is not None and writer:
                # Metrics first: a kill before the checkpoint lands leaves a line past the
                # checkpoint, which a resumed run drops and rewrites (_truncate_metrics).
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                leaves = jax.tree_util.tree_leaves(state)
                arrays = {f"state/{i:04d}": np.asarray(x) for i, x in enumerate(leaves)}
                arrays.update({f"best/{k}": v for k, v in flatten_params(best_params).items()})
                save_arrays(ckpt_path, arrays, {
                    **meta_base, "step": step, "best_step": best_step, "best_nll": best_nll,
                    "num_state_leaves": len(leaves), "elapsed_s": record["elapsed_s"],
                    "lr_scale": lr_scale, "retries": retries,
                })
            bar.update(length)
            bar.set_postfix(loss=f"{record['train_loss_per_sample']:.3f}", valid_nll=f"{nll:.3f}")
    finally:
        bar.close()
    return FittedActiva(activa=activa, params=best_params, info=summary())


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
