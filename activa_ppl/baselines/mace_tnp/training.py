"""Training MACE-TNP: AdamW with warm-up and cosine decay, one pure ``update`` step, run by the
library's one training driver (:mod:`activa_ppl.loop`)."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from activa_ppl import loop
from activa_ppl.baselines.mace_tnp.config import MaceTnpConfig, MaceTnpTrainConfig
from activa_ppl.baselines.mace_tnp.fitted import MODEL_FORMAT, FittedMaceTnp
from activa_ppl.baselines.mace_tnp.networks import MaceTnp
from activa_ppl.baselines.mace_tnp.objective import init_params, training_loss, validation_nll
from activa_ppl.data import InterventionalDataset, TaskArrays

__all__ = ["MaceTnpTrainState", "make_optimizer", "init_state", "update", "train_mace_tnp"]


def _schedule(config: MaceTnpTrainConfig) -> optax.Schedule:
    """Linear warm-up from 0 over ``warmup_fraction · num_steps``, then cosine decay."""
    warmup = int(config.warmup_fraction * config.num_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else config.learning_rate, peak_value=config.learning_rate,
        warmup_steps=warmup, decay_steps=config.num_steps,
        end_value=config.learning_rate * config.final_lr_fraction,
    )


def make_optimizer(config: MaceTnpTrainConfig) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW with linear warm-up and cosine decay over ``num_steps``."""
    return optax.chain(optax.clip_by_global_norm(config.clip_norm),
                       optax.adamw(_schedule(config), weight_decay=config.weight_decay))


class MaceTnpTrainState(NamedTuple):
    """Everything a training run carries from step to step (and checkpoints).

    Attributes:
        step: scalar int32, optimiser steps taken; with the run's seed it keys the minibatch
            and query draws of the next step, so a resumed run repeats an uninterrupted one.
        params: Flax variables of :class:`MaceTnp`.
        opt_state: the optax state of :func:`make_optimizer`.
    """

    step: jax.Array
    params: dict
    opt_state: Any


def init_state(config: MaceTnpConfig, train_config: MaceTnpTrainConfig, num_samples: int) -> MaceTnpTrainState:
    """The state before the first step: initial parameters (keyed by the run's seed), step 0."""
    params = init_params(config, jax.random.PRNGKey(train_config.seed), num_samples=num_samples)
    return MaceTnpTrainState(jnp.zeros((), jnp.int32), params, make_optimizer(train_config).init(params))


def update(config: MaceTnpConfig, optimizer: optax.GradientTransformation, state: MaceTnpTrainState,
           observational, interventional, targets, query_index):
    """One AdamW step on a minibatch: ``(state, loss)``, the loss of :func:`training_loss`
    (normalised units) at the parameters before the step. Pure and jittable."""
    loss, grads = jax.value_and_grad(training_loss, argnums=1)(
        config, state.params, observational, interventional, targets, query_index)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return MaceTnpTrainState(state.step + 1, optax.apply_updates(state.params, updates), opt_state), loss


@functools.lru_cache(maxsize=4)
def _chunk_function(config: MaceTnpConfig, train_config: MaceTnpTrainConfig, num_tasks: int):
    """The compiled chunk (:func:`activa_ppl.loop.chunk_function`) of one static configuration,
    cached. Each step draws ``batch_size`` tasks without replacement and one interventional
    sample per task for the query token, keyed by the step count."""
    optimizer = make_optimizer(train_config)
    batch_size = min(train_config.batch_size, num_tasks)

    def minibatch(key, arrays):
        obs, inter, targets = arrays
        key_idx, key_q = jax.random.split(key)
        idx = jax.random.choice(key_idx, num_tasks, (batch_size,), replace=False)
        query_index = jax.random.randint(key_q, (batch_size,), 0, inter.shape[1])
        return obs[idx], inter[idx], targets[idx], query_index

    step = functools.partial(update, config, optimizer)
    return loop.chunk_function(step, minibatch, lambda s: s.step, train_config.eval_every)


@dataclasses.dataclass(frozen=True)
class _MaceTnpChunks:
    """:class:`activa_ppl.loop.Chunks` of one MACE-TNP run."""

    config: MaceTnpConfig
    train_config: MaceTnpTrainConfig
    train_arrays: tuple
    valid_arrays: tuple

    def run(self, length, state):
        compiled = _chunk_function(self.config, self.train_config, self.train_arrays[0].shape[0])
        batch_key = jax.random.fold_in(jax.random.PRNGKey(self.train_config.seed), 1)
        state, losses = compiled(state, jnp.int32(length), batch_key, *self.train_arrays)
        return state, losses[:length]

    def params(self, state):
        return state.params

    def validation_nll(self, params):
        return validation_nll(self.config, params, *self.valid_arrays)

    def train_metrics(self, losses):
        return {"train_nll_per_sample": float(losses.mean())}

    def learning_rate(self, step):
        return float(_schedule(self.train_config)(step))

    def rescaled(self, scale):
        peak = self.train_config.learning_rate * scale
        return dataclasses.replace(self, train_config=dataclasses.replace(self.train_config, learning_rate=peak))


