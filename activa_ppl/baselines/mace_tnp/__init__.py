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

from activa_ppl.baselines.mace_tnp.config import MaceTnpConfig, MaceTnpTrainConfig
from activa_ppl.baselines.mace_tnp.fitted import FittedMaceTnp, load_mace_tnp
from activa_ppl.baselines.mace_tnp.networks import CrossAttentionBlock, JointGmmHead, MaceTnp, MaceTnpEncoder
from activa_ppl.baselines.mace_tnp.objective import (denormalize, init_params, predict_arrays, training_loss,
                                                     validation_nll)
from activa_ppl.baselines.mace_tnp.training import MaceTnpTrainState, make_optimizer, train_mace_tnp

__all__ = [
    "MaceTnpConfig",
    "MaceTnpTrainConfig",
    "MaceTnp",
    "MaceTnpEncoder",
    "JointGmmHead",
    "CrossAttentionBlock",
    "MaceTnpTrainState",
    "FittedMaceTnp",
    "denormalize",
    "init_params",
    "predict_arrays",
    "training_loss",
    "validation_nll",
    "make_optimizer",
    "train_mace_tnp",
    "load_mace_tnp",
]
