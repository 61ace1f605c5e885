"""ACTIVA as a NumPyro model/guide pair (paper Eq. 4 and 5).

The generative story, for each task j (an observational dataset and an intervention query)::

    z_j ~ p_η(z | D_obs_j, do_j)             conditional GMM prior, C components, variance 0.1
    v_jn ~ p_γ(V | z_j),  n = 1..N            decoded B-component full-covariance mixture

and the guide (encoder) ``z_j ~ q_φ(z | D_int_j, D_obs_j, do_j) = N(μ_φ, 0.1·I)``. Tasks live in
a ``numpyro.plate`` with ``subsample_size``, so ``svi.run(key, steps, *arrays)`` trains on random
minibatches of the whole training set inside one compiled loop.

At prediction the prior is sampled S times and each latent decoded, which gives a uniform mixture
of S·B Gaussians (:func:`predictive_mixture`).

With ``ActivaConfig(standardize=True)`` (not in the paper) the networks see every dataset
z-scored per variable by its observational mean and std, the intervention representation carries
the intervened value's z-score as an extra channel, and the decoded components are mapped back to
data units before the likelihood (:mod:`activa_ppl.standardize`), so the story above holds in data
units and the model is invariant to each variable's units.
"""

from __future__ import annotations

import contextlib
import math
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.module import flax_module

from activa_ppl.config import ActivaConfig
from activa_ppl.distributions import (  # noqa: F401  (stratified_predictive: importable from here, as before)
    decoded_distribution, log_predictive, pin_targets, predictive_energy_score, prior_distribution,
    stratified_predictive)
from activa_ppl.elbo import SharedEmbeddingELBO
from activa_ppl.handlers import beta_kl
from activa_ppl.interventions import intervention_representation
from activa_ppl.mixture import GaussianMixture
from activa_ppl.networks import DatasetEmbedding, Decoder, PosteriorHead, PriorHead
from activa_ppl.regression import NUM_REGRESSION_FEATURES, regression_features
from activa_ppl.standardize import standardization_stats, to_data_units

__all__ = ["Activa", "SharedEmbeddingELBO", "predictive_arrays", "predictive_mixture"]

#: Names of the Flax modules, i.e. of the NumPyro ``param`` sites ``<name>$params``.
MODULES = ("obs_embedding", "prior", "decoder", "int_embedding", "posterior")
#: The ``param`` site of ``ActivaConfig(exact_targets=True)``: ``θ (|I|,)``, the log sd of the
#: intervened coordinate for each intervention index, in data units.
TARGET_LOG_SD = "target_log_sd"


def _as_device(observational, targets, intervention_index, interventional):
    """The task arrays as JAX arrays (NumPy inputs cannot be indexed by a traced subsample)."""
    return (jnp.asarray(observational, jnp.float32), jnp.asarray(targets, jnp.float32),
            jnp.asarray(intervention_index, jnp.int32),
            None if interventional is None else jnp.asarray(interventional, jnp.float32))


def _standardization(cfg: ActivaConfig, observational, targets, intervention_index, mask=None):
    """With ``cfg.standardize``: ``((mean, std) (T, d) each, value channel (T, d))``, else ``(None, None)``.

    The value channel is the intervened value's z-score ``(v_i - mean_t) / std_t`` at the
    targets and 0 elsewhere. ``mask (T, N)`` (True: real sample) restricts the statistics to
    the real samples of padded datasets.
    """
    if not cfg.standardize:
        return None, None
    mean, std = standardization_stats(observational, cfg.std_floor, mask)
    values = jnp.asarray(cfg.intervention_values, jnp.float32)[intervention_index]  # (T,)
    channel = jnp.where(targets > 0, (values[..., None] - mean) / std, 0.0)  # (T, d)
    return (mean, std), channel


def _representation(cfg: ActivaConfig, targets, intervention_index, num_samples: int, channel):
    """I_{i,t} ``(T, N, d, |I|)``, with the value channel appended ``(T, N, d, |I|+1)`` if given."""
    rep = intervention_representation(targets, intervention_index, cfg.num_interventions, num_samples)
    if channel is None:
        return rep
    extra = jnp.broadcast_to(channel[..., None, :, None], (*rep.shape[:-1], 1))
    return jnp.concatenate([rep, extra], axis=-1)


def _z_scored(x, stats):
    """``x (T, N, d)`` in the networks' units: z-scores when ``stats = (mean, std)`` is set."""
    return x if stats is None else (x - stats[0][..., None, :]) / stats[1][..., None, :]


