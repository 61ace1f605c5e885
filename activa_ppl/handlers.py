"""Effect handlers for ACTIVA's objective.

:class:`beta_kl` turns NumPyro's ELBO into the β-ELBO of Eq. 5. Applied to both the model and
the guide it multiplies the ``scale`` of every *unobserved* sample site (the latent ``z``) by β.
``Trace_ELBO`` estimates the ELBO as ``E_q[log p(x|z) + log p(z) − log q(z)]``; with the latent
terms scaled this becomes ``E_q[log p(x|z)] − β · E_q[log q(z) − log p(z)]``, i.e. the
reconstruction term minus β times the Monte-Carlo KL — exactly Eq. 5. Scales compose
multiplicatively with a subsampled plate's ``T / B`` factor.

The loss that SVI reports is then the β-weighted one; use β = 1 (no handler) for a true ELBO.
"""

from __future__ import annotations

import numbers

from numpyro.primitives import Messenger

__all__ = ["beta_kl"]


class beta_kl(Messenger):
    """Scale the log densities of all latent (unobserved) sample sites by ``beta``.

    Use as a wrapper, ``beta_kl(model, beta=0.5)``, or as a context manager
    ``with beta_kl(beta=0.5): ...``. Observed sites and ``param`` sites are left alone.

    Args:
        fn: the model or guide callable.
        beta: the KL weight β > 0 of Eq. 5.
    """

    def __init__(self, fn=None, beta: float = 1.0):
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not beta > 0:
            raise ValueError(f"beta_kl: beta must be a positive number, got {beta!r}")
        self.beta = float(beta)
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            scale = msg.get("scale")
            msg["scale"] = self.beta if scale is None else self.beta * scale
