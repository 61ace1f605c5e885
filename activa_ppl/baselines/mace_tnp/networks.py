"""The MACE-TNP networks (Appendix D.1 and D.2), in Flax linen."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from activa_ppl.baselines.mace_tnp.config import MaceTnpConfig
from activa_ppl.networks import AttentionBlock, FeedForward, attention_layer

__all__ = ["CrossAttentionBlock", "MaceTnpEncoder", "JointGmmHead", "MaceTnp"]


class CrossAttentionBlock(nn.Module):
    """Pre-LayerNorm cross-attention block: queries attend to a context over axis ``-2``.

    ``x: (..., Q, e)``, ``context: (..., N, e) -> (..., Q, e)``; residual cross-attention,
    then a residual feed-forward layer (the :class:`~activa_ppl.networks.AttentionBlock`
    layout with keys and values from ``context``, and its attention formulation,
    :func:`~activa_ppl.networks.attention_layer`).
    """

    num_heads: int
    hidden_dim: int

    @nn.compact
    def __call__(self, x, context):
        h = nn.LayerNorm()(x)
        c = nn.LayerNorm()(context)
        x = x + attention_layer(self.num_heads)(h, c)
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
