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
from functools import partial
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from activa_ppl import loop
from activa_ppl.config import TrainConfig
from activa_ppl.data import InterventionalDataset
from activa_ppl.distributed import is_main_process
from activa_ppl.fitted import FittedActiva
from activa_ppl.loop import TrainingDiverged
from activa_ppl.mixture import mixture_log_prob
from activa_ppl.mixture_math import cholesky
from activa_ppl.model import Activa, predictive_arrays

__all__ = ["train", "make_optimizer", "learning_rate_schedule", "svi_chunks", "SVIChunks", "task_arrays", "validation_nll",
           "TrainingDiverged", "data_mesh", "replicate"]

CHECKPOINT_NAME = loop.CHECKPOINT_NAME
METRICS_NAME = loop.METRICS_NAME


def learning_rate_schedule(config: TrainConfig):
    """The learning rate of ``config``: a float (``"constant"``) or an optax schedule of the step."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    decay = config.decay_steps or config.num_steps
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if config.warmup_steps else config.learning_rate, peak_value=config.learning_rate,
        warmup_steps=config.warmup_steps, decay_steps=max(decay, config.warmup_steps + 1), end_value=0.0)


def make_optimizer(config: TrainConfig):
    """Adam (at :func:`learning_rate_schedule`) with optional global-norm gradient clipping,
    wrapped for NumPyro's SVI."""
    parts = [] if config.clip_norm is None else [optax.clip_by_global_norm(config.clip_norm)]
    return numpyro.optim.optax_to_numpyro(optax.chain(*parts, optax.adam(learning_rate_schedule(config))))


#: The fields of :class:`TrainConfig` that shape the compiled chunk (besides the shapes).
_STATIC_FIELDS = ("learning_rate", "clip_norm", "lr_schedule", "warmup_steps", "samples_per_task",
                  "eval_every")


def _static_key(config: TrainConfig) -> tuple:
    """What the compiled chunk depends on in ``config``: :data:`_STATIC_FIELDS`, then the
    cosine's span (``decay_steps``, or ``num_steps`` for a cosine without one; ``None`` for a
    constant rate)."""
    decay = config.decay_steps or (config.num_steps if config.lr_schedule != "constant" else None)
    return tuple(getattr(config, f) for f in _STATIC_FIELDS) + (decay,)


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
    # The S·B-component prior-predictive mixture, batch (Q,), against samples (N_int, Q, d).
    log_p = mixture_log_prob(jnp.log(weights), locs, cholesky(covariances),  # no LAPACK call (d <= 16)
                             jnp.swapaxes(interventional, 0, 1))
    return -log_p.mean()


#: Name of the mesh axis the minibatch is sharded over.
DATA_AXIS = "data"


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


def _minibatch(key, arrays, num_tasks: int, batch_size: int, samples_per_task: int | None = None):
    """``batch_size`` tasks drawn without replacement with ``key``; with ``samples_per_task``,
    also a random subset of that many observational and interventional samples (the same sample
    indices for every task of the batch; the samples of a task are exchangeable)."""
    idx = jax.random.choice(key, num_tasks, (batch_size,), replace=False)
    obs, targets, index, inter = (a[idx] for a in arrays)

    def subset(a, i):  # (B, N, d) -> (B, samples_per_task, d)
        n = a.shape[1]
        if samples_per_task is None or samples_per_task >= n:
            return a
        keep = jax.random.choice(jax.random.fold_in(key, i), n, (samples_per_task,), replace=False)
        return a[:, keep]

    return subset(obs, 1), targets, index, subset(inter, 2)


@functools.lru_cache(maxsize=8)
def _chunk_function(activa: Activa, static_key: tuple, num_tasks: int, batch_size: int,
                    max_length: int, mesh: Mesh | None, shared_embedding: bool = True):
    """``(svi, run)`` for one static configuration, cached.

    ``run(state, length, batch_key, *arrays) -> (state, losses (max_length,))`` is the jitted
    :func:`activa_ppl.loop.chunk_function` over ``svi.update``; only ``losses[:length]`` are
    meaningful. ``static_key`` is :func:`_static_key` of the training configuration.
    """
    fields = dict(zip(_STATIC_FIELDS, static_key))  # the last entry is the cosine's span
    optimizer_config = TrainConfig(**fields, decay_steps=static_key[-1])
    svi = activa.svi(make_optimizer(optimizer_config), shared_embedding=shared_embedding)
    batch_sharding = None if mesh is None else NamedSharding(mesh, PartitionSpec(DATA_AXIS))

    def minibatch(key, arrays):
        batch = _minibatch(key, arrays, num_tasks, batch_size, fields["samples_per_task"])
        if batch_sharding is not None:  # batch axis over the devices; the state stays replicated
            batch = tuple(jax.lax.with_sharding_constraint(a, batch_sharding) for a in batch)
        return batch

    def update(state, *batch):
        return svi.update(state, *batch, total_tasks=num_tasks)

    out = None if mesh is None else NamedSharding(mesh, PartitionSpec())
    return svi, loop.chunk_function(update, minibatch, lambda s: s.optim_state[0], max_length, out)


