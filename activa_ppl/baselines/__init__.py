"""The baselines of paper Section 6.2: the analytic Gaussian Conditional and Linear Causal
(:mod:`activa_ppl.baselines.classical`) and the trained MACE-TNP joint extension
(:mod:`activa_ppl.baselines.mace_tnp`). Each returns the library's one prediction type, a
:class:`~activa_ppl.mixture.GaussianMixture`; their evaluation adapters live in
:mod:`activa_ppl.predictors`.
"""

from activa_ppl.baselines import mace_tnp
from activa_ppl.baselines.classical import (DEFAULT_TARGET_VARIANCE, gaussian_conditional,
                                            gaussian_conditional_batch, intervention_vector, linear_causal,
                                            linear_causal_batch)

__all__ = [
    "DEFAULT_TARGET_VARIANCE",
    "gaussian_conditional",
    "gaussian_conditional_batch",
    "intervention_vector",
    "linear_causal",
    "linear_causal_batch",
    "mace_tnp",
]