def _decoder_inputs(cfg: ActivaConfig, h_obs, observational, targets, intervention_index, mask=None):
    """The decoder's inputs beside z: ``(h′ (T, d, e) or None, regression features (T, d, 3) or
    None)``, as ``cfg.decoder_context`` and ``cfg.regression_context`` or
    ``cfg.regression_residual`` ask; ``observational`` in data units."""
    features = None
    if cfg.regression_context or cfg.regression_residual:
        values = jnp.asarray(cfg.intervention_values, jnp.float32)[intervention_index]  # (T,)
        features = regression_features(observational, targets, values, cfg.std_floor,
                                       standardized=cfg.standardize, mask=mask)
    return (h_obs if cfg.decoder_context else None), features


def _data_units(cfg: ActivaConfig, locs, covariances, stats, targets, intervention_index, target_log_sd):
    """Decoded components ``(..., T, K, d[, d])`` as the likelihood sees them: back in data units
    (unchanged without standardization), then, with ``cfg.exact_targets``, the intervened
    coordinates set to ``v_i`` with variance ``exp(2 θ_i) + ε σ_t²``
    (:func:`~activa_ppl.distributions.pin_targets`; ``target_log_sd`` is θ ``(|I|,)``)."""
    if stats is not None:
        locs, covariances = to_data_units(locs, covariances, *stats)
    if not cfg.exact_targets:
        return locs, covariances
    values = jnp.asarray(cfg.intervention_values, jnp.float32)[intervention_index]  # (T,)
    floor = cfg.covariance_eps * (1.0 if stats is None else jnp.square(stats[1]))  # ε I in the networks' units
    variances = jnp.exp(2.0 * target_log_sd)[intervention_index][:, None] + floor  # (T, 1 or d)
    return pin_targets(locs, covariances, targets, values, jnp.broadcast_to(variances, targets.shape))


@contextlib.contextmanager
def _task_plate(num_tasks: int, subsample_size, total_tasks):
    """The ``tasks`` plate, scaled to ``total_tasks`` when the inputs are a pre-drawn minibatch."""
    if total_tasks is not None and subsample_size is not None:
        raise ValueError("pass either subsample_size (the plate draws minibatches) or total_tasks, not both")
    with contextlib.ExitStack() as stack:
        if total_tasks is not None:
            stack.enter_context(numpyro.handlers.scale(scale=total_tasks / num_tasks))
        yield stack.enter_context(numpyro.plate("tasks", num_tasks, subsample_size=subsample_size))


