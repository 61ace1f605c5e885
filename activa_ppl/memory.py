"""Memory estimates and the limit they are checked against, before anything large is allocated.

A small input can ask for a huge computation: a 140 KB CSV of 10,000 rows makes the attention
over samples ``N²`` per variable; ``num_latents=10**7`` decodes ten million mixtures. Entry points
estimate the memory a call needs from its shapes (:func:`predict_bytes`, :func:`simulate_bytes`)
and refuse it with :func:`check_memory` when the estimate exceeds :func:`memory_limit`: the message
gives the estimate, the limit and how to change it.

The limit is ``$ACTIVA_MEMORY_LIMIT`` (bytes, or with a suffix ``K``, ``M``, ``G``, ``T``, powers
of 1024, e.g. ``16G``) or, unset, :data:`DEFAULT_FRACTION` of the machine's physical memory. The
estimates are upper bounds of the arrays XLA keeps alive at once (within a factor of about two,
float32), not measurements.
"""

from __future__ import annotations

import os

__all__ = ["DEFAULT_FRACTION", "check_memory", "memory_limit", "predict_bytes", "simulate_bytes"]

#: The share of physical memory a single call may plan to use when ``$ACTIVA_MEMORY_LIMIT`` is unset.
DEFAULT_FRACTION = 0.5
_SUFFIXES = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def memory_limit() -> int:
    """The limit in bytes: ``$ACTIVA_MEMORY_LIMIT`` or :data:`DEFAULT_FRACTION` of physical memory.

    Raises:
        ValueError: ``$ACTIVA_MEMORY_LIMIT`` is not a positive size such as ``16G``.
    """
    text = os.environ.get("ACTIVA_MEMORY_LIMIT", "").strip().upper().removesuffix("B").removesuffix("I")
    if text:
        suffix = text[-1] if text[-1] in _SUFFIXES else ""
        try:
            value = float(text[: len(text) - len(suffix)]) * _SUFFIXES[suffix]
        except ValueError:
            value = -1.0
        if not 0 < value < 2**63:
            raise ValueError(f"ACTIVA_MEMORY_LIMIT: expected a size such as 8G or 500M, "
                             f"got {os.environ['ACTIVA_MEMORY_LIMIT']!r:.40}")
        return int(value)
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX
        physical = 16 * 2**30
    return int(physical * DEFAULT_FRACTION)


def predict_bytes(config: dict, num_queries: int, num_samples: int, num_vars: int, num_latents: int) -> int:
    """Estimated peak bytes of one ACTIVA prediction call.

    Args:
        config: the model's configuration (``ActivaConfig.to_dict()``).
        num_queries, num_samples, num_vars: Q, N (after padding to a bucket) and d.
        num_latents: S.

    The terms: activations ``Q·N·d·width``, attention over samples ``Q·heads·d·N²`` and over
    variables ``Q·heads·N·d²`` (encoder); decoder activations ``S·Q·d·width`` and the decoded
    mixtures ``S·Q·B·d·(d + rank + 2)`` (decoder); each float32, times 2 for the buffers alive at
    once.
    """
    q, n, d, s = (int(x) for x in (num_queries, num_samples, num_vars, num_latents))
    width = max(int(config.get("embed_dim", 256)), int(config.get("hidden_dim", 512)))
    heads = int(config.get("num_heads", 8))
    components = int(config.get("decoder_components", 10))
    rank = int(config.get("covariance_rank", d))
    encoder = q * n * d * width + q * heads * d * n * n + q * heads * n * d * d
    decoder = s * q * d * width + s * q * components * d * (d + rank + 2)
    return 2 * 4 * (encoder + decoder)


def simulate_bytes(num_scms: int, num_samples: int, num_vars: int) -> int:
    """Estimated bytes of a simulated dataset: S SCMs, ``N`` observational samples and one
    interventional dataset of ``N`` samples per variable, float32, times 2 for the work arrays."""
    s, n, d = int(num_scms), int(num_samples), int(num_vars)
    return 2 * 4 * s * n * d * (1 + d)


def check_memory(estimate: int, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` when ``estimate`` bytes exceed :func:`memory_limit`."""
    limit = memory_limit()
    if estimate > limit:
        raise ValueError(f"{what} would need about {_size(estimate)}, more than the limit of {_size(limit)}; "
                         "reduce it, or raise the limit with ACTIVA_MEMORY_LIMIT (e.g. 64G)")


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1024
    return f"{nbytes:.3g} PiB"  # pragma: no cover