def _task_arrays(tasks: TaskArrays, dataset: InterventionalDataset):
    """``(observational, interventional, targets, values)`` as float32 device arrays."""
    return (jnp.asarray(tasks.observational, jnp.float32), jnp.asarray(tasks.interventional, jnp.float32),
            jnp.asarray(tasks.targets, jnp.float32),
            jnp.asarray(dataset.intervention_values[tasks.scm, tasks.query], jnp.float32))


def _same_run(saved: dict, meta: dict) -> bool:
    """Same format, model and training configuration (only the time budget may change)."""
    def run(m: dict) -> dict:
        return {k: v for k, v in m.get("train_config", {}).items() if k != "time_budget_s"}

    return all(saved.get(k) == meta[k] for k in ("format", "model_config")) and run(saved) == run(meta)


def train_mace_tnp(model_or_config: MaceTnpConfig | MaceTnp, data: InterventionalDataset,
                   num_steps: int | None = None, seed: int | None = None, *,
                   config: MaceTnpTrainConfig | None = None, workdir: str | Path | None = None,
                   resume: bool = True, progress: bool = True, on_nonfinite: str = "stop",
                   max_retries: int = 3, **overrides: Any) -> FittedMaceTnp:
    """Train MACE-TNP on the ``"train"`` split of ``data``; validate on ``"valid"``.

    The run goes through :func:`activa_ppl.loop.run` (chunks of ``eval_every`` steps, best
    parameters, ``metrics.jsonl`` with ``train_nll_per_sample`` in normalised units, atomic
    resumable checkpoints, the non-finite policy). The validation NLL is in data units with the
    nominal intervention values, as at inference.

    Args:
        model_or_config: a :class:`MaceTnpConfig` or a :class:`MaceTnp` module.
        data: a dataset with train and valid splits and ``d == config.num_vars`` variables.
        num_steps, seed, **overrides: shortcuts for fields of :class:`MaceTnpTrainConfig`.
        config: the full training configuration (defaults: ``MaceTnpTrainConfig()``).
        workdir: folder for ``checkpoint.npz`` and ``metrics.jsonl``; ``None`` keeps nothing.
        resume: continue from ``workdir/checkpoint.npz``; it must come from the same model and
            training configuration (``num_steps`` included: the cosine schedule spans it).
        progress: show a progress bar.
        on_nonfinite, max_retries: the non-finite policy of :mod:`activa_ppl.loop`.

    Raises:
        TrainingDiverged: NaN/inf loss, parameters or validation NLL (after the retries).
        ValueError: the dataset's ``d`` differs from the model's, or a split is empty.
        CheckpointError: the checkpoint in ``workdir`` belongs to another configuration.
    """
    model_config = model_or_config.config if isinstance(model_or_config, MaceTnp) else model_or_config
    if not isinstance(model_config, MaceTnpConfig):
        raise TypeError(f"model_or_config must be a MaceTnpConfig or MaceTnp, got {type(model_or_config).__name__}")
    loop.check_policy(on_nonfinite, max_retries)
    config = loop.merge_overrides(config or MaceTnpTrainConfig(), num_steps, seed, overrides)
    if data.num_vars != model_config.num_vars:
        raise ValueError(f"the dataset has d = {data.num_vars} variables but the model's Cholesky head "
                         f"was built for d = {model_config.num_vars}")
    train_tasks, valid_tasks, pick = loop.validation_subset(data, config.num_validation_tasks, config.seed)
    obs, inter, targets, _ = _task_arrays(train_tasks, data)
    v_obs, v_inter, v_targets, v_values = (a[pick] for a in _task_arrays(valid_tasks, data))
    chunks = _MaceTnpChunks(model_config, config, (obs, inter, targets), (v_obs, v_targets, v_values, v_inter))
    meta = {"format": MODEL_FORMAT, "model_config": model_config.to_dict(), "train_config": config.to_dict(),
            "dataset": data.metadata}

    def finish(params, result):
        return FittedMaceTnp(config=model_config, params=params, info=loop.run_summary(result, config, data))

    result = loop.run(chunks, init_state(model_config, config, obs.shape[1]), num_steps=config.num_steps,
                      eval_every=config.eval_every, workdir=workdir, resume=resume, meta=meta,
                      compatible=lambda saved: _same_run(saved, meta),
                      finish=finish, progress=progress, desc="MACE-TNP", on_nonfinite=on_nonfinite,
                      max_retries=max_retries, time_budget_s=config.time_budget_s, name="MACE-TNP training")
    return finish(result.best_params, result)