class SVIChunks(NamedTuple):
    """The compiled training loop of :func:`train`, built by :func:`svi_chunks`.

    Attributes:
        svi: the :class:`numpyro.infer.SVI` of the β-ELBO.
        init: ``init(*train_arrays) -> SVIState`` (replicated over ``mesh`` when it is set).
        run: ``run(length, state, *train_arrays) -> (state, losses (length,))``: ``length``
            SVI steps (``1 <= length <= config.eval_every``) in one compiled loop.
        valid_key: PRNG key of the validation latent draws.
        mesh: the device mesh of data-parallel training (``config.data_parallel``), else
            ``None``. The training arrays and the state must be :func:`replicate`-d over it.
        compiled: the jitted ``compiled(state, length, batch_key, *train_arrays) -> (state,
            losses (eval_every,))`` under ``run`` (shared by every :func:`svi_chunks` call with
            an equal static configuration); ``compiled.lower(...)`` for XLA's cost analysis.
        batch_key: the run's minibatch key (the third argument of ``compiled``).
    """

    svi: numpyro.infer.SVI
    init: Callable
    run: Callable
    valid_key: jax.Array
    mesh: Mesh | None = None
    compiled: Callable | None = None
    batch_key: jax.Array | None = None


def svi_chunks(activa: Activa, config: TrainConfig, num_tasks: int, *,
               shared_embedding: bool = True) -> SVIChunks:
    """Build the compiled SVI chunk over a training set of ``num_tasks`` tasks.

    Each step draws ``config.batch_size`` tasks without replacement, keyed by the optimizer's
    step count (so a resumed run draws the same minibatches as an uninterrupted one), and calls
    ``svi.update`` with ``total_tasks`` scaling, so all ``num_particles`` latent draws of a
    step share one minibatch.

    ``shared_embedding`` (default): the loss is :class:`activa_ppl.elbo.SharedEmbeddingELBO`,
    which computes the observational embedding once per step for the prior and the posterior
    (the same loss and gradients as ``Trace_ELBO`` to float tolerance, one encoder pass fewer;
    tested in ``tests/test_shared_embedding.py``). ``False``: plain ``Trace_ELBO``, the path
    before issue 17, kept so that benchmarks can time both side by side. The state, the
    parameter tree and the checkpoints are the same either way.

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
    svi, compiled = _chunk_function(activa, _static_key(config), num_tasks, batch_size,
                                    config.eval_every, mesh, bool(shared_embedding))
    init_key, valid_key, batch_key = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    batch_key = replicate(batch_key, mesh)

    def init(*arrays):
        batch = _minibatch(jax.random.fold_in(batch_key, 0), arrays, num_tasks, batch_size,
                           config.samples_per_task)
        return replicate(svi.init(init_key, *batch, total_tasks=num_tasks), mesh)

    def run(length, state, *arrays):
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) \
                or not 1 <= length <= config.eval_every:
            raise ValueError(f"a chunk runs 1..{config.eval_every} (eval_every) steps, got {length!r}")
        state, losses = compiled(state, replicate(np.int32(length), mesh), batch_key, *arrays)
        return state, losses[:length]

    return SVIChunks(svi, init, run, valid_key, mesh, compiled, batch_key)


def task_arrays(tasks) -> tuple[jax.Array, ...]:
    """``(observational, targets, intervention_index, interventional)`` as device arrays."""
    return (
        jnp.asarray(tasks.observational, jnp.float32),
        jnp.asarray(tasks.targets, jnp.float32),
        jnp.asarray(tasks.intervention_index, jnp.int32),
        jnp.asarray(tasks.interventional, jnp.float32),
    )


@dataclasses.dataclass(frozen=True)
class _ActivaChunks:
    """:class:`activa_ppl.loop.Chunks` of one ACTIVA run: the SVI chunk bound to its data."""

    activa: Activa
    config: TrainConfig
    chunks: SVIChunks
    train_arrays: tuple
    valid_arrays: tuple
    lr_scale: float = 1.0

    def run(self, length, state):
        return self.chunks.run(length, state, *self.train_arrays)

    def params(self, state):
        params = self.chunks.svi.get_params(state)
        if self.chunks.mesh is not None:  # validate (and keep the best) on this process's default device
            params = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)), params)
        return params

    def validation_nll(self, params):
        return validation_nll(self.activa, params, self.chunks.valid_key, *self.valid_arrays[:3],
                              self.activa.config.num_validation_latents, self.valid_arrays[3])

    def train_metrics(self, losses):
        num_tasks, num_int = self.train_arrays[0].shape[0], self.train_arrays[3].shape[1]
        num_int = min(num_int, self.config.samples_per_task or num_int)  # the samples a step scores
        return {"train_loss_per_sample": float(losses.mean()) / (num_tasks * num_int)}

    def learning_rate(self, step):
        rate = learning_rate_schedule(self.config)
        return float(rate(step) if callable(rate) else rate) * self.lr_scale

    def rescaled(self, scale):
        """The same run at ``scale`` × the learning rate. Adam's state does not depend on the rate,
        so the running state carries over; the new SVI's ``constrain_fn`` (set by ``svi.init``,
        equal for the same model and guide) is copied, since the state already exists."""
        config = dataclasses.replace(self.config, learning_rate=self.config.learning_rate * scale)
        chunks = svi_chunks(self.activa, config, self.train_arrays[0].shape[0])
        chunks.svi.constrain_fn = self.chunks.svi.constrain_fn
        return dataclasses.replace(self, chunks=chunks, lr_scale=scale)


def _same_run(meta: dict, model_config: dict, config: TrainConfig) -> bool:
    """Whether a checkpoint's ``meta`` comes from this model and run. ``num_steps`` may grow;
    ``data_parallel`` only changes where the steps run; fields missing from older checkpoints
    take their defaults."""
    free = ("num_steps", "data_parallel", "time_budget_s")
    if config.lr_schedule != "constant" and config.decay_steps is None:
        free = ("data_parallel", "time_budget_s")  # the cosine spans num_steps
    ours = {k: v for k, v in config.to_dict().items() if k not in free}
    saved = {k: v for k, v in {**TrainConfig().to_dict(), **meta.get("train_config", {})}.items()
             if k not in free}
    return _as_json(meta.get("model_config")) == _as_json(model_config) and _as_json(saved) == _as_json(ours)


def _as_json(value):
    """``value`` as read back from JSON (tuples become lists), for comparing a live
    configuration with a checkpoint's."""
    return json.loads(json.dumps(value))


