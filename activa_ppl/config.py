"""Configuration dataclasses: the architecture and objective of ACTIVA, and the training run.

Both are frozen and JSON round-trippable, so every checkpoint carries the exact configuration
that produced it (``ActivaConfig.to_dict`` / ``ActivaConfig.from_dict``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["ConfigBase", "ActivaConfig", "TrainConfig", "check_positive_ints", "check_finite_number"]


def check_positive_ints(config, names) -> None:
    """Raise ``ValueError`` unless every field in ``names`` of ``config`` is a positive int."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{type(config).__name__}.{name} must be a positive integer, got {value!r}")


def check_finite_number(config, name: str) -> float:
    """The field ``name`` of ``config`` as a float; ``ValueError`` unless a finite number."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{type(config).__name__}.{name} must be a finite number, got {value!r}")
    return float(value)


#: The values of ``TrainConfig.lr_schedule``.
LR_SCHEDULES = ("constant", "warmup_cosine")
#: The values of ``ActivaConfig.covariance_head``.
COVARIANCE_HEADS = ("lowrank", "cholesky")
PREDICTIVE_ESTIMATES = ("per_particle", "per_step")
#: The values of ``ActivaConfig.energy_scale``.
ENERGY_SCALES = ("variable", "task")
#: The values of ``ActivaConfig.matmul_dtype``.
MATMUL_DTYPES = ("float32", "bfloat16")
#: The values of ``ActivaConfig.attention``: how the attention layers of
#: :mod:`activa_ppl.networks` are computed (:func:`activa_ppl.networks.attention_layer`).
ATTENTION_IMPLS = ("deferred", "softmax")


class ConfigBase:
    """What every frozen configuration dataclass of the library shares: named presets and a
    JSON round trip (:meth:`to_dict` / :meth:`from_dict`, unknown keys refused)."""

    #: preset name -> field overrides (subclasses set it).
    PRESETS: dict[str, dict[str, Any]] = {}

    @classmethod
    def _from_preset(cls, name: str, **fields: Any):
        if name not in cls.PRESETS:
            raise ValueError(f"unknown {cls.__name__} preset {name!r}; choose one of {sorted(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[name], **fields})

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer file format)."""
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class ActivaConfig(ConfigBase):
    """Architecture and objective of the ACTIVA β-CVAE (paper Sections 3, 5 and 6.4).

    Attributes:
        embed_dim: embedding dimension ``e`` of every per-variable token.
        hidden_dim: width of the feed-forward and MLP layers.
        num_heads: attention heads in every multi-head attention.
        num_encoder_blocks: ``L``, blocks of (attention over variables, attention over samples).
        num_decoder_blocks: ``K``, transformer blocks over the ``d`` latent coordinates.
        prior_components: ``C``, components of the conditional GMM prior p(z | D_obs, do).
        decoder_components: ``B``, components of the decoded mixture p(V | z).
        covariance_rank: columns of the factor ``u`` in Σ = u uᵀ + εI (the paper uses ``e``).
        prior_variance: fixed per-coordinate variance of each prior component (paper: 0.1).
        posterior_variance: fixed per-coordinate variance of q(z | ·) (paper: 0.1).
        covariance_eps: ε added to the diagonal of each decoded covariance.
        num_interventions: ``|I|``, the number of distinct intervention values the model knows.
        beta: the KL weight β of Eq. 5 (paper: 0.5).
        num_particles: Monte-Carlo samples of q per task for the ELBO (paper: 4).
        num_predictive_latents: latent draws S used at prediction (paper: 10).
        num_validation_latents: latent draws used for the validation NLL (paper: 5).
        standardize: z-score every dataset per variable with its observational mean and std
            before the networks see it, and map the decoded mixture back to data units
            (:mod:`activa_ppl.standardize`). The model is then invariant to the units of each
            variable. Not in the paper, which feeds raw values; needed on data whose scale
            varies over orders of magnitude between SCMs (Gauss 8, Beta 8, SERGIO). Since the
            intervened value sits at a different z-score in every dataset, the intervention
            representation gains one channel: ``(v_i - mean_t) / std_t`` at the target.
        intervention_values: ``v_i`` in data units for each of the ``num_interventions``
            indices; required with ``standardize`` (e.g. ``(5.0,)`` for the paper's linear
            sets, ``(0.0,)`` for SERGIO knockouts).
        std_floor: with ``standardize``, the smallest standard deviation used (data units).
        decoder_context: condition the decoder on the observational context as well,
            p_γ(V | z, D_obs, do): a dense projection of the prior's input embedding h′ (one
            vector per variable) is added to the decoder's input tokens, so z only has to carry
            what the data leave ambiguous. Not in the paper (Eq. 4 decodes from z alone);
            ``False`` keeps Eq. 4 exactly. See the "Concepts" page for why and the measured
            effect (docs/ablations.md).
        regression_context: give the decoder's input tokens, per variable, what a linear
            regression on the observational data predicts under the query (correlation with
            the target, conditional mean and log sd given the intervened value, in the
            networks' units; :mod:`activa_ppl.regression`), p_γ(V | z, D_obs, do) through
            statistics the pooled embedding only approximates. Not in the paper; needs
            ``intervention_values``. ``False`` (default): not used.
        regression_residual: add to every decoded component's mean, per variable j, a gated
            copy of the same regression's conditional mean: ``loc_bj + g_bj · m_j``, with
            ``m_j = ρ_jt (v − μ_t)/σ_t`` in the networks' units and the gate ``g_bj`` a linear
            map of the decoder's token j (initialised to 1: a new model starts at the
            regression's means). The two answers the observational data leave open for a
            variable, the regression's (``g = 1``, a descendant of a linear SCM) and the
            unchanged marginal (``g = 0``, an ancestor), are then one coefficient apart in
            every component, however far the intervened value lies from the data. Not in the
            paper; needs ``intervention_values``. ``False`` (default): not used.
        predictive_weight: ``w ≥ 0``, the weight of a prior-predictive term added to the
            objective (a hybrid objective, as in Sohn et al. 2015, "Learning structured output
            representation using deep conditional generative models"): the model gains the
            factor ``w · Σ_n log p̂(v_n | D_obs, do)``, where p̂ is the prior-predictive mixture
            that prediction uses, estimated with one latent draw from each prior component
            (:func:`activa_ppl.distributions.stratified_predictive`). The ELBO alone trains the prior
            only through the KL to the posterior; this term scores the predictive mixture
            itself, as the validation NLL and the energy distance do. Not in the paper;
            ``0`` (default) is Eq. 5 exactly.
        predictive_estimate: with ``predictive_weight > 0`` or ``energy_weight > 0``, how
            often a step estimates those terms: ``"per_particle"`` (default; the model's
            factors, computed in each of the ``num_particles`` ELBO particles) or
            ``"per_step"`` (once per step, by
            :class:`activa_ppl.elbo.SharedEmbeddingELBO`, the training default: the same
            expectation at about a quarter of its cost with 4 particles, and more variance;
            elsewhere, e.g. with a subsampling plate, it is per particle).
        energy_weight: ``λ ≥ 0``, the weight of an energy-score term: the model gains the factor
            ``−λ · N · ES(p̂, D_int)``, where ES is the energy score of the same stratified
            prior-predictive mixture p̂ against the task's N interventional samples
            (:func:`activa_ppl.mixture_math.mixture_energy_score`, in the networks' units:
            z-scores under ``standardize``). The energy distance that Table 1 reports is a
            proper scoring rule's divergence, and the likelihood terms do not target it (the
            NLL rewards covering tails that the energy distance charges for). Estimated as
            ``predictive_estimate`` says. Not in the paper; ``0`` (default): not used.
        marginal_energy_weight: ``μ ≥ 0`` (needs ``energy_weight > 0``): the energy factor
            becomes ``−N · (λ ES + μ ES₁)``, ES₁ the energy score with the L1 norm, which is the
            sum over variables of each 1-D marginal's energy score (CRPS), estimated from the
            same draws. In d dimensions the Euclidean ES barely charges one variable's shifted
            mean; each marginal's score charges it fully. Proper (its expectation is minimised
            by the true distribution), so the optimum is unchanged; it reweights the errors a
            limited model makes. Not in the paper; ``0`` (default): not used.
        energy_scale: with ``energy_weight > 0`` and ``standardize``, the units the energy term
            measures distances in: ``"variable"`` (default; z-scores, every variable divided by
            its own observational std, so every variable weighs the same) or ``"task"`` (data
            units divided by one scale per task, the root mean square ``s = (Σ_j σ_j² / d)^½``
            of the task's observational stds: within a task the variables weigh as in data
            units, as Table 1's energy distance weighs them, while tasks of different scales
            still weigh alike). The score is proper in either, so the optimum is unchanged; the
            units decide which errors a limited model is charged most for. Needs
            ``standardize`` (without it the term is in data units already). Not in the paper.
        exact_targets: model the intervened coordinates exactly instead of through z and the
            decoder: in every decoded component the mean of each target V_t is the nominal
            value ``v_i`` of the query's intervention index and its variance ``s_i² + ε σ_t²``
            (data units; ``s_i = exp(θ_i)`` one learned parameter per index, the NumPyro
            ``param`` site ``target_log_sd``, ``σ_t`` the observational std under
            ``standardize``, else 1); the decoded covariance's row and column of V_t are
            rescaled to that variance, so its correlations with the other variables stay the
            decoder's (:func:`activa_ppl.distributions.pin_targets`). do(V_t = v_i + e) makes
            V_t independent of the data and of z; the energy-score term otherwise trades the
            target's spread for the other coordinates' fit (docs/ablations.md, round 10). Needs
            ``intervention_values``. Not in the paper; ``False`` (default): not used.
        covariance_head: ``"lowrank"`` (the paper's Σ = u uᵀ / r + εI) or ``"cholesky"``
            (Σ = L Lᵀ + εI with L lower triangular: a softplus diagonal floored at
            ``cholesky_floor`` and strictly-lower entries from pairwise products of the
            variable tokens; every component's covariance is then bounded away from singular).
        cholesky_floor: with ``covariance_head="cholesky"``, the smallest diagonal entry of L
            (the networks' units: z-scores under ``standardize``).
        matmul_dtype: operand type of the attention blocks' matmuls: ``"float32"`` (default,
            the original computation) or ``"bfloat16"`` (float32 accumulation; parameters,
            input projections, heads and normalisation float32; see
            :mod:`activa_ppl.networks`): for GPUs and
            TPUs; on CPUs without native bfloat16 matmuls it is slower. Parameters trained with
            one run with the other (same tree). Written by :meth:`to_dict` only when not
            ``"float32"``, so configuration files of float32 models are unchanged.
        attention: how every attention layer is computed, not what it computes:
            ``"deferred"`` (default; :class:`activa_ppl.networks.MultiHeadAttention`, the
            softmax normalisation applied after the value product: on CPU 1.7x faster over the
            100 samples of a Gauss 2 task, 1.0-1.1x elsewhere) or ``"softmax"`` (Flax's
            ``nn.MultiHeadDotProductAttention``, the computation before issue 17, kept so
            benchmarks can time both side by side). The
            same parameters, and the same values to float tolerance. Written by
            :meth:`to_dict` only when not ``"deferred"``: files written before the field
            existed read as the default, which computes what they were trained to compute.
    """

    embed_dim: int = 64
    hidden_dim: int = 256
    num_heads: int = 4
    num_encoder_blocks: int = 4
    num_decoder_blocks: int = 4
    prior_components: int = 20
    decoder_components: int = 2
    covariance_rank: int = 64
    prior_variance: float = 0.1
    posterior_variance: float = 0.1
    covariance_eps: float = 1e-4
    num_interventions: int = 1
    beta: float = 0.5
    num_particles: int = 4
    num_predictive_latents: int = 10
    num_validation_latents: int = 5
    standardize: bool = False
    intervention_values: tuple[float, ...] | None = None
    std_floor: float = 1e-2
    decoder_context: bool = False
    regression_context: bool = False
    regression_residual: bool = False
    predictive_weight: float = 0.0
    predictive_estimate: str = "per_particle"
    energy_weight: float = 0.0
    marginal_energy_weight: float = 0.0
    energy_scale: str = "variable"
    exact_targets: bool = False
    covariance_head: str = "lowrank"
    cholesky_floor: float = 0.05
    matmul_dtype: str = "float32"
    attention: str = "deferred"

    #: Fields added after checkpoints existed, with the value older files imply: :meth:`to_dict`
    #: leaves them out at that value, so files (and resume checks) of models that do not use
    #: them stay as before. (``attention``: older files were trained with ``"softmax"``, which
    #: computes the same function; they read as the faster default.)
    _IMPLIED = {"matmul_dtype": "float32", "attention": "deferred", "regression_context": False,
                "regression_residual": False,
                "predictive_weight": 0.0, "predictive_estimate": "per_particle",
                "energy_weight": 0.0, "marginal_energy_weight": 0.0, "energy_scale": "variable",
                "exact_targets": False}

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-serialisable dict (fields of ``_IMPLIED`` at their
        implied value left out)."""
        values = super().to_dict()
        for name, implied in self._IMPLIED.items():
            if values[name] == implied:
                del values[name]
        return values

    @property
    def marginal_energy_ratio(self) -> float:
        """``μ / λ``, the L1 score's weight inside the energy term (0 when either is 0)."""
        return self.marginal_energy_weight / self.energy_weight if self.energy_weight > 0 else 0.0

    def __post_init__(self):
        if self.intervention_values is not None:  # JSON gives a list; keep the config hashable
            values = tuple(float(v) for v in self.intervention_values)
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"ActivaConfig.intervention_values must be finite, got {values!r}")
            object.__setattr__(self, "intervention_values", values)
        for name in ("standardize", "decoder_context", "regression_context", "regression_residual",
                     "exact_targets"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"ActivaConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if self.matmul_dtype not in MATMUL_DTYPES:
            raise ValueError(f"ActivaConfig.matmul_dtype must be one of {MATMUL_DTYPES}, "
                             f"got {self.matmul_dtype!r}")
        if self.attention not in ATTENTION_IMPLS:
            raise ValueError(f"ActivaConfig.attention must be one of {ATTENTION_IMPLS}, "
                             f"got {self.attention!r}")
        if self.covariance_head not in COVARIANCE_HEADS:
            raise ValueError(f"ActivaConfig.covariance_head must be one of {COVARIANCE_HEADS}, "
                             f"got {self.covariance_head!r}")
        check_positive_ints(self, (
            "embed_dim", "hidden_dim", "num_heads", "num_encoder_blocks", "num_decoder_blocks",
            "prior_components", "decoder_components", "covariance_rank", "num_interventions",
            "num_particles", "num_predictive_latents", "num_validation_latents"))
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"ActivaConfig.embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.standardize and (self.intervention_values is None
                                 or len(self.intervention_values) != self.num_interventions):
            raise ValueError(
                "ActivaConfig(standardize=True) needs intervention_values, one value per intervention "
                f"index ({self.num_interventions}), got {self.intervention_values!r}")
        for name in ("regression_context", "regression_residual", "exact_targets"):
            if getattr(self, name) and (self.intervention_values is None
                                        or len(self.intervention_values) != self.num_interventions):
                raise ValueError(
                    f"ActivaConfig({name}=True) needs intervention_values, one value per "
                    f"intervention index ({self.num_interventions}), got {self.intervention_values!r}")
        for name in ("prior_variance", "posterior_variance", "covariance_eps", "beta", "std_floor",
                     "cholesky_floor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                raise ValueError(f"ActivaConfig.{name} must be a positive finite number, got {value!r}")
        for name in ("predictive_weight", "energy_weight", "marginal_energy_weight"):
            weight = getattr(self, name)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                    or not math.isfinite(weight) or weight < 0:
                raise ValueError(f"ActivaConfig.{name} must be a finite number ≥ 0, got {weight!r}")
        if self.marginal_energy_weight > 0 and not self.energy_weight > 0:
            raise ValueError("ActivaConfig.marginal_energy_weight > 0 needs energy_weight > 0 (it weights "
                             f"a second score inside the energy term), got energy_weight={self.energy_weight!r}")
        if self.energy_scale not in ENERGY_SCALES:
            raise ValueError(f"ActivaConfig.energy_scale must be one of {ENERGY_SCALES}, "
                             f"got {self.energy_scale!r}")
        if self.energy_scale != "variable" and not self.standardize:
            raise ValueError(f"ActivaConfig.energy_scale={self.energy_scale!r} needs standardize=True "
                             "(without it the energy term is in data units already)")
        if self.predictive_estimate not in PREDICTIVE_ESTIMATES:
            raise ValueError(f"ActivaConfig.predictive_estimate must be one of {PREDICTIVE_ESTIMATES}, "
                             f"got {self.predictive_estimate!r}")

    PRESETS = {
        "paper": {},
        "small": dict(embed_dim=32, hidden_dim=64, num_heads=4, num_encoder_blocks=2,
                      num_decoder_blocks=2, prior_components=10, covariance_rank=16),
        "tiny": dict(embed_dim=16, hidden_dim=32, num_heads=2, num_encoder_blocks=1,
                     num_decoder_blocks=1, prior_components=4, covariance_rank=8, num_particles=2),
    }

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "ActivaConfig":
        """A named architecture preset, optionally with fields overridden.

        * ``"paper"``: Section 6.4 (C=20, B=2, L=K=4, 4 heads, hidden 256, embedding 64).
        * ``"small"``: a CPU-sized model (embedding 32, hidden 64, L=K=2, C=10) that trains on
          the 2-variable sets in minutes on two cores.
        * ``"tiny"``: for tests and smoke runs only.
        """
        return cls._from_preset(name, **overrides)

    #: The model fields of the recommended recipe (docs/concepts.md, "Beyond Eq. 4"), chosen by
    #: ``benchmarks/bench_quality.py`` and ``benchmarks/bench_latents.py`` (docs/ablations.md).
    RECIPE = dict(decoder_context=True, beta=1.0, num_predictive_latents=100, num_validation_latents=20)

    @classmethod
    def recommended(cls, preset: str = "small", **overrides: Any) -> "ActivaConfig":
        """The architecture ``preset`` with the recommended recipe's model fields
        (:attr:`RECIPE`: the decoder sees the observational context, β = 1, S = 100 predictive
        and 20 validation latents), optionally overridden. Not Eq. 4: :meth:`preset` is."""
        return cls._from_preset(preset, **{**cls.RECIPE, **overrides})


@dataclasses.dataclass(frozen=True)
class TrainConfig(ConfigBase):
    """One training run: minibatch SVI with Adam, validation every ``eval_every`` steps.

    Attributes:
        num_steps: total SVI steps (one step = one minibatch of ``batch_size`` tasks).
        batch_size: tasks per step (the ``subsample_size`` of the ``tasks`` plate).
        learning_rate: Adam step size (paper: 5e-4).
        clip_norm: global gradient-norm clip (``None`` disables clipping). The SVI loss is
            scaled to the whole training set (``total_tasks``), so its gradient norm is large
            and the default clip is active on almost every step: Adam then sees
            norm-``clip_norm`` gradients. The paper states no clip for ACTIVA; on a tiny-preset
            Gauss 2 run (400 steps) clipped and unclipped training ended at similar errors.
        eval_every: steps per compiled chunk; validation NLL and a checkpoint follow each chunk.
        num_validation_tasks: validation tasks used for the NLL (a fixed, seeded subset).
        seed: the root PRNG seed of the run.
        data_parallel: shard every step's minibatch over all devices (``jax.devices()``, all
            hosts after :func:`activa_ppl.distributed.initialize`) with parameters and
            optimizer state replicated; ``batch_size`` must be divisible by the device count.
            The losses agree with single-device training to float tolerance, not bitwise
            (another reduction order). See the "Scaling" page of the documentation.
        lr_schedule: ``"constant"`` (the paper's Adam at ``learning_rate``) or
            ``"warmup_cosine"`` (linear warm-up from 0 over ``warmup_steps``, then cosine decay
            to 0 at ``decay_steps``).
        warmup_steps: with ``"warmup_cosine"``, the warm-up length.
        decay_steps: with ``"warmup_cosine"``, where the cosine reaches 0 (``None``:
            ``num_steps``; a resumed run may then not change ``num_steps``).
        samples_per_task: train each step on a random subset of this many observational and
            this many interventional samples of every task (``None``: all of them). Cheaper
            steps and an augmentation; the networks take any number of samples. Validation
            and prediction always use all samples.
        time_budget_s: stop after the first chunk at which the run's training wall time
            (summed over resumes) reaches this many seconds, even before ``num_steps``
            (``None``: no budget). Runs with a budget are not reproducible step for step.
    """

    num_steps: int = 2000
    batch_size: int = 32
    learning_rate: float = 5e-4
    clip_norm: float | None = 10.0
    eval_every: int = 100
    num_validation_tasks: int = 256
    seed: int = 0
    data_parallel: bool = False
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    decay_steps: int | None = None
    samples_per_task: int | None = None
    time_budget_s: float | None = None

    @classmethod
    def recommended(cls, num_steps: int, **overrides: Any) -> "TrainConfig":
        """The recommended recipe's optimisation (docs/concepts.md, "Beyond Eq. 4"): 32-sample
        subsets per task, learning rate 1e-3 with a linear warm-up over ``min(500, num_steps
        // 10)`` steps and cosine decay to 0 at ``num_steps``; other fields as given."""
        recipe = dict(samples_per_task=32, learning_rate=1e-3, lr_schedule="warmup_cosine",
                      warmup_steps=min(500, num_steps // 10))
        return cls(num_steps=num_steps, **{**recipe, **overrides})

    def __post_init__(self):
        if not isinstance(self.data_parallel, bool):
            raise ValueError(f"TrainConfig.data_parallel must be a bool, got {self.data_parallel!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        optional = [n for n in ("decay_steps", "samples_per_task") if getattr(self, n) is not None]
        check_positive_ints(self, optional)
        if self.samples_per_task is not None and self.samples_per_task < 2:
            raise ValueError(f"TrainConfig.samples_per_task must be at least 2, got {self.samples_per_task!r}")
        if self.time_budget_s is not None and not check_finite_number(self, "time_budget_s") > 0:
            raise ValueError(f"TrainConfig.time_budget_s must be positive, got {self.time_budget_s!r}")
        check_positive_ints(self, ("num_steps", "batch_size", "eval_every", "num_validation_tasks"))
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate must be positive, got {self.learning_rate!r}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"TrainConfig.clip_norm must be positive or None, got {self.clip_norm!r}")