class Activa:
    """The ACTIVA β-CVAE: holds the configuration and exposes ``model`` and ``guide``.

    Both callables take the same arguments:

    Args:
        observational: ``(T, N_obs, d)`` observational dataset of each task.
        targets: ``(T, d)`` 0/1 intervention target mask of each task.
        intervention_index: ``(T,)`` integer index i of the intervention value.
        interventional: ``(T, N_int, d)`` interventional samples to reconstruct, or ``None`` in
            the model to sample them (the guide requires them).
        subsample_size: tasks per minibatch drawn by the plate (``None``: all tasks).
        num_samples: interventional draws per task when ``interventional`` is ``None``.
        total_tasks: set when the arrays passed are already a minibatch of a training set of
            this many tasks: log densities are scaled by ``total_tasks / T``, as a subsampled
            plate would scale them. :func:`activa_ppl.train` uses this so that the
            ``num_particles`` latent draws of a step share one minibatch (with
            ``subsample_size`` each particle draws its own).
        h_obs: optional ``(T, d, e)`` observational embedding of every task passed, as
            :meth:`observational_embedding` computes it from the current parameters: then
            neither callable runs the observational encoder (nor registers its ``param``
            site), and the plate indexes ``h_obs`` like the other arrays.
            :class:`SharedEmbeddingELBO` passes it, so that a step computes the embedding,
            which the prior and the posterior share, once instead of twice.
        predictive: with ``config.predictive_weight > 0`` or ``config.energy_weight > 0``,
            whether the model adds the prior-predictive factors (the hybrid term, the energy
            term; default True). :class:`SharedEmbeddingELBO` passes False when
            ``config.predictive_estimate == "per_step"`` and adds the terms itself, once per
            step. The guide ignores it.

    The objective of Eq. 5 is :meth:`elbo` (``Trace_ELBO`` over the :class:`beta_kl`-scaled pair).
    """

    def __init__(self, config: ActivaConfig | None = None):
        self.config = config if config is not None else ActivaConfig()
        cfg = self.config
        self.modules = {
            "obs_embedding": DatasetEmbedding(cfg),
            "prior": PriorHead(cfg),
            "decoder": Decoder(cfg),
            "int_embedding": DatasetEmbedding(cfg),
            "posterior": PosteriorHead(cfg),
        }

    def __repr__(self):
        return f"Activa({self.config!r})"

    # Equal configurations give equal models, so compiled functions are shared between instances.
    def __eq__(self, other):
        return isinstance(other, Activa) and self.config == other.config

    def __hash__(self):
        return hash(self.config)

    # -- the generative model p(V, z | D_obs, do) = p_γ(V | z) p_η(z | D_obs, do) ----------------
    def model(self, observational, targets, intervention_index, interventional=None, *,
              subsample_size=None, num_samples=1, total_tasks=None, h_obs=None, predictive=True):
        """p(V, z | D_obs, do) = p_γ(V | z) p_η(z | D_obs, do) for every task (Eq. 4).

        Sample sites: ``z`` (batch: tasks, event ``(d,)``) and ``interventional`` (batch: tasks,
        event ``(N_int, d)``; observed when ``interventional`` is given). With
        ``config.predictive_weight = w > 0`` and ``interventional`` given, also the factor
        ``predictive`` (batch: tasks): ``w · Σ_n log p̂(v_n | D_obs, do)``, the hybrid
        objective's prior-predictive term (:func:`~activa_ppl.distributions.stratified_predictive`; an observed site,
        so :class:`~activa_ppl.handlers.beta_kl` leaves it alone), unless ``predictive`` is
        False. With ``config.energy_weight = λ > 0`` and ``interventional`` given, also the
        factor ``energy`` (batch: tasks): ``−λ · N · ES(p̂, D_int)``, the energy score of the
        same stratified mixture (:func:`~activa_ppl.distributions.predictive_energy_score`;
        with ``config.marginal_energy_weight = μ``, ``−N · (λ ES + μ ES₁)``),
        unless ``predictive`` is False.
        Arguments: see :class:`Activa`.
        """
        cfg = self.config
        observational, targets, intervention_index, interventional = _as_device(
            observational, targets, intervention_index, interventional)
        num_tasks, num_obs, _ = observational.shape
        log_sd = (numpyro.param(TARGET_LOG_SD, jnp.zeros(cfg.num_interventions, jnp.float32))
                  if cfg.exact_targets else None)
        with _task_plate(num_tasks, subsample_size, total_tasks) as idx:
            obs, tgt, index = observational[idx], targets[idx], intervention_index[idx]  # (B, N_obs, d)
            stats, channel = _standardization(cfg, obs, tgt, index)
            if h_obs is None:
                rep = _representation(cfg, tgt, index, num_obs, channel)  # (B, N_obs, d, |I|[+1])
                x = _z_scored(obs, stats)
                h_obs = flax_module("obs_embedding", self.modules["obs_embedding"], x, rep)(x, rep)
            else:
                h_obs = jnp.asarray(h_obs)[idx]  # (B, d, e), precomputed
            prior_logits, prior_locs = flax_module("prior", self.modules["prior"], h_obs)(h_obs)
            z = numpyro.sample("z", prior_distribution(prior_logits, prior_locs, cfg.prior_variance))
            extra = _decoder_inputs(cfg, h_obs, obs, tgt, index)  # (h′ | None, features | None)
            decoder = flax_module("decoder", self.modules["decoder"], z, *extra)

            def decode(latents):  # (..., B, d) → data-unit components (..., B, K[, d[, d]])
                logits, locs, covariances = decoder(latents, *extra)
                return (logits, *_data_units(cfg, locs, covariances, stats, tgt, index, log_sd))

            logits, locs, covariances = decode(z)
            # The N interventional samples are i.i.d. given z: batch (B, 1) → (B, N), event (d,),
            # then the sample axis is folded into the event, so the site's batch is the task plate.
            v = None if interventional is None else interventional[idx]
            n = num_samples if v is None else v.shape[-2]
            likelihood = decoded_distribution(logits[:, None], locs[:, None], covariances[:, None])
            numpyro.sample("interventional", likelihood.expand((z.shape[0], n)).to_event(1), obs=v)
            if v is not None and cfg.predictive_weight > 0 and predictive:  # the hybrid objective's term
                log_p = log_predictive(decode, prior_logits, prior_locs, cfg.prior_variance, v,
                                       numpyro.prng_key())  # (B,)
                numpyro.factor("predictive", cfg.predictive_weight * log_p)
            if v is not None and cfg.energy_weight > 0 and predictive:  # the energy-score term
                score = predictive_energy_score(decode, prior_logits, prior_locs, cfg.prior_variance, v,
                                                numpyro.prng_key(), stats, cfg.marginal_energy_ratio,
                                                cfg.energy_scale)  # (B,)
                numpyro.factor("energy", -cfg.energy_weight * score)

    # -- the encoder q_φ(z | D_int, D_obs, do), the guide ------------------------------------------
    def guide(self, observational, targets, intervention_index, interventional=None, *,
              subsample_size=None, num_samples=1, total_tasks=None, h_obs=None, predictive=True):
        """q_φ(z | D_int, D_obs, do) = N(μ_φ, 0.1·I) for every task: the encoder, as the guide.

        Sample site ``z`` (batch: tasks, event ``(d,)``). Arguments: see :class:`Activa`;
        ``interventional`` is required.
        """
        del num_samples, predictive
        if interventional is None:
            raise ValueError("Activa.guide needs the interventional samples (the encoder's input)")
        cfg = self.config
        observational, targets, intervention_index, interventional = _as_device(
            observational, targets, intervention_index, interventional)
        num_tasks, num_obs, _ = observational.shape
        with _task_plate(num_tasks, subsample_size, total_tasks) as idx:
            obs, v, tgt, index = observational[idx], interventional[idx], targets[idx], intervention_index[idx]
            stats, channel = _standardization(cfg, obs, tgt, index)
            if h_obs is None:
                rep_obs = _representation(cfg, tgt, index, num_obs, channel)
                rep_int = _representation(cfg, tgt, index, v.shape[-2], channel)
                obs, v = _z_scored(obs, stats), _z_scored(v, stats)
                h_obs = flax_module("obs_embedding", self.modules["obs_embedding"], obs, rep_obs)(obs, rep_obs)
            else:  # precomputed (B, d, e): the observational encoder is not run here
                rep_int = _representation(cfg, tgt, index, v.shape[-2], channel)
                v, h_obs = _z_scored(v, stats), jnp.asarray(h_obs)[idx]
            h_int = flax_module("int_embedding", self.modules["int_embedding"], v, rep_int)(v, rep_int)
            mu = flax_module("posterior", self.modules["posterior"], h_obs, h_int)(h_obs, h_int)
            numpyro.sample("z", dist.Normal(mu, math.sqrt(cfg.posterior_variance)).to_event(1))

    # -- the objective ---------------------------------------------------------------------------
    def scaled(self):
        """``(model, guide)`` wrapped in :class:`~activa_ppl.handlers.beta_kl` with ``config.beta``."""
        return beta_kl(self.model, beta=self.config.beta), beta_kl(self.guide, beta=self.config.beta)

    def elbo(self, *, shared_embedding: bool = False):
        """The ELBO estimator of Eq. 5: ``Trace_ELBO(num_particles=config.num_particles)``.

        ``shared_embedding``: a :class:`SharedEmbeddingELBO` instead (the same estimate, with the
        observational embedding computed once per step for the model and the guide).
        """
        if shared_embedding:
            return SharedEmbeddingELBO(self, num_particles=self.config.num_particles)
        return numpyro.infer.Trace_ELBO(num_particles=self.config.num_particles)

    def svi(self, optimizer, *, subsample_size=None, shared_embedding: bool = False) -> numpyro.infer.SVI:
        """An :class:`numpyro.infer.SVI` for the β-ELBO of Eq. 5.

        ``svi.run(key, num_steps, observational, targets, intervention_index, interventional)``
        then trains on minibatches of ``subsample_size`` tasks. ``shared_embedding``: the loss
        is :class:`SharedEmbeddingELBO` (it shares only when the arrays passed are the
        minibatch, i.e. without ``subsample_size``; ``svi.run`` works either way).
        """
        model, guide = self.scaled()
        return numpyro.infer.SVI(model, guide, optimizer, self.elbo(shared_embedding=shared_embedding),
                                 subsample_size=subsample_size)

    def observational_embedding(self, params, observational, targets, intervention_index):
        """h′ of every task: ``(T, N_obs, d)``, ``(T, d)``, ``(T,)`` → ``(T, d, e)``.

        The observational encoder exactly as :meth:`model` and :meth:`guide` run it
        (standardization, intervention representation), with the SVI ``params``; pass the
        result to both as ``h_obs``.
        """
        cfg = self.config
        observational, targets, intervention_index, _ = _as_device(
            observational, targets, intervention_index, None)
        stats, channel = _standardization(cfg, observational, targets, intervention_index)
        rep = _representation(cfg, targets, intervention_index, observational.shape[-2], channel)
        return self.apply(params, "obs_embedding", _z_scored(observational, stats), rep)

    def _prior_predictive(self, params, observational, targets, intervention_index, h_obs=None):
        """``(stats, prior_logits (T, C), prior_locs (T, C, d), decode)`` from the SVI ``params``,
        the inputs of the prior-predictive terms; ``decode`` maps ``(C, T, d)`` latents to
        data-unit components ``(C, T, K[, d[, d]])``."""
        cfg = self.config
        if h_obs is None:
            h_obs = self.observational_embedding(params, observational, targets, intervention_index)
        stats, _ = _standardization(cfg, observational, targets, intervention_index)
        prior_logits, prior_locs = self.apply(params, "prior", h_obs)
        extra = _decoder_inputs(cfg, h_obs, observational, targets, intervention_index)

        def decode(latents):
            logits, locs, covariances = self.apply(params, "decoder", latents, *extra)
            return (logits, *_data_units(cfg, locs, covariances, stats, targets, intervention_index,
                                         params.get(TARGET_LOG_SD)))

        return stats, prior_logits, prior_locs, decode

    def log_predictive(self, params, observational, targets, intervention_index, interventional, key,
                       h_obs=None):
        """The hybrid objective's term Σ_n log p̂(v_n | D_obs, do) of every task, ``(T,)``.

        What :meth:`model` adds as the ``predictive`` factor (before the weight ``w``), from
        the SVI ``params``: ``(T, N_obs, d)``, ``(T, d)``, ``(T,)``, ``(T, N, d)`` and a PRNG key
        for the stratified draws (:func:`~activa_ppl.distributions.log_predictive`). ``h_obs``:
        the observational embedding if already computed (:meth:`observational_embedding`).
        """
        observational, targets, intervention_index, interventional = _as_device(
            observational, targets, intervention_index, interventional)
        _, prior_logits, prior_locs, decode = self._prior_predictive(
            params, observational, targets, intervention_index, h_obs)
        return log_predictive(decode, prior_logits, prior_locs, self.config.prior_variance, interventional, key)

    def energy_score(self, params, observational, targets, intervention_index, interventional, key,
                     h_obs=None):
        """The energy-score term N · ES(p̂, D_int) of every task, ``(T,)`` (``N · (ES + (μ/λ)
        ES₁)`` with ``config.marginal_energy_weight = μ``): what :meth:`model`
        adds as the ``energy`` factor (before the weight ``−λ``), from the SVI ``params``;
        arguments as for :meth:`log_predictive`
        (:func:`~activa_ppl.distributions.predictive_energy_score`)."""
        observational, targets, intervention_index, interventional = _as_device(
            observational, targets, intervention_index, interventional)
        stats, prior_logits, prior_locs, decode = self._prior_predictive(
            params, observational, targets, intervention_index, h_obs)
        return predictive_energy_score(decode, prior_logits, prior_locs, self.config.prior_variance,
                                       interventional, key, stats, self.config.marginal_energy_ratio,
                                       self.config.energy_scale)

    # -- parameters ------------------------------------------------------------------------------
    def init_params(self, key, num_vars: int = 2, num_samples: int = 4) -> dict:
        """Fresh parameters ``{"<module>$params": ...}`` (and ``target_log_sd`` with
        ``config.exact_targets``), the layout of ``svi.get_params``.

        Every module is initialised on dummy inputs of ``num_vars`` variables and ``num_samples``
        samples; the parameter shapes depend on neither (the networks take any d and N).
        Wrap in ``jax.eval_shape`` for shapes only.
        """
        cfg = self.config
        obs = jnp.zeros((1, num_samples, num_vars))
        rep = jnp.zeros((1, num_samples, num_vars, cfg.num_interventions + int(cfg.standardize)))
        h = jnp.zeros((1, num_vars, cfg.embed_dim))
        inputs = {
            "obs_embedding": (obs, rep), "int_embedding": (obs, rep), "prior": (h,),
            "decoder": (jnp.zeros((1, num_vars)), h if cfg.decoder_context else None,
                        jnp.zeros((1, num_vars, NUM_REGRESSION_FEATURES))
                        if cfg.regression_context or cfg.regression_residual else None),
            "posterior": (h, h),
        }
        keys = jax.random.split(key, len(MODULES))
        params = {f"{name}$params": self.modules[name].init(k, *inputs[name])["params"]
                  for name, k in zip(MODULES, keys)}
        if cfg.exact_targets:  # the model's initial value (exp(0) = 1 in data units)
            params[TARGET_LOG_SD] = jnp.zeros(cfg.num_interventions, jnp.float32)
        return params

    # -- prediction ------------------------------------------------------------------------------
    def apply(self, params, name: str, *args):
        """Apply Flax module ``name`` with the SVI params dict (keys ``<name>$params``)."""
        return self.modules[name].apply({"params": params[f"{name}$params"]}, *args)


