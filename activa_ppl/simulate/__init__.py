"""Simulators of interventional datasets (linear additive SCMs; paper Appendix C)."""

from activa_ppl.simulate.ambiguous import ambiguous_dataset
from activa_ppl.simulate.linear import linear_dataset
from activa_ppl.simulate.sergio import PRESETS as SERGIO_PRESETS
from activa_ppl.simulate.sergio import SergioConfig, sergio_dataset

__all__ = ["SERGIO_PRESETS", "ambiguous_dataset", "SergioConfig", "linear_dataset", "sergio_dataset"]
