"""Gaussian mixture prediction type shared by every predictor in ``activa_ppl``.

Every model and baseline in the project (ACTIVA, the MACE-TNP extension, the
Gaussian Conditional and Linear Causal baselines; paper Sections 5 and 6.2)
returns its predicted post-interventional distribution as a
:class:`GaussianMixture`:

.. math::

    p(\\mathbf{v}) = \\sum_{k=1}^{K} w_k\\,
        \\mathcal{N}(\\mathbf{v} \\mid \\boldsymbol{\\mu}_k, \\boldsymbol{\\Sigma}_k).

The class is an immutable dataclass registered as a JAX pytree (``weights``,
``locs`` and ``covariances`` are leaves, ``variable_names`` is static
metadata), so it can be returned from ``jax.jit``/``jax.vmap``-ed functions.
A mixture may carry leading *batch* dimensions, e.g. one predicted mixture per
task of a test set: ``weights (*batch, K)``, ``locs (*batch, K, d)``,
``covariances (*batch, K, d, d)``.

Validation: shapes are checked whenever a mixture is constructed from arrays
(also on tracers, i.e. inside ``jit``); the value checks (weights sum to one,
all entries finite) run only on concrete arrays, never on tracers (they cost
one small compiled reduction and a host sync per construction).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from activa_ppl.mixture_views import MixtureViews
from activa_ppl.mixture_math import (_component_log_prob, _log_prob, _sample, _total_covariance, _value_stats,
                                     component_log_prob_tril, mixture_log_prob, sample_arrays)
from activa_ppl.validation import check_seed

__all__ = [
    "GaussianMixture",
    "mixture_log_prob",
    "component_log_prob_tril",
    "sample_arrays",
    "as_prng_key",
    "WEIGHT_SUM_ATOL",
]

#: Absolute tolerance on ``|sum_k w_k - 1|`` accepted by the value checks.
WEIGHT_SUM_ATOL = 1e-4


def as_prng_key(seed: Any) -> jax.Array:
    """Turn ``seed`` into a JAX PRNG key.

    Args:
      seed: a Python/NumPy integer (passed to ``jax.random.PRNGKey``), or an
        existing JAX PRNG key (raw ``uint32[2]`` key or typed ``jax.random.key``),
        which is returned unchanged.

    Returns:
      A PRNG key usable with ``jax.random`` functions; a ``ValueError`` naming ``seed`` otherwise.
    """
    seed = check_seed(seed)
    if isinstance(seed, (int, np.integer)):
        return jax.random.PRNGKey(int(seed))
    return seed


def _points(x: Any, d: int) -> jax.Array:
    """``x`` as a numeric ``(..., d)`` JAX array, else a ``ValueError`` naming ``x``."""
    if not isinstance(x, jax.Array):
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise ValueError(f"x: expected numbers, got an array of dtype {x.dtype} (shape {x.shape})")
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[-1] != d:
        raise ValueError(f"x: must have shape (..., d) with d={d}; got shape {x.shape}")
    return x


def _is_array_like(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and hasattr(x, "ndim")


def _is_concrete(x: Any) -> bool:
    if isinstance(x, np.ndarray):
        return True
    return isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, repr=False)
class GaussianMixture(MixtureViews):
    """A (batched) mixture of multivariate Gaussians over ``d`` variables.

    Attributes:
      weights: ``(*batch, K)`` mixture weights, non-negative, summing to one
        over the last axis.
      locs: ``(*batch, K, d)`` component means.
      covariances: ``(*batch, K, d, d)`` symmetric positive-definite component
        covariance matrices.
      variable_names: optional static tuple of ``d`` variable names (used by
        :meth:`marginal` to select variables by name).
      intervention: optional static description of the intervention the mixture predicts,
        e.g. ``"do(X0 = 5.0)"`` (set by ``FittedActiva.predict``; shown in the ``repr``).

    Construct with the raw constructor (shapes must match exactly), or with
    :meth:`from_logits` / :meth:`gaussian`, which broadcast their inputs.
    Raises ``ValueError`` for wrong ranks, mismatched shapes, weights not
    summing to one (``WEIGHT_SUM_ATOL``) and non-finite entries.
    """

    weights: jax.Array
    locs: jax.Array
    covariances: jax.Array
    variable_names: tuple[str, ...] | None = dataclasses.field(
        default=None, metadata={"static": True}
    )
    intervention: str | None = dataclasses.field(default=None, metadata={"static": True})

    # ------------------------------------------------------------------ checks
    def __post_init__(self) -> None:
        for name in ("weights", "locs", "covariances"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple, np.ndarray)):
                object.__setattr__(self, name, jnp.asarray(value))
        if self.variable_names is not None:
            object.__setattr__(self, "variable_names", tuple(str(n) for n in self.variable_names))
        leaves = (self.weights, self.locs, self.covariances)
        # During pytree manipulations (vmap axis specs, tree_map with sentinels)
        # the leaves may be arbitrary objects: only validate array-like leaves.
        if not all(_is_array_like(v) for v in leaves):
            return
        self._check_shapes()
        if all(_is_concrete(v) for v in leaves):
            self._check_values()

    def _check_shapes(self) -> None:
        w, m, c = self.weights, self.locs, self.covariances
        if w.ndim < 1:
            raise ValueError(f"weights must have shape (..., K); got shape {tuple(w.shape)}")
        if m.ndim < 2:
            raise ValueError(f"locs must have shape (..., K, d); got shape {tuple(m.shape)}")
        if c.ndim < 3:
            raise ValueError(
                f"covariances must have shape (..., K, d, d); got shape {tuple(c.shape)}"
            )
        if m.ndim != w.ndim + 1 or c.ndim != w.ndim + 2:
            raise ValueError(
                "rank mismatch: expected weights (..., K), locs (..., K, d), covariances "
                f"(..., K, d, d); got shapes {tuple(w.shape)}, {tuple(m.shape)}, {tuple(c.shape)}"
            )
        d = m.shape[-1]
        if c.shape[-2:] != (d, d):
            raise ValueError(
                f"covariances must have trailing shape (d, d) = ({d}, {d}) to match locs; "
                f"got shape {tuple(c.shape)}"
            )
        if not (tuple(w.shape) == tuple(m.shape[:-1]) == tuple(c.shape[:-2])):
            raise ValueError(
                "batch/component shapes do not match: weights "
                f"{tuple(w.shape)}, locs {tuple(m.shape)}, covariances {tuple(c.shape)}"
            )
        if w.shape[-1] < 1:
            raise ValueError("a mixture needs at least one component (K >= 1)")
        if d < 1:
            raise ValueError("a mixture needs at least one variable (d >= 1)")
        if self.variable_names is not None and len(self.variable_names) != d:
            raise ValueError(
                f"variable_names has {len(self.variable_names)} entries but the mixture is "
                f"over d={d} variables"
            )

    def _check_values(self) -> None:
        if self.weights.size == 0:
            return
        stats = np.asarray(_value_stats(self.weights, self.locs, self.covariances))
        for name, finite in zip(("weights", "locs", "covariances"), stats[:3]):
            if not finite:
                raise ValueError(f"{name} contains non-finite values (nan or inf)")
        if stats[3] < 0:
            raise ValueError("weights must be non-negative")
        err = float(stats[4])
        if err > WEIGHT_SUM_ATOL:
            raise ValueError(
                f"weights must sum to 1 over the last axis (max deviation {err:.3g} > "
                f"{WEIGHT_SUM_ATOL}); use GaussianMixture.from_logits for unnormalised weights"
            )

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_logits(
        cls,
        logits: Any,
        locs: Any,
        covariances: Any = None,
        scale_tril: Any = None,
        variable_names: Sequence[str] | None = None,
    ) -> GaussianMixture:
        """Build a mixture from unnormalised log-weights.

        Args:
          logits: ``(..., K)`` unnormalised log mixture weights (softmax-ed).
          locs: ``(..., K, d)`` component means.
          covariances: ``(..., K, d, d)`` covariance matrices (a single
            ``(d, d)`` matrix is shared by all components); exactly one of
            ``covariances`` and ``scale_tril`` must be given.
          scale_tril: ``(..., K, d, d)`` lower-triangular Cholesky factors
            ``L``; the covariance is ``L L^T``.
          variable_names: optional ``d`` variable names.

        The three arrays are broadcast against each other's batch dimensions.

        Returns:
          A :class:`GaussianMixture` with batch shape the broadcast batch shape.
        """
        if (covariances is None) == (scale_tril is None):
            raise ValueError("pass exactly one of `covariances` and `scale_tril`")
        logits = jnp.asarray(logits)
        locs = jnp.asarray(locs)
        if scale_tril is not None:
            tril = jnp.tril(jnp.asarray(scale_tril))
            if tril.ndim < 2:
                raise ValueError(f"scale_tril must have shape (..., K, d, d); got {tril.shape}")
            covariances = tril @ jnp.swapaxes(tril, -1, -2)
        covariances = jnp.asarray(covariances)
        if covariances.ndim == 2:  # one (d, d) matrix shared by all components
            covariances = covariances[None]
        if logits.ndim < 1 or locs.ndim < 2 or covariances.ndim < 3:
            raise ValueError(
                "expected logits (..., K), locs (..., K, d), covariances (..., K, d, d); got "
                f"shapes {logits.shape}, {locs.shape}, {covariances.shape}"
            )
        logits, locs, covariances = _broadcast_params(logits, locs, covariances)
        weights = jax.nn.softmax(logits, axis=-1)
        return cls(weights, locs, covariances, _names(variable_names))

    @classmethod
    def gaussian(
        cls, mean: Any, cov: Any, variable_names: Sequence[str] | None = None
    ) -> GaussianMixture:
        """A single Gaussian as a one-component mixture (``K = 1``).

        Args:
          mean: ``(..., d)`` mean vector(s).
          cov: ``(..., d, d)`` covariance matrix (matrices); broadcast against
            the batch dimensions of ``mean``.
          variable_names: optional ``d`` variable names.

        Returns:
          A :class:`GaussianMixture` with ``K = 1``.
        """
        mean = jnp.asarray(mean)
        cov = jnp.asarray(cov)
        if mean.ndim < 1 or cov.ndim < 2:
            raise ValueError(
                f"expected mean (..., d) and cov (..., d, d); got shapes {mean.shape}, {cov.shape}"
            )
        logits = jnp.zeros(mean.shape[:-1] + (1,), dtype=mean.dtype)
        logits, locs, covs = _broadcast_params(logits, mean[..., None, :], cov[..., None, :, :])
        weights = jnp.ones_like(logits)
        return cls(weights, locs, covs, _names(variable_names))

    # -------------------------------------------------------------- properties
    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Leading batch dimensions ``(*batch,)``."""
        return tuple(self.weights.shape[:-1])

    @property
    def num_components(self) -> int:
        """Number of mixture components ``K``."""
        return int(self.weights.shape[-1])

    @property
    def num_vars(self) -> int:
        """Number of variables ``d``."""
        return int(self.locs.shape[-1])

    @property
    def log_weights(self) -> jax.Array:
        """``(*batch, K)`` log mixture weights (``-inf`` for zero weights)."""
        return jnp.log(self.weights)

    @property
    def mean(self) -> jax.Array:
        """``(*batch, d)`` mixture mean ``sum_k w_k mu_k``."""
        return jnp.einsum("...k,...kd->...d", self.weights, self.locs)

    @property
    def covariance(self) -> jax.Array:
        """``(*batch, d, d)`` mixture covariance (law of total covariance).

        ``sum_k w_k [Sigma_k + (mu_k - mu)(mu_k - mu)^T]`` with ``mu`` the
        mixture mean.
        """
        return _total_covariance(self.weights, self.locs, self.covariances)

    @property
    def variance(self) -> jax.Array:
        """``(*batch, d)`` marginal variances (diagonal of :attr:`covariance`)."""
        return jnp.diagonal(self.covariance, axis1=-2, axis2=-1)

    # ---------------------------------------------------------------- density
    def component_log_prob(self, x: Any) -> jax.Array:
        """Per-component Gaussian log densities.

        Args:
          x: ``(..., d)`` points; the leading dimensions broadcast against
            ``batch_shape`` (extra leading dimensions are sample dimensions).

        Returns:
          ``(*broadcast(x.shape[:-1], batch_shape), K)`` values
          ``log N(x | mu_k, Sigma_k)`` (without the mixture weights).
        """
        return _component_log_prob(self.locs, self.covariances, _points(x, self.num_vars))

    def log_prob(self, x: Any) -> jax.Array:
        """Mixture log density ``log sum_k w_k N(x | mu_k, Sigma_k)``.

        Computed with a Cholesky factorisation of each component covariance
        and a ``logsumexp`` over components.

        Args:
          x: ``(..., d)`` numeric points broadcasting against ``batch_shape``; e.g.
            ``(n, *batch_shape, d)`` samples or ``(n, d)`` for an unbatched
            mixture.

        Returns:
          ``(...)`` log densities, shape ``broadcast(x.shape[:-1], batch_shape)``.
        """
        return _log_prob(self.weights, self.locs, self.covariances, _points(x, self.num_vars))

    def sample(self, n: int, seed: Any, as_frame: bool = False) -> jax.Array:
        """Draw ``n`` independent samples per batch element.

        Args:
          n: number of samples.
          seed: an integer seed or a JAX PRNG key (deterministic given seed).
          as_frame: return a ``pandas.DataFrame`` with the variable names as columns
            (:meth:`to_dataframe`) instead of an array.

        Returns:
          ``(n, *batch_shape, d)`` samples.

        Raises:
          ValueError: ``n`` is not a positive integer, or ``seed`` neither an integer nor a key.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n (the number of samples) must be a positive integer; got {n!r}")
        if as_frame:
            return self.to_dataframe(n, seed)
        return _sample(self.weights, self.locs, self.covariances, as_prng_key(seed), int(n))

    # ------------------------------------------------------------- structure
    def _resolve_indices(self, indices: Any) -> np.ndarray:
        d = self.num_vars
        if isinstance(indices, (str, int, np.integer)):
            indices = [indices]
        if isinstance(indices, (list, tuple)) and any(isinstance(i, str) for i in indices):
            if self.variable_names is None:
                raise ValueError("selecting variables by name needs `variable_names`")
            missing = [i for i in indices if i not in self.variable_names]
            if missing:
                raise ValueError(f"unknown variable names {missing}; have {self.variable_names}")
            idx = np.array([self.variable_names.index(i) for i in indices], dtype=int)
        else:
            arr = np.asarray(indices)
            if arr.dtype == bool:
                if arr.shape != (d,):
                    raise ValueError(f"boolean mask must have shape ({d},); got {arr.shape}")
                idx = np.flatnonzero(arr)
            elif arr.size == 0:
                idx = np.zeros((0,), dtype=int)
            elif np.issubdtype(arr.dtype, np.integer) and arr.ndim == 1:
                idx = arr.astype(int)
            else:
                raise ValueError(
                    "indices must be a list of ints, a list of variable names or a boolean "
                    f"mask of shape ({d},); got {indices!r}"
                )
        if idx.size == 0:
            raise ValueError("marginal over an empty set of variables is undefined")
        if np.any(idx < -d) or np.any(idx >= d):
            raise ValueError(f"variable indices {idx.tolist()} out of range for d={d}")
        return np.where(idx < 0, idx + d, idx)

    def marginal(self, indices: Any) -> GaussianMixture:
        """Exact marginal mixture over a subset of variables.

        Args:
          indices: list/array of ``m`` integer indices, list of variable names,
            or a boolean mask of shape ``(d,)``.

        Returns:
          A :class:`GaussianMixture` over the ``m`` selected variables (in the
          given order): same weights, ``locs[..., idx]`` and the sub-block
          ``covariances[..., idx, idx]``.
        """
        idx = self._resolve_indices(indices)
        names = None
        if self.variable_names is not None:
            names = tuple(self.variable_names[i] for i in idx)
        locs = self.locs[..., idx]
        covs = self.covariances[..., idx[:, None], idx[None, :]]
        return GaussianMixture(self.weights, locs, covs, names, self.intervention)

    def __getitem__(self, index: Any) -> GaussianMixture:
        """Index the batch dimensions, e.g. ``mix[3]`` or ``mix[:, 0]``.

        The component and event dimensions are never indexed.
        """
        idx = index if isinstance(index, tuple) else (index,)
        used = 0
        for i in idx:
            if i is None or i is Ellipsis:
                continue
            is_mask = isinstance(i, (np.ndarray, jax.Array)) and i.dtype == bool
            used += i.ndim if is_mask else 1
        if used > len(self.batch_shape):
            raise IndexError(
                f"too many indices for a mixture with batch_shape {self.batch_shape}"
            )
        for axis, i in enumerate(idx):
            if i is Ellipsis or i is None:
                break
            if isinstance(i, (int, np.integer)):
                size = self.batch_shape[axis]
                if not -size <= int(i) < size:
                    raise IndexError(f"index {int(i)} out of range for batch axis of size {size}")
        w = self.weights[idx + (slice(None),)]
        m = self.locs[idx + (slice(None),) * 2]
        c = self.covariances[idx + (slice(None),) * 3]
        return GaussianMixture(w, m, c, self.variable_names, self.intervention)

    def __iter__(self) -> Iterator[GaussianMixture]:
        """Iterate over the first batch dimension."""
        if not self.batch_shape:
            raise TypeError("iteration over an unbatched GaussianMixture")
        for i in range(self.batch_shape[0]):
            yield self[i]

    def replace(self, **updates: Any) -> GaussianMixture:
        """Return a copy with the given fields replaced (validated again)."""
        return dataclasses.replace(self, **updates)

    def with_names(self, variable_names: Sequence[str] | None) -> GaussianMixture:
        """Return the same mixture with new ``variable_names``."""
        return dataclasses.replace(self, variable_names=_names(variable_names))

    def to_numpyro(self):
        """Equivalent NumPyro distribution.

        Returns:
          ``MixtureSameFamily(Categorical(probs=weights),
          MultivariateNormal(locs, covariance_matrix=covariances))`` with batch
          shape ``batch_shape`` and event shape ``(d,)``.
        """
        import numpyro.distributions as dist

        return dist.MixtureSameFamily(
            dist.Categorical(probs=self.weights),
            dist.MultivariateNormal(loc=self.locs, covariance_matrix=self.covariances),
        )


def _names(variable_names: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if variable_names is None else tuple(str(n) for n in variable_names)


def _broadcast_params(logits: jax.Array, locs: jax.Array, covs: jax.Array):
    """Broadcast ``(..., K)``, ``(..., K, d)``, ``(..., K, d, d)`` to one batch shape."""
    try:
        batch = jnp.broadcast_shapes(logits.shape[:-1], locs.shape[:-2], covs.shape[:-3])
        k = jnp.broadcast_shapes(logits.shape[-1:], locs.shape[-2:-1], covs.shape[-3:-2])
    except ValueError as err:
        raise ValueError(
            "cannot broadcast mixture parameters with shapes "
            f"{logits.shape}, {locs.shape}, {covs.shape}: {err}"
        ) from None
    d = locs.shape[-1]
    if covs.shape[-2:] != (d, d):
        raise ValueError(
            f"covariances must have trailing shape ({d}, {d}) to match locs; got {covs.shape}"
        )
    return (
        jnp.broadcast_to(logits, batch + k),
        jnp.broadcast_to(locs, batch + k + (d,)),
        jnp.broadcast_to(covs, batch + k + (d, d)),
    )