def train(activa: Activa, data: InterventionalDataset, num_steps: int | None = None,
          seed: int | None = None, *, config: TrainConfig | None = None,
          workdir: str | Path | None = None, resume: bool = True, progress: bool = True,
          on_nonfinite: str = "stop", max_retries: int = 3, **overrides: Any) -> FittedActiva:
    """Train ``activa`` on the ``"train"`` split of ``data``; validate on ``"valid"``.

    Args:
        activa: the model (its config fixes architecture and the β-ELBO).
        data: a dataset with train and valid splits (:mod:`activa_ppl.simulate`).
        num_steps, seed, **overrides: shortcuts for fields of :class:`TrainConfig`.
        config: the full training configuration (defaults: ``TrainConfig()``).
        workdir: folder for ``checkpoint.npz`` and ``metrics.jsonl``; ``None`` keeps nothing.
        resume: continue from ``workdir/checkpoint.npz`` if present; it must come from the same
            model and training configuration (only ``num_steps`` may differ, so a finished run
            can be extended).
        progress: show a progress bar.
        on_nonfinite, max_retries: the non-finite policy of :mod:`activa_ppl.loop`.

    Returns:
        :class:`FittedActiva` with the parameters of the best validation NLL.

    Raises:
        TrainingDiverged: NaN/inf loss, parameters or validation NLL (after the retries).
        ValueError: the dataset does not fit the model (more intervention indices than
            ``config.num_interventions``), an empty split, invalid policy arguments.
        CheckpointError: a corrupted, unsafe, foreign or non-finite checkpoint in ``workdir``.
    """
    loop.check_policy(on_nonfinite, max_retries)
    config = loop.merge_overrides(config or TrainConfig(), num_steps, seed, overrides)
    if data.num_interventions > activa.config.num_interventions:
        raise ValueError(
            f"the dataset has |I| = {data.num_interventions} intervention indices but the model "
            f"takes {activa.config.num_interventions}; set ActivaConfig(num_interventions=...)")
    train_tasks, valid_tasks, pick = loop.validation_subset(data, config.num_validation_tasks, config.seed)
    arrays = task_arrays(train_tasks)
    chunks = svi_chunks(activa, config, arrays[0].shape[0])
    state = chunks.init(*arrays)  # data parallel: state and training set on every device
    bound = _ActivaChunks(activa, config, chunks, replicate(arrays, chunks.mesh),
                          tuple(a[pick] for a in task_arrays(valid_tasks)))
    meta = {"model_config": activa.config.to_dict(), "train_config": config.to_dict(), "dataset": data.metadata}

    def finish(params, result):
        info = loop.run_summary(result, config, data)
        if chunks.mesh is not None:
            info["data_parallel_devices"] = int(chunks.mesh.size)
        return FittedActiva(activa=activa, params=params, info=info)

    result = loop.run(bound, state, num_steps=config.num_steps, eval_every=config.eval_every,
                      workdir=workdir, resume=resume, meta=meta, finish=finish,
                      compatible=lambda saved: _same_run(saved, meta["model_config"], config),
                      restore=lambda s: replicate(s, chunks.mesh), progress=progress, desc="ACTIVA SVI",
                      on_nonfinite=on_nonfinite, max_retries=max_retries, time_budget_s=config.time_budget_s,
                      writer=is_main_process(), name="ACTIVA training")
    return finish(result.best_params, result)
