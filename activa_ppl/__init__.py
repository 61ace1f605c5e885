"""activa_ppl: amortized estimation of post-interventional distributions (ACTIVA) on NumPyro."""
