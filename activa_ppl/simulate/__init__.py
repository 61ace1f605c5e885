"""Simulators of interventional datasets (linear additive SCMs; paper Appendix C)."""

from activa_ppl.simulate.linear import linear_dataset

__all__ = ["linear_dataset"]
