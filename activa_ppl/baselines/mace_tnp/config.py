"""Configurations of the MACE-TNP joint extension: the architecture and one training run."""

from __future__ import annotations

import dataclasses
from typing import Any

from activa_ppl.config import ConfigBase, check_finite_number, check_positive_ints

__all__ = ["MaceTnpConfig", "MaceTnpTrainConfig"]


@dataclasses.dataclass(frozen=True)
class MaceTnpConfig(ConfigBase):
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
        check_positive_ints(self, ("num_vars", "embed_dim", "hidden_dim", "num_heads", "num_layers",
                                   "num_components"))
        if self.embed_dim % self.num_heads:
            raise ValueError(f"MaceTnpConfig.embed_dim ({self.embed_dim}) must be divisible by "
                             f"num_heads ({self.num_heads})")
        if not check_finite_number(self, "diag_floor") > 0:
            raise ValueError(f"MaceTnpConfig.diag_floor must be positive, got {self.diag_floor!r}")

    PRESETS = {
        "paper": {},
        "small": dict(embed_dim=32, hidden_dim=64, num_heads=4, num_layers=2),
        "tiny": dict(embed_dim=16, hidden_dim=32, num_heads=2, num_layers=1, num_components=4),
    }

    @classmethod
    def preset(cls, name: str, num_vars: int, **overrides: Any) -> "MaceTnpConfig":
        """A named architecture preset for ``num_vars`` variables, fields optionally overridden.

        * ``"paper"``: the paper gives no MACE-TNP sizes; this uses the sizes of Section 6.4
          for ACTIVA (width 64, hidden 256, 4 layers, 4 heads) and K = 20 (Section 6.4).
        * ``"small"``: the CPU size of ACTIVA's ``"small"`` preset (width 32, hidden 64,
          2 layers, 4 heads), K = 20.
        * ``"tiny"``: for tests and smoke runs only (width 16, hidden 32, 1 layer, K = 4).
        """
        return cls._from_preset(name, num_vars=num_vars, **overrides)


@dataclasses.dataclass(frozen=True)
class MaceTnpTrainConfig(ConfigBase):
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
        time_budget_s: stop after the first chunk at which the training wall time reaches this
            many seconds (``None``: run all ``num_steps``); the schedule still spans ``num_steps``.
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
    time_budget_s: float | None = None

    def __post_init__(self):
        owner = "MaceTnpTrainConfig"
        check_positive_ints(self, ("num_steps", "batch_size", "eval_every", "num_validation_tasks"))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"{owner}.seed must be an integer, got {self.seed!r}")
        if not check_finite_number(self, "learning_rate") > 0:
            raise ValueError(f"{owner}.learning_rate must be positive, got {self.learning_rate!r}")
        if not check_finite_number(self, "clip_norm") > 0:
            raise ValueError(f"{owner}.clip_norm must be positive, got {self.clip_norm!r}")
        if not check_finite_number(self, "weight_decay") >= 0:
            raise ValueError(f"{owner}.weight_decay must be non-negative, got {self.weight_decay!r}")
        if not 0 <= check_finite_number(self, "warmup_fraction") < 1:
            raise ValueError(f"{owner}.warmup_fraction must lie in [0, 1), got {self.warmup_fraction!r}")
        if self.time_budget_s is not None and not check_finite_number(self, "time_budget_s") > 0:
            raise ValueError(f"{owner}.time_budget_s must be positive, got {self.time_budget_s!r}")
        if not 0 <= check_finite_number(self, "final_lr_fraction") <= 1:
            raise ValueError(f"{owner}.final_lr_fraction must lie in [0, 1], got {self.final_lr_fraction!r}")