def predictive_arrays(activa: Activa, params, key, observational, targets, intervention_index,
                      num_latents: int, mask=None):
    """The prior-predictive mixture p_θ(V | D_obs, do) ≈ (1/S) Σ_s p_γ(V | z_s), z_s ~ p_η.

    Pure and jittable (``activa`` and ``num_latents`` static). The embedding and the prior are
    computed once per query; only the decoder runs S times.

    Args:
        activa: the model.
        params: SVI params (``svi.get_params(state)``).
        key: PRNG key for the S latent draws.
        observational: ``(Q, N, d)``; targets ``(Q, d)``; intervention_index ``(Q,)``.
        num_latents: S.
        mask: optional ``(Q, N)`` boolean, True for the real samples of ``observational``:
            datasets padded to a common ``N`` (a shape bucket, see
            :meth:`activa_ppl.FittedActiva.predict`) then predict like the unpadded ones, to
            float tolerance (padded rows are left out of the standardization statistics, of the
            attention over samples and of the pool; they must hold finite values). ``None``:
            all samples are real (the original computation, bit for bit).

    Returns:
        ``(weights (Q, S·B), locs (Q, S·B, d), covariances (Q, S·B, d, d))``: each decoded
        mixture keeps its own weights, scaled by 1/S.
    """
    cfg = activa.config
    if mask is not None:
        mask = jnp.asarray(mask, bool)
    stats, channel = _standardization(cfg, observational, targets, intervention_index, mask)
    rep = _representation(cfg, targets, intervention_index, observational.shape[-2], channel)
    args = (_z_scored(observational, stats), rep) + (() if mask is None else (mask,))
    h_obs = activa.apply(params, "obs_embedding", *args)  # (Q, d, e)
    prior_logits, prior_locs = activa.apply(params, "prior", h_obs)  # (Q, C), (Q, C, d)
    z = prior_distribution(prior_logits, prior_locs, cfg.prior_variance).sample(key, (num_latents,))
    # h′ (Q, d, e) and the regression features (Q, d, 3) broadcast over the S draws
    extra = _decoder_inputs(cfg, h_obs, observational, targets, intervention_index, mask)
    logits, locs, covariances = activa.apply(params, "decoder", z, *extra)  # (S, Q, B, ...)
    locs, covariances = _data_units(cfg, locs, covariances, stats, targets, intervention_index,
                                    params.get(TARGET_LOG_SD))  # (Q, ...) broadcast over S
    log_weights = jax.nn.log_softmax(logits, axis=-1) - math.log(num_latents)  # (S, Q, B)
    num_q, d = z.shape[1], z.shape[2]

    def to_queries(a, tail):  # (S, Q, B, *tail) -> (Q, S·B, *tail)
        return jnp.moveaxis(a, 0, 1).reshape(num_q, num_latents * cfg.decoder_components, *tail)

    return (jnp.exp(to_queries(log_weights, ())), to_queries(locs, (d,)),
            to_queries(covariances, (d, d)))


_predictive_arrays_jit = jax.jit(predictive_arrays, static_argnums=(0, 6))


def predictive_mixture(activa: Activa, params, key, observational, targets, intervention_index,
                       num_latents: int, variable_names=None, mask=None) -> GaussianMixture:
    """:func:`predictive_arrays` (compiled) wrapped as a batched :class:`GaussianMixture`, batch ``(Q,)``.

    ``mask (Q, N)``: the real samples of padded datasets, as in :func:`predictive_arrays`.
    """
    extra = () if mask is None else (mask,)
    weights, locs, covariances = _predictive_arrays_jit(
        activa, params, key, observational, targets, intervention_index, num_latents, *extra
    )
    return GaussianMixture(weights=weights, locs=locs, covariances=covariances,
                           variable_names=variable_names)
