"""The training estimator of ACTIVA's objective: ``Trace_ELBO`` with the observational
embedding shared by the model and the guide (and, optionally, the prior-predictive terms
estimated once per step). :meth:`activa_ppl.model.Activa.elbo` builds it; :func:`activa_ppl.train`
uses it by default."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro

__all__ = ["SharedEmbeddingELBO"]


class SharedEmbeddingELBO(numpyro.infer.Trace_ELBO):
    """``Trace_ELBO`` for :class:`~activa_ppl.model.Activa` that computes the observational embedding once.

    The prior (in the model) and the posterior (in the guide) both condition on h′ =
    ``obs_embedding(D_obs, do)``, the same network on the same inputs. This estimator computes
    it once from the parameter map being differentiated (:meth:`~activa_ppl.model.Activa.observational_embedding`)
    and passes it to both as ``h_obs``; the loss and its gradients are those of ``Trace_ELBO``
    (to float tolerance: the encoder's two cotangents are summed before its backward pass
    instead of after), at about one encoder pass fewer per step. The model and guide stay a
    plain NumPyro pair: ``svi.init`` runs them without ``h_obs`` and so registers every
    ``param`` site, and the parameter tree is unchanged.

    With ``config.predictive_estimate == "per_step"`` it also computes the prior-predictive
    terms once per step, from the same h′: with ``config.predictive_weight > 0`` it subtracts
    ``w · Σ_tasks`` of the hybrid term (:meth:`~activa_ppl.model.Activa.log_predictive`), with
    ``config.energy_weight > 0`` it adds ``λ · Σ_tasks`` of the energy term
    (:meth:`~activa_ppl.model.Activa.energy_score`, drawn with ``fold_in(key, 1)``), each
    scaled by ``total_tasks / T`` like the model's plate, while the model, called with
    ``predictive=False``, leaves its factors out: an estimate of the same objective as the
    model's per-particle factors, with one stratified draw per step instead of one per ELBO
    particle.

    It shares only when the positional arguments are the tasks of the step, i.e. without a
    ``subsample_size`` (the plate would otherwise pick a minibatch after the embedding of all
    tasks); otherwise, or when ``h_obs`` is passed already, it is ``Trace_ELBO`` unchanged.

    Args:
        activa: the :class:`~activa_ppl.model.Activa` whose ``obs_embedding`` is shared.
        num_particles: as for ``Trace_ELBO``.
    """

    def __init__(self, activa, num_particles: int = 1, **kwargs):
        super().__init__(num_particles=num_particles, **kwargs)
        self.activa = activa

    def loss_with_mutable_state(self, rng_key, param_map, model, guide, *args, **kwargs):
        """``Trace_ELBO``'s, with ``h_obs`` computed from ``param_map`` once and passed to both
        (and, with ``predictive_estimate="per_step"``, the hybrid term added once)."""
        if not (len(args) >= 3 and kwargs.get("subsample_size") is None and kwargs.get("h_obs") is None
                and "obs_embedding$params" in param_map):
            return super().loss_with_mutable_state(rng_key, param_map, model, guide, *args, **kwargs)
        h_obs = self.activa.observational_embedding(param_map, *args[:3])
        kwargs = {**kwargs, "h_obs": h_obs}
        cfg = self.activa.config
        interventional = args[3] if len(args) >= 4 else kwargs.get("interventional")
        if not ((cfg.predictive_weight > 0 or cfg.energy_weight > 0) and cfg.predictive_estimate == "per_step"
                and interventional is not None and kwargs.get("predictive", True)):
            return super().loss_with_mutable_state(rng_key, param_map, model, guide, *args, **kwargs)
        # The terms do not depend on the particle's latent: one stratified estimate per step
        # (the same expectation as one per particle, at 1/num_particles of its decoder passes).
        rng_key, key = jax.random.split(rng_key)
        term = 0.0  # what the model's factors would add: w · Σ log p̂ − λ · Σ N · ES
        if cfg.predictive_weight > 0:
            log_p = self.activa.log_predictive(param_map, *args[:3], interventional, key, h_obs=h_obs)  # (T,)
            term = term + cfg.predictive_weight * jnp.sum(log_p)
        if cfg.energy_weight > 0:
            score = self.activa.energy_score(param_map, *args[:3], interventional, jax.random.fold_in(key, 1),
                                             h_obs=h_obs)  # (T,)
            term = term - cfg.energy_weight * jnp.sum(score)
        total = kwargs.get("total_tasks")
        scale = 1.0 if total is None else total / interventional.shape[0]  # as the model's plate scales it
        out = super().loss_with_mutable_state(rng_key, param_map, model, guide, *args,
                                              **{**kwargs, "predictive": False})
        return {**out, "loss": out["loss"] - scale * term}
