"""Flax networks of ACTIVA (paper Section 5, Figure 2).

Every network is permutation *equivariant* in the variable axis and (after mean pooling)
*invariant* in the sample axis: variables are tokens that attend to each other, samples are
tokens that attend to each other, and no layer ever mixes a variable's position into its
parameters. This is what lets one trained model take any number of variables ``d``.

Shapes use ``...`` for any leading batch dimensions (tasks, latent draws).

``ActivaConfig.matmul_dtype = "bfloat16"`` runs the matmuls of every attention block (the
attention projections and the feed-forward layers of the dataset embeddings and of the
decoder: nearly all FLOPs) with bfloat16 operands and float32 accumulation
(:func:`dense_kwargs`); they see layer-normed inputs. The input projections (which see raw
data values, where bfloat16's 8-bit mantissa would round large values coarsely), the heads
(prior, posterior, the decoder's mixture outputs), layer norms, residuals and the parameters
stay float32. The default ``"float32"`` passes nothing extra to Flax.

``ActivaConfig.attention`` chooses how the attention layers compute (not what):
``"deferred"`` (default, :class:`MultiHeadAttention`) or Flax's ``nn.MultiHeadDotProductAttention``
(``"softmax"``); the parameters are the same, the values equal to float tolerance.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from activa_ppl.config import ATTENTION_IMPLS, ActivaConfig

__all__ = [
    "dense_kwargs",
    "attention_kwargs",
    "ATTENTION_IMPLS",
    "MultiHeadAttention",
    "attention_layer",
    "FeedForward",
    "AttentionBlock",
    "DatasetEmbedding",
    "PriorHead",
    "PosteriorHead",
    "Decoder",
]


#: ``dot_general`` with float32 results: bfloat16 operands, float32 accumulation and output.
_DOT_F32 = functools.partial(jax.lax.dot_general, preferred_element_type=jnp.float32)


def dense_kwargs(matmul_dtype: str = "float32") -> dict:
    """Keyword arguments of ``nn.Dense`` for ``ActivaConfig.matmul_dtype``.

    ``"float32"``: none (Flax's defaults, the original computation bit for bit).
    ``"bfloat16"``: inputs and kernel rounded to bfloat16 for the matmul, accumulated and
    returned in float32 (``preferred_element_type``); the parameters stay float32
    (``param_dtype`` is left at its default), so the parameter tree and checkpoints do not change.
    """
    if matmul_dtype == "float32":
        return {}
    return {"dtype": jnp.bfloat16, "dot_general": _DOT_F32}


def attention_kwargs(matmul_dtype: str = "float32") -> dict:
    """Keyword arguments of ``nn.MultiHeadDotProductAttention`` for ``matmul_dtype``: with
    ``"bfloat16"`` the q/k/v and output projections as in :func:`dense_kwargs`, the q·k logits
    in bfloat16, the softmax in float32; none with ``"float32"``."""
    if matmul_dtype == "float32":
        return {}
    return {"dtype": jnp.bfloat16, "qkv_dot_general": _DOT_F32, "out_dot_general": _DOT_F32,
            "force_fp32_for_softmax": True}


#: The name Flax gives the first ``nn.MultiHeadDotProductAttention`` of a block: the
#: :class:`MultiHeadAttention` of a block takes it, so both formulations share one parameter tree.
_FLAX_ATTENTION_NAME = "MultiHeadDotProductAttention_0"


class MultiHeadAttention(nn.Module):
    """Multi-head dot-product attention with the normalisation deferred past the value product.

    The parameters, their initialisation and the result are those of
    ``nn.MultiHeadDotProductAttention(num_heads)`` (to float tolerance; tested): projections
    ``query``, ``key``, ``value`` (``DenseGeneral`` to ``(heads, e / heads)``) and ``out``.
    What differs is the order of the operations. Flax normalises the ``(..., heads, L_q, L_kv)``
    attention matrix (``softmax``) and then multiplies by the values; here

        s = q kᵀ / √(e/h),  p = exp(s − max s),  out = (p v) / Σ_k p

    divides the ``(..., L_q, heads, e/h)`` product instead, with the row maximum a constant of
    the differentiation (the result does not depend on it). That saves one pass over the
    attention matrix forward and the softmax Jacobian backward: on XLA's CPU backend, where
    every pass over that matrix is a memory-bound kernel, one layer over the 100 samples of a
    Gauss 2 task runs 1.7x faster, forward and backward; over 30-80 samples or 2-8 variables
    it is 1.0-1.1x (``benchmarks/bench_attention.py``, ``benchmarks/README.md``).

    Args (call):
        inputs_q: ``(..., L_q, e)`` queries.
        inputs_kv: ``(..., L_kv, e_kv)`` keys and values (``None``: ``inputs_q``, self-attention).
        mask: optional, broadcastable to ``(..., heads, L_q, L_kv)``, True = may attend (as
            Flax's; a query with no key to attend to attends uniformly, as there).

    Returns:
        ``(..., L_q, e)``. ``matmul_dtype="bfloat16"``: projections as :func:`dense_kwargs`,
        the two attention products with bfloat16 operands and float32 results, the exponent
        and the normalisation in float32.
    """

    num_heads: int
    matmul_dtype: str = "float32"

    @nn.compact
    def __call__(self, inputs_q, inputs_kv=None, mask=None):
        inputs_kv = inputs_q if inputs_kv is None else inputs_kv
        e = inputs_q.shape[-1]
        if e % self.num_heads:
            raise ValueError(f"embedding size {e} is not divisible by num_heads {self.num_heads}")
        head_dim = e // self.num_heads
        kw = dense_kwargs(self.matmul_dtype)
        project = functools.partial(nn.DenseGeneral, axis=-1, features=(self.num_heads, head_dim), **kw)
        q = project(name="query")(inputs_q) / jnp.sqrt(head_dim).astype(jnp.float32)  # (..., L_q, h, hd)
        k = project(name="key")(inputs_kv)  # (..., L_kv, h, hd)
        v = project(name="value")(inputs_kv)
        op = jnp.float32 if self.matmul_dtype == "float32" else jnp.bfloat16
        s = jnp.einsum("...qhd,...khd->...hqk", q.astype(op), k.astype(op),
                       preferred_element_type=jnp.float32)  # (..., h, L_q, L_kv)
        if mask is not None:
            s = jnp.where(mask, s, jnp.finfo(s.dtype).min)
        p = jnp.exp(s - jax.lax.stop_gradient(s.max(axis=-1, keepdims=True)))
        total = jnp.moveaxis(p.sum(axis=-1), -2, -1)[..., None]  # (..., L_q, h, 1)
        out = jnp.einsum("...hqk,...khd->...qhd", p.astype(op), v.astype(op),
                         preferred_element_type=jnp.float32) / total  # (..., L_q, h, hd)
        return nn.DenseGeneral(features=e, axis=(-2, -1), name="out", **kw)(out)


def attention_layer(num_heads: int, matmul_dtype: str = "float32", impl: str = "deferred") -> nn.Module:
    """The attention layer of a transformer block, in formulation ``impl``
    (:data:`ATTENTION_IMPLS`): ``"deferred"`` a :class:`MultiHeadAttention`, ``"softmax"``
    Flax's ``nn.MultiHeadDotProductAttention`` (the computation before issue 17). Both are
    named as Flax names the first attention of a block, so the parameter tree is the same
    and parameters trained with one run with the other. Call it inside a compact module."""
    if impl == "softmax":
        return nn.MultiHeadDotProductAttention(num_heads=num_heads, **attention_kwargs(matmul_dtype))
    if impl != "deferred":
        raise ValueError(f"attention formulation must be one of {ATTENTION_IMPLS}, got {impl!r}")
    return MultiHeadAttention(num_heads, matmul_dtype, name=_FLAX_ATTENTION_NAME)


class FeedForward(nn.Module):
    """Two-layer MLP applied to the last axis: ``(..., f_in) -> (..., out_dim)``.

    ``matmul_dtype``: see :func:`dense_kwargs` (the result is float32 either way).
    """

    hidden_dim: int
    out_dim: int
    matmul_dtype: str = "float32"

    @nn.compact
    def __call__(self, x):
        kw = dense_kwargs(self.matmul_dtype)
        x = nn.gelu(nn.Dense(self.hidden_dim, **kw)(x))
        return nn.Dense(self.out_dim, **kw)(x)


class AttentionBlock(nn.Module):
    """Pre-LayerNorm transformer block with self-attention over axis ``-2``.

    ``x: (..., length, e) -> (..., length, e)``; residual attention, then residual feed-forward.
    The optional ``mask`` (broadcastable to ``(..., num_heads, length, length)``, True = may
    attend) is passed to the attention layer; ``None`` attends everywhere.
    ``matmul_dtype``: the matmuls' operand type (:func:`dense_kwargs`, :func:`attention_kwargs`);
    layer norms, residuals and the result are float32 either way. ``attention``: the
    formulation of the attention layer (:func:`attention_layer`).
    """

    num_heads: int
    hidden_dim: int
    matmul_dtype: str = "float32"
    attention: str = "deferred"

    @nn.compact
    def __call__(self, x, mask=None):
        h = nn.LayerNorm()(x)
        x = x + attention_layer(self.num_heads, self.matmul_dtype, self.attention)(h, h, mask=mask)
        h = nn.LayerNorm()(x)
        return x + FeedForward(self.hidden_dim, x.shape[-1], self.matmul_dtype)(h)


class DatasetEmbedding(nn.Module):
    """The embedding network h_α of a dataset augmented with its intervention representation.

    ``L`` blocks alternate attention over the ``d`` variables and over the ``N`` samples; the
    result is mean-pooled over samples.

    Args (call):
        data: ``(..., N, d)`` samples.
        intervention: ``(..., N, d, |I|)`` the representation I_{i,t} (see
            :func:`activa_ppl.interventions.intervention_representation`).
        mask: optional ``(..., N)`` boolean, True for the real samples. Padded samples (False)
            are excluded as keys from the attention over samples and from the mean pool, so a
            dataset padded to a larger ``N`` embeds like the unpadded one (to float tolerance;
            at least one sample per dataset must be real). The attention over variables is
            per sample, so padded samples there only produce rows the pool drops. ``None``
            (the default): every sample is real, the original computation, bit for bit.

    Returns:
        ``(..., d, e)`` one embedding per variable.
    """

    config: ActivaConfig

    @nn.compact
    def __call__(self, data, intervention, mask=None):
        cfg = self.config
        x = jnp.concatenate([data[..., None], intervention], axis=-1)  # (..., N, d, 1 + |I|)
        x = nn.Dense(cfg.embed_dim)(x)  # (..., N, d, e); float32 always: raw data values
        # Attention over samples runs on (..., d, N, e): keys masked per dataset, the same for
        # every variable, head and query, i.e. (..., 1, 1, 1, N_kv).
        attn_mask = None if mask is None else mask[..., None, None, None, :]
        for _ in range(cfg.num_encoder_blocks):
            x = AttentionBlock(cfg.num_heads, cfg.hidden_dim, cfg.matmul_dtype, cfg.attention)(x)  # over variables
            x = jnp.swapaxes(x, -2, -3)  # (..., d, N, e)
            x = AttentionBlock(cfg.num_heads, cfg.hidden_dim, cfg.matmul_dtype, cfg.attention)(
                x, attn_mask)  # over samples
            x = jnp.swapaxes(x, -2, -3)  # (..., N, d, e)
        x = nn.LayerNorm()(x)
        if mask is None:
            return x.mean(axis=-3)  # (..., d, e)
        weights = mask.astype(x.dtype)[..., None, None]  # (..., N, 1, 1)
        total = jnp.where(weights > 0, x, 0.0).sum(axis=-3)  # (..., d, e)
        return total / weights.sum(axis=-3)  # masked mean over the real samples


class PriorHead(nn.Module):
    """pri_η: per-variable MLPs mapping h' to the conditional GMM prior over z ∈ R^d.

    Args (call):
        h_obs: ``(..., d, e)`` embedding of the observational data and the query.

    Returns:
        ``(logits (..., C), locs (..., C, d))``: component log-weights (softmax-normalised by
        the distribution) and component means. Each variable's MLP emits its coordinate of
        every component mean and a per-variable vote for every component's weight; votes are
        averaged over variables, which keeps the weights invariant to variable order.
    """

    config: ActivaConfig

    @nn.compact
    def __call__(self, h_obs):
        cfg = self.config
        locs = FeedForward(cfg.hidden_dim, cfg.prior_components, name="means")(h_obs)  # (..., d, C)
        votes = FeedForward(cfg.hidden_dim, cfg.prior_components, name="weights")(h_obs)  # (..., d, C)
        return votes.mean(axis=-2), jnp.swapaxes(locs, -1, -2)


class PosteriorHead(nn.Module):
    """enc_φ: mean of q(z | D_int, D_obs, do) from the two concatenated embeddings.

    Args (call):
        h_obs: ``(..., d, e)`` observational embedding h' (shared with the prior).
        h_int: ``(..., d, e)`` interventional embedding h''.

    Returns:
        ``(..., d)`` the posterior mean μ_φ, one coordinate per variable.
    """

    config: ActivaConfig

    @nn.compact
    def __call__(self, h_obs, h_int):
        h = jnp.concatenate([h_obs, h_int], axis=-1)  # (..., d, 2e)
        return FeedForward(self.config.hidden_dim, 1)(h)[..., 0]


class Decoder(nn.Module):
    """dec_γ: transformer over latent coordinates → B-component Gaussian mixture over V.

    Args (call):
        z: ``(..., d)`` latent point.
        context: ``(..., d, e)`` the observational embedding h′, required with
            ``config.decoder_context`` (then projected and added to the input tokens; it
            broadcasts against extra leading latent-draw axes of ``z``), ignored otherwise.
        features: ``(..., d, 3)`` the regression statistics of
            :func:`activa_ppl.regression.regression_features`, required with
            ``config.regression_context`` (projected and added to the input tokens; they
            broadcast like ``context``), and with ``config.regression_residual`` (whose
            gated conditional mean, ``features[..., 1]``, is added to every component's
            mean); ignored otherwise.

    Returns:
        ``(logits (..., B), locs (..., B, d), covariances (..., B, d, d))``. With the
        ``"lowrank"`` head Σ = u uᵀ / r + εI from a row-wise linear factor ``u: (..., B, d, r)``
        (the 1/r keeps the initial scale independent of the rank r); with ``"cholesky"``
        Σ = L Lᵀ + εI (:func:`_cholesky_covariances`). The weights come from a sum over
        variables followed by a linear layer.
    """

    config: ActivaConfig

    @nn.compact
    def __call__(self, z, context=None, features=None):
        cfg = self.config
        num_b, rank = cfg.decoder_components, cfg.covariance_rank
        h = nn.Dense(cfg.embed_dim)(z[..., None])  # (..., d, e)
        if cfg.decoder_context:
            if context is None:
                raise ValueError("ActivaConfig(decoder_context=True): the decoder needs the context h'")
            h = h + nn.Dense(cfg.embed_dim, name="context")(context)
        if (cfg.regression_context or cfg.regression_residual) and features is None:
            raise ValueError("ActivaConfig(regression_context=True or regression_residual=True): the "
                             "decoder needs the regression features (activa_ppl.regression)")
        if cfg.regression_context:
            h = h + nn.Dense(cfg.embed_dim, name="regression")(features)
        for _ in range(cfg.num_decoder_blocks):
            h = AttentionBlock(cfg.num_heads, cfg.hidden_dim, cfg.matmul_dtype, cfg.attention)(h)
        h = nn.LayerNorm()(h)  # h_dec: (..., d, e)
        locs = jnp.swapaxes(nn.Dense(num_b, name="means")(h), -1, -2)  # (..., B, d)
        if cfg.regression_residual:  # loc_bj + g_bj · m_j, the gate starting at 1
            gate = nn.Dense(num_b, name="regression_gate", kernel_init=nn.initializers.zeros,
                            bias_init=nn.initializers.ones)(h)  # (..., d, B)
            locs = locs + jnp.swapaxes(gate, -1, -2) * features[..., 1][..., None, :]
        eye = jnp.eye(z.shape[-1], dtype=h.dtype)
        if cfg.covariance_head == "cholesky":
            covariances = _cholesky_covariances(cfg, h) + cfg.covariance_eps * eye
        else:
            u = _per_component(nn.Dense(num_b * rank, name="factor")(h), num_b)  # (..., B, d, r)
            covariances = u @ jnp.swapaxes(u, -1, -2) / rank + cfg.covariance_eps * eye  # (..., B, d, d)
        logits = nn.Dense(num_b, name="weights")(h.sum(axis=-2))  # (..., B)
        return logits, locs, covariances


def _per_component(x, num_b: int):
    """``(..., d, B * r) -> (..., B, d, r)``."""
    x = x.reshape(*x.shape[:-1], num_b, x.shape[-1] // num_b)  # (..., d, B, r)
    return jnp.moveaxis(x, -2, -3)


def _cholesky_covariances(cfg: ActivaConfig, h):
    """Σ = L Lᵀ per component from the decoder tokens ``h (..., d, e)``: ``(..., B, d, d)``.

    ``L`` is lower triangular with diagonal ``softplus(a_i) + cholesky_floor`` (a linear map of
    token i) and strictly-lower entries ``L_ij = p_i · q_j / r`` (pairwise products of two linear
    maps of the tokens). Which entries are "lower" depends on the variable order, so unlike the
    low-rank head this Σ is not exactly equivariant to permuting the variables (as MACE-TNP's
    Cholesky head is not); the diagonal floor holds in any order.
    """
    num_b, rank = cfg.decoder_components, cfg.covariance_rank
    p = _per_component(nn.Dense(num_b * rank, name="factor")(h), num_b)  # (..., B, d, r)
    q = _per_component(nn.Dense(num_b * rank, name="factor_q")(h), num_b)
    a = jnp.swapaxes(nn.Dense(num_b, name="diagonal")(h), -1, -2)  # (..., B, d)
    d = h.shape[-2]
    lower = jnp.tril(p @ jnp.swapaxes(q, -1, -2) / rank, k=-1)
    tril = lower + (jax.nn.softplus(a) + cfg.cholesky_floor)[..., None] * jnp.eye(d, dtype=h.dtype)
    return tril @ jnp.swapaxes(tril, -1, -2)
