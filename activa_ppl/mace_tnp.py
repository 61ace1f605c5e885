"""The MACE-TNP joint extension (paper Section 6.2 and Appendix D), a trained baseline.

MACE-TNP (Dhir et al., 2025) is a transformer neural process that predicts interventional
distributions from observational data. The paper extends it to the *joint* post-interventional
distribution over all ``d`` variables; this module implements that extension from Appendix D
(no public code exists), in Flax linen:

* **Two-role encoder** (D.1). Every scalar entry becomes a token: observational tokens
  ``(N, d)`` and query tokens ``(Q, d)``. A node's token is embedded by ``f_int`` if the node is
  intervened on and by ``f_var`` otherwise, with separate MLPs for observational and query
  inputs (four MLPs). Each of the ``L`` layers runs self-attention over the observational
  samples (per node), cross-attention from the query tokens to the observational tokens (per
  node) and self-attention over the nodes (per sample, shared by both token kinds). The query
  tokens are mean-pooled over the query axis into per-node encodings ``(d, e)``.
* **Joint GMM head** (D.2). Component means are per node (a shared two-layer MLP maps each
  node's encoding to ``K`` scalar means); mixture logits and the ``K`` Cholesky factors come
  from the node-mean-pooled encoding through a shared backbone MLP and two linear heads. The
  Cholesky diagonal is ``softplus(·) + 0.1`` in normalised units. The number of Cholesky
  entries fixes ``d`` at construction (:attr:`MaceTnpConfig.num_vars`).
* **Normalisation** (D.3). Observational and interventional data are z-scored per dataset
  and per variable with the mean and standard deviation of ``D_obs``; predictions are mapped
  back (``μ ↦ m + s ⊙ μ``, ``L ↦ diag(s) L``, so ``Σ ↦ diag(s) Σ diag(s)``).
* **Query** (D.3). At inference the single query token holds the z-scored intervention value
  on the intervened variable(s) and zeros elsewhere: MACE-TNP needs the exact intervention
  value (privileged information, unlike ACTIVA). In training the query token is built from one
  randomly drawn interventional sample: its intervened coordinate(s), the rest zero. For the
  linear sets that value is the jittered ``5 + e``, ``e ~ N(0, 0.1²)``, while inference uses the
  nominal 5; the predicted joint includes ``V_t`` and is trained on the jittered samples, so
  its ``V_t`` marginal has a spread of at least the 0.1 diagonal floor (in normalised units).
* **Objective** (D.3). The NLL of *all* interventional samples of a task (all ``d``
  variables) under the joint GMM; AdamW with a (warm-up and) cosine schedule, global-norm
  gradient clipping at 1.0.

Symmetries (D.4, tested): invariant to permuting observational samples; permuting the
variables permutes the component means, but *not* the covariances: the Cholesky factors come
from a variable-pooled encoding and are the same for every variable order.

Three levels of API, as for ACTIVA: the pure functions :func:`init_params`,
:func:`predict_arrays`, :func:`training_loss` and :func:`validation_nll`; the compiled chunked
training loop :func:`train_mace_tnp` (validation every ``eval_every`` steps, best-parameter
tracking, atomic resumable checkpoints in ``workdir``); and :class:`FittedMaceTnp` with
:meth:`~FittedMaceTnp.predict_batch`, :meth:`~FittedMaceTnp.save`, :func:`load_mace_tnp` and
:func:`mace_tnp_predictor` for :func:`activa_ppl.evaluation.evaluate`.

Saved model layout: as :mod:`activa_ppl.fitted` (``config.json`` naming a content-addressed
``params-<sha256[:12]>.npz``), with ``"format": "activa_ppl.mace_tnp"``.

Shapes use ``...`` for any leading batch dimensions (tasks).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from activa_ppl.checkpoint import CheckpointError, load_arrays, save_arrays
from activa_ppl.data import InterventionalDataset, TaskArrays
from activa_ppl.evaluation import INTERVENTION_VALUE, Predictor
from activa_ppl.fitted import (check_params, flatten_params, read_model_folder, unflatten_params,
                               write_model_folder)
from activa_ppl.metrics import MARGINAL_SET_NAMES
from activa_ppl.mixture import GaussianMixture
from activa_ppl.networks import AttentionBlock, FeedForward
from activa_ppl.standardize import standardization_stats
from activa_ppl.training import (TrainingDiverged, _all_finite, _run_summary,  # shared rules
                                 _truncate_metrics)
from activa_ppl.validation import as_observations, resolve_targets

__all__ = [
    "MaceTnpConfig",
    "MaceTnpTrainConfig",
    "MaceTnp",
    "MaceTnpEncoder",
    "JointGmmHead",
    "CrossAttentionBlock",
    "MaceTnpTrainState",
    "FittedMaceTnp",
    "normalization_stats",
    "denormalize",
    "init_params",
    "predict_arrays",
    "training_loss",
    "validation_nll",
    "make_optimizer",
    "train_mace_tnp",
    "load_mace_tnp",
    "mace_tnp_predictor",
]

MODEL_FORMAT = "activa_ppl.mace_tnp"
MODEL_FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.npz"
METRICS_NAME = "metrics.jsonl"

#: Smallest observational standard deviation used for z-scoring (a constant column).
STD_FLOOR = 1e-6


def _positive_int(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")


def _finite_number(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be a finite number, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------- configs
@dataclasses.dataclass(frozen=True)
class MaceTnpConfig:
    """Architecture of the MACE-TNP joint extension (Appendix D).

    Attributes:
        num_vars: ``d``, the number of variables; fixed because the Cholesky head emits
            ``K·d(d+1)/2`` entries (Appendix D.4).
        embed_dim: ``d_model``, width of every token.
        hidden_dim: width of the embedding MLPs, feed-forward layers and head MLPs.
        num_heads: attention heads in every attention layer.
        num_layers: encoder layers (sample self-attention, query cross-attention, node
            self-attention).
        num_components: ``K``, components of the joint Gaussian mixture (paper: 20, matching
            ACTIVA's 10 latent draws × 2 decoder components).
        diag_floor: floor added to the softplus of the Cholesky diagonal, in normalised units
            (paper: 0.1).
    """

    num_vars: int
    embed_dim: int = 64
    hidden_dim: int = 256
    num_heads: int = 4
    num_layers: int = 4
    num_components: int = 20
    diag_floor: float = 0.1

    def __post_init__(self):
        for name in ("num_vars", "embed_dim", "hidden_dim", "num_heads", "num_layers", "num_components"):
            _positive_int("MaceTnpConfig", name, getattr(self, name))
        if self.embed_dim % self.num_heads:
            raise ValueError(f"MaceTnpConfig.embed_dim ({self.embed_dim}) must be divisible by "
                             f"num_heads ({self.num_heads})")
        if not _finite_number("MaceTnpConfig", "diag_floor", self.diag_floor) > 0:
            raise ValueError(f"MaceTnpConfig.diag_floor must be positive, got {self.diag_floor!r}")

    @classmethod
    def preset(cls, name: str, num_vars: int, **overrides: Any) -> "MaceTnpConfig":
        """A named architecture preset for ``num_vars`` variables, fields optionally overridden.

        * ``"paper"``: the paper gives no MACE-TNP sizes; this uses the sizes of Section 6.4
          for ACTIVA (width 64, hidden 256, 4 layers, 4 heads) and K = 20 (Section 6.4).
        * ``"small"``: the CPU size of ACTIVA's ``"small"`` preset (width 32, hidden 64,
          2 layers, 4 heads), K = 20.
        * ``"tiny"``: for tests and smoke runs only (width 16, hidden 32, 1 layer, K = 4).
        """
        presets = {
            "paper": {},
            "small": dict(embed_dim=32, hidden_dim=64, num_heads=4, num_layers=2),
            "tiny": dict(embed_dim=16, hidden_dim=32, num_heads=2, num_layers=1, num_components=4),
        }
        if name not in presets:
            raise ValueError(f"unknown MaceTnpConfig preset {name!r}; choose one of {sorted(presets)}")
        return cls(num_vars=num_vars, **{**presets[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "MaceTnpConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer file format)."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown MaceTnpConfig fields {sorted(unknown)}")
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class MaceTnpTrainConfig:
    """One MACE-TNP training run: AdamW, warm-up + cosine schedule, gradient clipping.

    Attributes:
        num_steps: optimiser steps (one step = one minibatch of ``batch_size`` tasks). The
            cosine schedule spans exactly ``num_steps``, so a run resumes only with the same
            value.
        batch_size: tasks per step (drawn without replacement, keyed by the step number).
        learning_rate: peak AdamW step size (ACTIVA's 5e-4; the paper gives none for MACE-TNP).
        weight_decay: AdamW decoupled weight decay.
        warmup_fraction: fraction of ``num_steps`` of linear warm-up from 0 (in [0, 1)).
        final_lr_fraction: learning rate at the end of the cosine decay, as a fraction of the
            peak.
        clip_norm: global gradient-norm clip (paper: 1.0).
        eval_every: steps per compiled chunk; validation NLL and a checkpoint follow each chunk.
        num_validation_tasks: validation tasks used for the NLL (a fixed, seeded subset).
        seed: the root PRNG seed of the run.
    """

    num_steps: int = 2000
    batch_size: int = 32
    learning_rate: float = 5e-4
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.02
    final_lr_fraction: float = 0.0
    clip_norm: float = 1.0
    eval_every: int = 100
    num_validation_tasks: int = 256
    seed: int = 0

    def __post_init__(self):
        owner = "MaceTnpTrainConfig"
        for name in ("num_steps", "batch_size", "eval_every", "num_validation_tasks"):
            _positive_int(owner, name, getattr(self, name))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"{owner}.seed must be an integer, got {self.seed!r}")
        if not _finite_number(owner, "learning_rate", self.learning_rate) > 0:
            raise ValueError(f"{owner}.learning_rate must be positive, got {self.learning_rate!r}")
        if not _finite_number(owner, "clip_norm", self.clip_norm) > 0:
            raise ValueError(f"{owner}.clip_norm must be positive, got {self.clip_norm!r}")
        if not _finite_number(owner, "weight_decay", self.weight_decay) >= 0:
            raise ValueError(f"{owner}.weight_decay must be non-negative, got {self.weight_decay!r}")
        if not 0 <= _finite_number(owner, "warmup_fraction", self.warmup_fraction) < 1:
            raise ValueError(f"{owner}.warmup_fraction must lie in [0, 1), got {self.warmup_fraction!r}")
        if not 0 <= _finite_number(owner, "final_lr_fraction", self.final_lr_fraction) <= 1:
            raise ValueError(f"{owner}.final_lr_fraction must lie in [0, 1], got {self.final_lr_fraction!r}")

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "MaceTnpTrainConfig":
        """Inverse of :meth:`to_dict`."""
        return cls(**values)


# --------------------------------------------------------------------------------- networks
class CrossAttentionBlock(nn.Module):
    """Pre-LayerNorm cross-attention block: queries attend to a context over axis ``-2``.

    ``x: (..., Q, e)``, ``context: (..., N, e) -> (..., Q, e)``; residual cross-attention,
    then a residual feed-forward layer (the :class:`~activa_ppl.networks.AttentionBlock`
    layout with keys and values from ``context``).
    """

    num_heads: int
    hidden_dim: int

    @nn.compact
    def __call__(self, x, context):
        h = nn.LayerNorm()(x)
        c = nn.LayerNorm()(context)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads)(h, c)
        h = nn.LayerNorm()(x)
        return x + FeedForward(self.hidden_dim, x.shape[-1])(h)


class MaceTnpEncoder(nn.Module):
    """Two-role MACE-TNP encoder (Appendix D.1).

    Args (call):
        obs: ``(..., N, d)`` z-scored observational samples.
        query: ``(..., Q, d)`` z-scored query tokens (intervened coordinates set, rest zero).
        targets: ``(..., d)`` 0/1 mask of the intervened variables (the embedding role).

    Returns:
        ``(..., d, e)`` per-node encodings: the query tokens after the last layer, normalised
        and mean-pooled over the ``Q`` query tokens.
    """

    config: MaceTnpConfig

    @nn.compact
    def __call__(self, obs, query, targets):
        cfg = self.config
        e, hidden = cfg.embed_dim, cfg.hidden_dim
        role = (targets > 0)[..., None, :, None]  # (..., 1, d, 1)
        x_obs = jnp.where(role, FeedForward(hidden, e, name="f_int_obs")(obs[..., None]),
                          FeedForward(hidden, e, name="f_var_obs")(obs[..., None]))  # (..., N, d, e)
        x_q = jnp.where(role, FeedForward(hidden, e, name="f_int_query")(query[..., None]),
                        FeedForward(hidden, e, name="f_var_query")(query[..., None]))  # (..., Q, d, e)
        num_obs = obs.shape[-2]
        for layer in range(cfg.num_layers):
            # Samples: MHSA over observational samples, then MHCA query -> observational, per node.
            obs_t = AttentionBlock(cfg.num_heads, hidden, name=f"sample_self_{layer}")(
                jnp.swapaxes(x_obs, -2, -3))  # (..., d, N, e)
            q_t = CrossAttentionBlock(cfg.num_heads, hidden, name=f"sample_cross_{layer}")(
                jnp.swapaxes(x_q, -2, -3), obs_t)  # (..., d, Q, e)
            # Nodes: MHSA over the d variables of every token (observational and query).
            tokens = jnp.concatenate([jnp.swapaxes(obs_t, -2, -3), jnp.swapaxes(q_t, -2, -3)], axis=-3)
            tokens = AttentionBlock(cfg.num_heads, hidden, name=f"node_self_{layer}")(tokens)  # (..., N+Q, d, e)
            x_obs, x_q = tokens[..., :num_obs, :, :], tokens[..., num_obs:, :, :]
        x_q = nn.LayerNorm(name="final_norm")(x_q)
        return x_q.mean(axis=-3)  # (..., d, e)


class JointGmmHead(nn.Module):
    """Joint K-component Gaussian mixture from per-node encodings (Appendix D.2).

    Args (call):
        h: ``(..., d, e)`` per-node encodings, ``d == config.num_vars``.

    Returns:
        ``(logits (..., K), locs (..., K, d), scale_tril (..., K, d, d))`` in normalised units:
        per-node means from a shared two-layer MLP; logits and lower-triangular Cholesky
        factors (diagonal ``softplus(·) + diag_floor``) from the variable-mean-pooled encoding
        through a shared backbone MLP and two linear heads.

    Raises:
        ValueError: ``h`` has a different number of variables than ``config.num_vars``.
    """

    config: MaceTnpConfig

    @nn.compact
    def __call__(self, h):
        cfg = self.config
        d, k = cfg.num_vars, cfg.num_components
        if h.shape[-2] != d:
            raise ValueError(f"the Cholesky head was built for d = {d} variables; got {h.shape[-2]}")
        locs = jnp.swapaxes(FeedForward(cfg.hidden_dim, k, name="means")(h), -1, -2)  # (..., K, d)
        pooled = h.mean(axis=-2)  # (..., e): invariant to the variable order
        b = nn.gelu(nn.Dense(cfg.hidden_dim, name="backbone_0")(pooled))
        b = nn.gelu(nn.Dense(cfg.hidden_dim, name="backbone_1")(b))  # (..., hidden)
        logits = nn.Dense(k, name="weights")(b)  # (..., K)
        rows, cols = np.tril_indices(d)
        raw = nn.Dense(k * rows.size, name="cholesky")(b).reshape(*b.shape[:-1], k, rows.size)
        diag = rows == cols
        entries = jnp.where(diag, jax.nn.softplus(raw) + cfg.diag_floor, raw)  # (..., K, d(d+1)/2)
        tril = jnp.zeros((*entries.shape[:-1], d, d), entries.dtype).at[..., rows, cols].set(entries)
        return logits, locs, tril


class MaceTnp(nn.Module):
    """The MACE-TNP joint extension: :class:`MaceTnpEncoder` then :class:`JointGmmHead`.

    Args (call):
        obs: ``(..., N, d)`` z-scored observational samples.
        query: ``(..., Q, d)`` z-scored query tokens.
        targets: ``(..., d)`` 0/1 intervention target mask.

    Returns:
        ``(logits (..., K), locs (..., K, d), scale_tril (..., K, d, d))`` in normalised units.
    """

    config: MaceTnpConfig

    @nn.compact
    def __call__(self, obs, query, targets):
        h = MaceTnpEncoder(self.config, name="encoder")(obs, query, targets)
        return JointGmmHead(self.config, name="head")(h)


# --------------------------------------------------------------------- pure functions
def normalization_stats(observational):
    """Per-dataset, per-variable z-score statistics of the observational data.

    ``observational (..., N, d)`` → ``(mean (..., d), std (..., d))``; the standard deviation
    (``ddof=0``) is floored at :data:`STD_FLOOR`.
    """
    return standardization_stats(observational, STD_FLOOR)


def denormalize(logits, locs, scale_tril, mean, std) -> GaussianMixture:
    """Map a mixture over z-scored variables ``z = (x - mean) / std`` back to data units.

    Args:
        logits: ``(..., K)`` log-weights (unchanged).
        locs: ``(..., K, d)`` means in normalised units → ``mean + std ⊙ locs``.
        scale_tril: ``(..., K, d, d)`` Cholesky factors → ``diag(std) L`` (still lower
            triangular with a positive diagonal), so Σ ↦ diag(std) Σ diag(std).
        mean, std: ``(..., d)`` the statistics of :func:`normalization_stats`.

    Returns:
        :class:`GaussianMixture` with batch shape ``(...)``, the law of ``mean + std ⊙ z``.
    """
    locs = mean[..., None, :] + std[..., None, :] * locs  # (..., K, d)
    tril = std[..., None, :, None] * scale_tril  # (..., K, d, d): row i scaled by std_i
    return GaussianMixture.from_logits(logits, locs, scale_tril=tril)


def init_params(config: MaceTnpConfig, key: jax.Array, num_samples: int = 8) -> dict:
    """Initial Flax variables ``{"params": ...}`` (the shapes do not depend on ``num_samples``)."""
    return _init_params(config, key, num_samples)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init_params(config: MaceTnpConfig, key: jax.Array, num_samples: int) -> dict:
    d = config.num_vars
    obs = jnp.zeros((1, num_samples, d), jnp.float32)
    query = jnp.zeros((1, 1, d), jnp.float32)
    targets = jnp.zeros((1, d), jnp.float32).at[:, 0].set(1.0)
    return MaceTnp(config).init(key, obs, query, targets)


def _query_values(targets, values):
    """``values (...)`` or ``(..., d)`` → ``(..., d)`` with the value on the targets, 0 elsewhere."""
    values = jnp.broadcast_to(values[..., None], targets.shape) if values.ndim == targets.ndim - 1 else values
    return jnp.where(targets > 0, values, 0.0)


def _normalized_outputs(config, params, observational, targets, query_x):
    """Apply the model: data-unit inputs → normalised mixture parameters and the statistics.

    ``observational (T, N, d)``, ``targets (T, d)``, ``query_x (T, d)`` (data units, only the
    target entries are used) → ``(logits, locs, tril, mean, std)``.
    """
    mean, std = normalization_stats(observational)  # (T, d)
    z_obs = (observational - mean[:, None]) / std[:, None]
    z_query = jnp.where(targets > 0, (query_x - mean) / std, 0.0)[:, None, :]  # (T, 1, d)
    logits, locs, tril = MaceTnp(config).apply(params, z_obs, z_query, targets)
    return logits, locs, tril, mean, std


@functools.partial(jax.jit, static_argnums=0)
def predict_arrays(config: MaceTnpConfig, params, observational, targets, values):
    """Predicted joint post-interventional mixtures, in data units.

    Args:
        config: the architecture (static).
        params: Flax variables of :class:`MaceTnp`.
        observational: ``(T, N, d)`` observational datasets.
        targets: ``(T, d)`` 0/1 intervention target masks.
        values: ``(T,)`` intervention values, or ``(T, d)`` per-variable values (only the
            target entries are read).

    Returns:
        :class:`GaussianMixture` with batch shape ``(T,)`` over all ``d`` variables (``V_t``
        included), ``K = config.num_components``.
    """
    query_x = _query_values(targets, values)
    logits, locs, tril, mean, std = _normalized_outputs(config, params, observational, targets, query_x)
    return denormalize(logits, locs, tril, mean, std)


def _tril_log_prob(logits, locs, tril, x):
    """Mixture log density from Cholesky factors.

    ``logits (T, K)``, ``locs (T, K, d)``, ``tril (T, K, d, d)``, ``x (T, n, d)`` → ``(T, n)``.
    """
    d = locs.shape[-1]
    eye = jnp.broadcast_to(jnp.eye(d, dtype=tril.dtype), tril.shape)
    inv = jax.scipy.linalg.solve_triangular(tril, eye, lower=True)  # (T, K, d, d) = L⁻¹
    diff = x[:, :, None, :] - locs[:, None, :, :]  # (T, n, K, d)
    y = jnp.einsum("tkij,tnkj->tnki", inv, diff)
    log_det = jnp.log(jnp.diagonal(tril, axis1=-2, axis2=-1)).sum(-1)  # (T, K)
    comp = -0.5 * (y**2).sum(-1) - log_det[:, None, :] - 0.5 * d * math.log(2 * math.pi)  # (T, n, K)
    return jax.nn.logsumexp(comp + jax.nn.log_softmax(logits)[:, None, :], axis=-1)


def training_loss(config: MaceTnpConfig, params, observational, interventional, targets, query_index):
    """Mean NLL per interventional sample, in normalised units (the training objective).

    Args:
        config: the architecture.
        params: Flax variables of :class:`MaceTnp`.
        observational: ``(B, N, d)`` observational datasets.
        interventional: ``(B, N_int, d)`` all interventional samples of each task (the loss
            covers every sample and all ``d`` variables).
        targets: ``(B, d)`` 0/1 target masks.
        query_index: ``(B,)`` int, the interventional sample whose intervened coordinate(s)
            form the single query token.

    Returns:
        scalar; it differs from the NLL in data units by ``mean_t sum_j log std_tj``, a constant
        per task, so the gradients are those of the data-unit NLL.
    """
    query_x = jnp.take_along_axis(interventional, query_index[:, None, None], axis=1)[:, 0]  # (B, d)
    logits, locs, tril, mean, std = _normalized_outputs(config, params, observational, targets, query_x)
    z_int = (interventional - mean[:, None]) / std[:, None]
    return -_tril_log_prob(logits, locs, tril, z_int).mean()


@functools.partial(jax.jit, static_argnums=0)
def validation_nll(config: MaceTnpConfig, params, observational, targets, values, interventional):
    """Mean NLL per interventional sample in data units, inference-time query (nominal values).

    ``observational (Q, N, d)``, ``targets (Q, d)``, ``values (Q,)`` or ``(Q, d)``,
    ``interventional (Q, N_int, d)`` → scalar, comparable with ACTIVA's validation NLL.
    """
    query_x = _query_values(targets, values)
    logits, locs, tril, mean, std = _normalized_outputs(config, params, observational, targets, query_x)
    locs = mean[:, None] + std[:, None] * locs
    tril = std[:, None, :, None] * tril
    return -_tril_log_prob(logits, locs, tril, interventional).mean()


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


@functools.lru_cache(maxsize=4)
def _chunk_runner(config: MaceTnpConfig, train_config: MaceTnpTrainConfig, num_tasks: int):
    """``(optimizer, run)`` with ``run(length, state, obs, interventional, targets) -> (state,
    losses (length,))`` jitted (``length`` static): ``length`` AdamW steps in one ``lax.scan``.

    Cached on the (frozen, hashable) configurations, so a resumed or repeated run in the same
    process reuses the compiled chunk.
    """
    optimizer = make_optimizer(train_config)
    batch_size = min(train_config.batch_size, num_tasks)
    batch_key = jax.random.fold_in(jax.random.PRNGKey(train_config.seed), 1)

    def loss_fn(params, obs, inter, targets, query_index):
        return training_loss(config, params, obs, inter, targets, query_index)

    @functools.partial(jax.jit, static_argnums=0)
    def run(length, state, obs, inter, targets):
        def one_step(s, _):
            key_idx, key_q = jax.random.split(jax.random.fold_in(batch_key, s.step))
            idx = jax.random.choice(key_idx, num_tasks, (batch_size,), replace=False)
            query_index = jax.random.randint(key_q, (batch_size,), 0, inter.shape[1])
            loss, grads = jax.value_and_grad(loss_fn)(s.params, obs[idx], inter[idx], targets[idx], query_index)
            updates, opt_state = optimizer.update(grads, s.opt_state, s.params)
            params = optax.apply_updates(s.params, updates)
            return MaceTnpTrainState(s.step + 1, params, opt_state), loss

        return jax.lax.scan(one_step, state, None, length=length)

    return optimizer, run


# ------------------------------------------------------------------------------ fitted model
def _check_batch(config: MaceTnpConfig, observational, targets, values):
    """Validate ``predict_batch`` inputs; returns float32 NumPy arrays."""
    obs = np.asarray(observational, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.float32)
    values = np.asarray(values, dtype=np.float32)
    if obs.ndim != 3:
        raise ValueError(f"observational: expected shape (T, N, d), got {obs.shape}")
    t, n, d = obs.shape
    if d != config.num_vars:
        raise ValueError(f"observational: the model was built for d = {config.num_vars} variables "
                         f"(its Cholesky head fixes d), got d = {d}")
    if n < 2:
        raise ValueError(f"observational: needs at least 2 samples per task, got {n}")
    if targets.shape != (t, d):
        raise ValueError(f"targets: expected shape {(t, d)}, got {targets.shape}")
    if values.shape not in ((t,), (t, d)):
        raise ValueError(f"values: expected shape {(t,)} or {(t, d)}, got {values.shape}")
    if not np.all(np.isfinite(obs)):
        raise ValueError("observational: contains NaN or inf")
    if not np.all((targets == 0) | (targets == 1)) or np.any(targets.sum(-1) == 0):
        raise ValueError("targets: each row must be a 0/1 mask with at least one target")
    if not np.all(np.isfinite(np.where(targets > 0, values if values.ndim == 2 else values[:, None], 0))):
        raise ValueError("values: the intervention values of the targets must be finite")
    return obs, targets, values


@dataclasses.dataclass(frozen=True, eq=False)
class FittedMaceTnp:
    """A MACE-TNP joint extension with trained parameters.

    Attributes:
        config: the :class:`MaceTnpConfig` (architecture; fixes ``d``).
        params: Flax variables ``{"params": ...}`` of :class:`MaceTnp`.
        info: JSON-serialisable training summary (steps, best validation NLL, data, wall time).
    """

    config: MaceTnpConfig
    params: dict
    info: dict = dataclasses.field(default_factory=dict)

    def predict_batch(self, observational: Any, targets: Any, values: Any,
                      variable_names=None) -> GaussianMixture:
        """Predict the joint post-interventional distribution of many tasks (one compiled call).

        Args:
            observational: ``(T, N, d)`` observational datasets, ``d == config.num_vars``.
            targets: ``(T, d)`` 0/1 intervention target masks.
            values: ``(T,)`` intervention values (privileged information), or ``(T, d)``
                per-variable values of which only the target entries are read.
            variable_names: optional ``d`` names for the returned mixture.

        Returns:
            :class:`GaussianMixture` with batch shape ``(T,)`` over all ``d`` variables, the
            intervened ones included.

        Raises:
            ValueError: wrong shapes (``d`` other than the head's), fewer than 2 samples,
                non-finite data or values, or a target row that is not a non-empty 0/1 mask.
        """
        obs, targets, values = _check_batch(self.config, observational, targets, values)
        mix = predict_arrays(self.config, self.params, jnp.asarray(obs), jnp.asarray(targets), jnp.asarray(values))
        return mix.with_names(variable_names) if variable_names is not None else mix

    def predict(self, obs: Any, target: Any, value: float) -> GaussianMixture:
        """Predict p(V | do(V_target = value)) for one observational dataset.

        Args:
            obs: ``(N, d)`` observational samples, an array or a pandas DataFrame (whose column
                names then name the variables).
            target: the intervened variable(s): an index, a column name, a list of them, or a
                boolean mask of length d.
            value: the intervention value.

        Returns:
            unbatched :class:`GaussianMixture` over all d variables.
        """
        array, names = as_observations(obs, "obs")
        mask = resolve_targets(target, names, "target")
        mix = self.predict_batch(array[None], mask[None], np.array([value], np.float32))
        return mix[0].with_names(names)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model into the folder ``path`` (layout of :mod:`activa_ppl.fitted`).

        ``config.json`` (``"format": "activa_ppl.mace_tnp"``) is the commit point: the
        content-addressed parameter file is written first, then ``config.json`` atomically,
        then parameter files it no longer names are removed.
        """
        return write_model_folder(path, MODEL_FORMAT, MODEL_FORMAT_VERSION, self.config.to_dict(),
                                  self.params, self.info)


def load_mace_tnp(path: str | os.PathLike) -> FittedMaceTnp:
    """Load a model saved by :meth:`FittedMaceTnp.save` (never executes code from the files).

    Raises:
        CheckpointError: missing files, another format (e.g. an ACTIVA model), checksum
            mismatch, or parameters that do not fit the configuration.
    """
    raw_config, params, info, config_path = read_model_folder(path, MODEL_FORMAT, MODEL_FORMAT_VERSION,
                                                              "MACE-TNP")
    try:
        model_config = MaceTnpConfig.from_dict(raw_config)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{config_path}: invalid model_config ({e})") from e
    check_params(jax.eval_shape(lambda k: init_params(model_config, k), jax.random.PRNGKey(0)), params, path)
    return FittedMaceTnp(config=model_config, params=params, info=info)


def mace_tnp_predictor(fitted: FittedMaceTnp, batch_size: int = 256) -> Predictor:
    """MACE-TNP as an :class:`~activa_ppl.evaluation.Predictor` (label ``"MACE-TNP"``).

    It reads the exact intervention values ``dataset.intervention_values[tasks.scm,
    tasks.query]`` (privileged information) and is scored on all marginals, ``"all"``
    (with ``V_t``) included. Tasks are predicted in chunks of ``batch_size``, the last one
    padded, so a whole split compiles once.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    def predict(tasks: TaskArrays, dataset: InterventionalDataset) -> GaussianMixture:
        values = np.asarray(dataset.intervention_values[tasks.scm, tasks.query], np.float32)
        num = len(tasks.scm)
        obs, targets = np.asarray(tasks.observational), np.asarray(tasks.targets)
        size = min(batch_size, num)
        parts = []
        for i in range(0, num, size):
            sl = slice(i, i + size)
            chunk = [obs[sl], targets[sl], values[sl]]
            pad = size - len(chunk[0])
            if pad:  # repeat the last task: same shapes, no recompilation
                chunk = [np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]) for a in chunk]
            mix = fitted.predict_batch(*chunk)
            parts.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[:size - pad], mix))
        return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)

    return Predictor(predict, label="MACE-TNP", sets=MARGINAL_SET_NAMES, privileged=(INTERVENTION_VALUE,))


# ---------------------------------------------------------------------------------- training
def _task_arrays(tasks: TaskArrays, dataset: InterventionalDataset):
    """``(observational, interventional, targets, values)`` as float32 device arrays."""
    return (jnp.asarray(tasks.observational, jnp.float32), jnp.asarray(tasks.interventional, jnp.float32),
            jnp.asarray(tasks.targets, jnp.float32),
            jnp.asarray(dataset.intervention_values[tasks.scm, tasks.query], jnp.float32))


def train_mace_tnp(
    model_or_config: MaceTnpConfig | MaceTnp,
    data: InterventionalDataset,
    num_steps: int | None = None,
    seed: int | None = None,
    *,
    config: MaceTnpTrainConfig | None = None,
    workdir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    **overrides: Any,
) -> FittedMaceTnp:
    """Train MACE-TNP on the ``"train"`` split of ``data``; validate on ``"valid"``.

    Every ``eval_every`` steps run as one compiled ``lax.scan``; after each chunk the
    validation NLL (data units, nominal intervention values as at inference) of a fixed,
    seeded subset of validation tasks is computed, the best parameters are kept, and with a
    ``workdir`` a checkpoint is written atomically and a line appended to ``metrics.jsonl``
    (``step``, ``train_nll_per_sample`` (normalised units, chunk mean), ``valid_nll``,
    ``best_valid_nll``, ``best_step``, ``learning_rate``, ``elapsed_s``).

    Args:
        model_or_config: a :class:`MaceTnpConfig` or a :class:`MaceTnp` module.
        data: a dataset with train and valid splits and ``d == config.num_vars`` variables.
        num_steps, seed, **overrides: shortcuts for fields of :class:`MaceTnpTrainConfig`.
        config: the full training configuration (defaults: ``MaceTnpTrainConfig()``).
        workdir: folder for ``checkpoint.npz`` and ``metrics.jsonl``; ``None`` keeps nothing.
        resume: continue from ``workdir/checkpoint.npz`` if present; it must come from the
            same model and training configuration (``num_steps`` included: the cosine schedule
            depends on it).
        progress: show a progress bar.

    Returns:
        :class:`FittedMaceTnp` with the parameters of the best validation NLL.

    Raises:
        TrainingDiverged: the loss became NaN/inf; the checkpoint keeps the last good state.
        ValueError: the dataset's ``d`` differs from the model's, or a split is empty.
        CheckpointError: the checkpoint in ``workdir`` belongs to another configuration.
    """
    model_config = model_or_config.config if isinstance(model_or_config, MaceTnp) else model_or_config
    if not isinstance(model_config, MaceTnpConfig):
        raise TypeError(f"model_or_config must be a MaceTnpConfig or MaceTnp, got {type(model_or_config).__name__}")
    fields = dict(overrides)
    if num_steps is not None:
        fields["num_steps"] = num_steps
    if seed is not None:
        fields["seed"] = seed
    config = dataclasses.replace(config or MaceTnpTrainConfig(), **fields)
    if data.num_vars != model_config.num_vars:
        raise ValueError(f"the dataset has d = {data.num_vars} variables but the model's Cholesky head "
                         f"was built for d = {model_config.num_vars}")
    train_tasks, valid_tasks = data.tasks("train"), data.tasks("valid")
    if len(train_tasks.scm) == 0 or len(valid_tasks.scm) == 0:
        raise ValueError("the dataset needs non-empty 'train' and 'valid' splits")
    obs, inter, targets, _ = _task_arrays(train_tasks, data)
    num_valid = min(config.num_validation_tasks, len(valid_tasks.scm))
    pick = np.random.default_rng(config.seed).permutation(len(valid_tasks.scm))[:num_valid]
    v_obs, v_inter, v_targets, v_values = (a[pick] for a in _task_arrays(valid_tasks, data))
    num_tasks = obs.shape[0]

    optimizer, run = _chunk_runner(model_config, config, num_tasks)
    params = init_params(model_config, jax.random.PRNGKey(config.seed), num_samples=obs.shape[1])
    state = MaceTnpTrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))

    step, best_step, best_nll, elapsed_before, best_params = 0, -1, math.inf, 0.0, params
    workdir = Path(workdir) if workdir is not None else None
    ckpt_path = workdir / CHECKPOINT_NAME if workdir else None
    metrics_path = workdir / METRICS_NAME if workdir else None
    meta_base = {"format": MODEL_FORMAT, "model_config": model_config.to_dict(),
                 "train_config": config.to_dict(), "dataset": data.metadata}
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    if ckpt_path is not None and resume and ckpt_path.exists():
        arrays, meta = load_arrays(ckpt_path)
        if any(meta.get(k) != meta_base[k] for k in ("format", "model_config", "train_config")):
            raise CheckpointError(f"{ckpt_path}: written by a run with a different configuration; "
                                  "use another workdir or resume=False")
        ref, treedef = jax.tree_util.tree_flatten(state)
        leaves = [arrays[f"state/{i:04d}"] for i in range(meta["num_state_leaves"])]
        if len(ref) != len(leaves) or any(a.shape != b.shape or a.dtype != b.dtype for a, b in zip(ref, leaves)):
            raise CheckpointError(f"{ckpt_path}: the checkpoint does not match this model/optimizer")
        state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in leaves])
        best_params = unflatten_params({k[5:]: v for k, v in arrays.items() if k.startswith("best/")})
        step, best_step, best_nll = meta["step"], meta["best_step"], meta["best_nll"]
        elapsed_before = float(meta.get("elapsed_s", 0.0))
        _truncate_metrics(metrics_path, step)
    elif metrics_path is not None and metrics_path.exists():
        metrics_path.unlink()  # a fresh run starts a fresh log

    lr_schedule = _schedule(config)
    start = time.perf_counter()
    bar = tqdm(total=config.num_steps, initial=step, disable=not progress, desc="MACE-TNP",
               unit="step", dynamic_ncols=True)
    try:
        while step < config.num_steps:
            length = min(config.eval_every, config.num_steps - step)
            new_state, losses = run(length, state, obs, inter, targets)
            losses = np.asarray(losses)
            if not np.all(np.isfinite(losses)) or not _all_finite(new_state.params):
                bad = int(np.argmax(~np.isfinite(losses))) if not np.all(np.isfinite(losses)) else length - 1
                raise TrainingDiverged(
                    f"non-finite loss at step {step + bad + 1}; stopped, last good state is step {step}"
                    + (f" (checkpoint {ckpt_path})" if ckpt_path else "") + "; lower the learning rate"
                )
            state, step = new_state, step + length
            nll = float(validation_nll(model_config, state.params, v_obs, v_targets, v_values, v_inter))
            if nll < best_nll:
                best_nll, best_step, best_params = nll, step, state.params
            record = {
                "step": step,
                "train_nll_per_sample": float(losses.mean()),
                "valid_nll": nll,
                "best_valid_nll": best_nll,
                "best_step": best_step,
                "learning_rate": float(lr_schedule(step)),
                "elapsed_s": round(elapsed_before + time.perf_counter() - start, 3),
            }
            if ckpt_path is not None:
                with open(metrics_path, "a") as f:  # before the checkpoint, see activa_ppl.training
                    f.write(json.dumps(record) + "\n")
                leaves = jax.tree_util.tree_leaves(state)
                arrays = {f"state/{i:04d}": np.asarray(x) for i, x in enumerate(leaves)}
                arrays.update({f"best/{k}": v for k, v in flatten_params(best_params).items()})
                save_arrays(ckpt_path, arrays, {**meta_base, "step": step, "best_step": best_step,
                                                "best_nll": best_nll, "num_state_leaves": len(leaves),
                                                "elapsed_s": record["elapsed_s"]})
            bar.update(length)
            bar.set_postfix(loss=f"{record['train_nll_per_sample']:.3f}", valid_nll=f"{nll:.3f}")
    finally:
        bar.close()
    info = _run_summary(step, best_step, best_nll, config, data, elapsed_before + time.perf_counter() - start)
    return FittedMaceTnp(config=model_config, params=best_params, info=info)
