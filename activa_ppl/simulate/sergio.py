"""SERGIO single-cell gene-expression simulator with gene knockouts, in JAX (paper Appendix C.2).

This is the SERGIO model of Dibaeinia & Sinha (Cell Systems 2020) in the version shipped with
avici (Lorch et al. 2022, ``avici/synthetic/sergio/sim.py`` and ``avici/synthetic/gene.py``),
which the paper uses; it follows that code step by step, vectorised with ``vmap`` over
networks and experimental conditions and compiled with ``jit``. For one network on ``d`` genes
with ``C`` cell types, gene ``v`` in cell type ``c`` has concentration ``x_v`` with

* production ``P_v = b_{v,c}`` (master regulators, i.e. genes without regulators) or
  ``P_v = sum_{u -> v} |K_uv| H_uv(x_u)`` with the Hill function
  ``H(x) = x^n / (h_u^n + x^n)`` for ``K_uv > 0`` (activation) and ``1 - x^n / (h_u^n + x^n)``
  for ``K_uv < 0`` (repression), where the half-response ``h_u`` is the mean simulated
  expression of regulator ``u`` over its sampled cells and all cell types;
* the chemical Langevin equation, Euler--Maruyama with step ``dt`` and "dpd" noise:
  ``x <- max(0, x + dt (P - lam x) + sqrt(dt) q (sqrt(P) xi_1 + sqrt(lam x) xi_2))``,
  ``xi ~ N(0, 1)``, started at ``x_0 = P(xbar) / lam`` (the regulators at their mean
  expression ``xbar``);
* genes simulated for ``sampling_state * n_sc + safety_steps * level(v)`` steps, where
  ``level(v)`` is the longest path from ``v`` to a gene without targets, and ``n_sc =
  ceil(N / C)`` "cells" per cell type read off the trajectory at ``n_sc`` random steps among the
  last ``sampling_state * n_sc`` (the same step offsets for all genes of one simulation);
* a knockout of gene ``i`` sets ``P_i = 0`` and ``x_i(0) = 0``, so ``x_i = 0`` throughout
  (``do(V_i = 0)``).

Because the half-responses of a gene's regulators depend on the regulators' simulated means,
SERGIO simulates the graph layer by layer. Here each "pass" simulates all genes at once from
the same noise; after pass ``p`` the genes whose longest regulator chain has length ``<= p``
are exact, so ``longest path + 1`` passes reproduce the layer-by-layer result (checked to
1e-15 against avici's code with replayed random numbers, ``docs/scripts/sergio_crosscheck.py``).
The dataset path draws one normal per gene, cell type and step for the "dpd" noise, since
``sqrt(P) xi_1 + sqrt(lam x) xi_2`` has the law of ``sqrt(P + lam x) xi``.

Per network: one observational condition and ``d`` single-gene knockouts (one per gene),
``N`` cells each, with parameters drawn as in avici's ``GRNSergio`` from the ranges of the
paper's Table 2 (:data:`PRESETS`). Technical noise (outlier genes, library size, dropout) and
UMI counts are available but off by default, as in ``GRNSergio``'s defaults.

Shapes: ``S`` networks, ``d`` genes, ``C`` cell types, ``n_sc`` cells per cell type, ``N`` cells
per condition, ``T`` simulated time steps.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry_2x32

from activa_ppl.data import InterventionalDataset, library_version
from activa_ppl.simulate.splits import split_codes
from activa_ppl.simulate.graphs import (
    SHIPPED_NETWORKS,
    RegulatoryNetwork,
    erdos_renyi_dag,
    extract_module,
    load_network,
    longest_path_lengths,
    portable_network_path,
    scale_free_dag,
    shipped_network_path,
)

__all__ = [
    "NOISE_TYPES",
    "PRESETS",
    "TECHNICAL_NOISE",
    "SergioConfig",
    "SergioParams",
    "TechnicalNoiseParams",
    "apply_technical_noise",
    "hill_function",
    "production_rates",
    "sample_graphs",
    "sample_params",
    "sergio_dataset",
    "simulate_condition",
    "simulate_condition_from_noise",
    "simulate_networks",
    "simulate_trajectory",
    "simulation_steps",
]

#: Intrinsic-noise models of SERGIO's CLE: one noise term on production ("sp"), one on
#: production and decay together ("spd"), or independent ones on each ("dpd", the default).
NOISE_TYPES = ("sp", "spd", "dpd")

#: Technical-noise levels estimated by the SERGIO paper from real data (avici's
#: ``synthetic/sergio/noise_config.yaml``); one value of each list is drawn per network.
TECHNICAL_NOISE: dict[str, dict[str, tuple[float, ...]]] = {
    "10x-chromium": {
        "outlier_prob": (0.01, 0.01, 0.01), "outlier_mean": (3.0, 3.0, 5.0),
        "outlier_scale": (1.0, 1.0, 1.0), "lib_size_mean": (6.0, 6.0, 4.5),
        "lib_size_scale": (0.3, 0.4, 0.7), "dropout_shape": (8.0, 8.0, 8.0),
        "dropout_percentile": (74.0, 82.0, 45.0)},
    "illumina": {
        "outlier_prob": (0.01,), "outlier_mean": (0.8,), "outlier_scale": (1.0,),
        "lib_size_mean": (7.0,), "lib_size_scale": (0.4,), "dropout_shape": (8.0,),
        "dropout_percentile": (80.0,)},
    "drop-seq": {
        "outlier_prob": (0.01,), "outlier_mean": (3.0,), "outlier_scale": (1.0,),
        "lib_size_mean": (4.4,), "lib_size_scale": (0.8,), "dropout_shape": (8.0,),
        "dropout_percentile": (85.0,)},
    "smart-seq": {
        "outlier_prob": (0.01,), "outlier_mean": (4.5,), "outlier_scale": (1.0,),
        "lib_size_mean": (10.8,), "lib_size_scale": (0.55,), "dropout_shape": (2.0,),
        "dropout_percentile": (92.0,)},
}

# Networks per compiled call of the simulator; fixed so that peak memory does not grow with S.
_DEFAULT_BLOCK = 256


def _check_range(name: str, value) -> tuple[float, float]:
    """(low, high) with 0 <= low <= high, as floats; ValueError naming ``name`` otherwise."""
    pair = tuple(float(x) for x in value)
    if len(pair) != 2 or not all(math.isfinite(x) for x in pair) or not 0.0 <= pair[0] <= pair[1]:
        raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {value!r}")
    return pair


def _check_values(name: str, value, *, allow_zero: bool = False) -> tuple[float, ...]:
    """Non-empty tuple of positive (or non-negative) finite floats; ValueError otherwise."""
    values = tuple(float(x) for x in value)
    if not values or not all(math.isfinite(x) and (x >= 0 if allow_zero else x > 0) for x in values):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a non-empty tuple of {kind} numbers, got {value!r}")
    return values


@dataclasses.dataclass(frozen=True)
class SergioConfig:
    """SERGIO simulation settings and parameter priors (hashable: a static ``jit`` argument).

    Per network, as in avici's ``GRNSergio``: interaction strengths ``|K_uv| ~ U(k_range)``;
    for every regulator ``u`` a probability ``p_u ~ Beta(*k_sign_beta)`` of positive signs and
    ``sign(K_uv) ~ 2 Bernoulli(p_u) - 1``; basal production rates ``b_{v,c} ~ U(basal_range)``
    for every gene and cell type (used by master regulators); and one Hill coefficient, decay
    rate and noise scale per network, each uniform on its tuple of values.

    Attributes:
        num_genes: d.
        basal_range: (low, high) of the basal production rate b (Table 2 "b").
        k_range: (low, high) of the interaction strength |K| (Table 2 "k_param").
        k_sign_beta: (a, b) of the Beta prior of the positive-sign probability ("k_sign").
        hill_values: Hill coefficients n to choose from ("hill").
        decay_values: decay rates lam to choose from ("decays").
        noise_values: CLE noise scales q to choose from ("noise_params").
        num_cell_types: C, cell types per simulation (master-regulator basal rates differ by
            type). Not in Table 2; 5 as in avici's ``neurips-grn`` config.
        noise_type: "dpd" (SERGIO default), "spd" or "sp"; see :data:`NOISE_TYPES`.
        sampling_state: cells are read from the last ``sampling_state * n_sc`` steps.
        safety_steps: extra steps per graph level.
        dt: Euler--Maruyama step.
        technical_noise: None (default) or a key of :data:`TECHNICAL_NOISE`: apply outlier
            genes, library-size and dropout effects with that platform's levels.
        count_data: if True, return Poisson UMI counts of the expression.
    """

    num_genes: int = 8
    basal_range: tuple[float, float] = (0.0, 1.0)
    k_range: tuple[float, float] = (1.0, 5.0)
    k_sign_beta: tuple[float, float] = (1.0, 1.0)
    hill_values: tuple[float, ...] = (1.9, 2.0, 2.1)
    decay_values: tuple[float, ...] = (0.7, 0.8, 0.9)
    noise_values: tuple[float, ...] = (0.9, 1.0, 1.1)
    num_cell_types: int = 5
    noise_type: str = "dpd"
    sampling_state: int = 15
    safety_steps: int = 10
    dt: float = 0.01
    technical_noise: str | None = None
    count_data: bool = False

    def __post_init__(self) -> None:
        """Validate every field and normalise sequences to tuples of floats."""
        setf = object.__setattr__
        for name in ("num_genes", "num_cell_types", "sampling_state"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
            setf(self, name, int(value))
        if isinstance(self.safety_steps, bool) or not isinstance(self.safety_steps, (int, np.integer)) \
                or self.safety_steps < 0:
            raise ValueError(f"safety_steps must be a non-negative int, got {self.safety_steps!r}")
        setf(self, "safety_steps", int(self.safety_steps))
        setf(self, "basal_range", _check_range("basal_range", self.basal_range))
        setf(self, "k_range", _check_range("k_range", self.k_range))
        beta = tuple(float(x) for x in self.k_sign_beta)
        if len(beta) != 2 or not all(math.isfinite(x) and x > 0 for x in beta):
            raise ValueError(f"k_sign_beta must be two positive numbers (a, b), got {self.k_sign_beta!r}")
        setf(self, "k_sign_beta", beta)
        setf(self, "hill_values", _check_values("hill_values", self.hill_values))
        setf(self, "decay_values", _check_values("decay_values", self.decay_values))
        setf(self, "noise_values", _check_values("noise_values", self.noise_values, allow_zero=True))
        if self.noise_type not in NOISE_TYPES:
            raise ValueError(f"noise_type must be one of {NOISE_TYPES}, got {self.noise_type!r}")
        if not (isinstance(self.dt, (int, float)) and 0 < self.dt <= 1):
            raise ValueError(f"dt must lie in (0, 1], got {self.dt!r}")
        setf(self, "dt", float(self.dt))
        if self.technical_noise is not None and self.technical_noise not in TECHNICAL_NOISE:
            raise ValueError(f"technical_noise must be None or one of {sorted(TECHNICAL_NOISE)}, "
                             f"got {self.technical_noise!r}")
        setf(self, "count_data", bool(self.count_data))

    @classmethod
    def preset(cls, name: str, **overrides) -> SergioConfig:
        """A named preset of :data:`PRESETS` ("in_distribution" or "ood"), with field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown SERGIO preset {name!r}; choose from {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def cells_per_type(self, num_cells: int) -> int:
        """n_sc = ceil(N / C), cells simulated per cell type for N cells per condition."""
        return -(-int(num_cells) // self.num_cell_types)


#: Table 2 of the paper. "in_distribution": 8 genes, b ~ U(0, 1), |K| ~ U(1, 5),
#: k_sign ~ Beta(1, 1), hill in {1.9, 2.0, 2.1}, decay in {0.7, 0.8, 0.9},
#: noise in {0.9, 1.0, 1.1}. "ood": 11 genes, b ~ U(0.5, 2.0), |K| ~ U(3, 7),
#: k_sign ~ Beta(0.5, 0.5), hill in {1.5, 2.5}, decay in {0.5, 1.5}, noise in {0.5, 1.5}.
PRESETS: dict[str, SergioConfig] = {
    "in_distribution": SergioConfig(
        num_genes=8, basal_range=(0.0, 1.0), k_range=(1.0, 5.0), k_sign_beta=(1.0, 1.0),
        hill_values=(1.9, 2.0, 2.1), decay_values=(0.7, 0.8, 0.9), noise_values=(0.9, 1.0, 1.1)),
    "ood": SergioConfig(
        num_genes=11, basal_range=(0.5, 2.0), k_range=(3.0, 7.0), k_sign_beta=(0.5, 0.5),
        hill_values=(1.5, 2.5), decay_values=(0.5, 1.5), noise_values=(0.5, 1.5)),
}


class TechnicalNoiseParams(NamedTuple):
    """Technical-noise levels of one network (each field shape ``(...)``, leading batch axes allowed).

    Fields follow SERGIO: outlier genes (probability, log-normal mean and scale of the factor),
    library size (log-normal mean and scale), dropout (logistic shape and midpoint percentile).
    """

    outlier_prob: jax.Array
    outlier_mean: jax.Array
    outlier_scale: jax.Array
    lib_size_mean: jax.Array
    lib_size_scale: jax.Array
    dropout_shape: jax.Array
    dropout_percentile: jax.Array


class SergioParams(NamedTuple):
    """Parameters of one SERGIO network (leading batch axes ``(S, ...)`` allowed on every field).

    Fields:
        adjacency: (d, d) float32 0/1, ``adjacency[u, v] = 1`` iff gene u regulates gene v.
        k: (d, d) float32 signed interaction strengths ``K[u, v]`` (0 off the graph).
        basal: (d, C) float32 basal production rate of each gene in each cell type (used for
            master regulators, i.e. genes without regulators).
        hill: () float32 Hill coefficient n.
        decay: () float32 decay rate lam.
        noise: () float32 CLE noise scale q.
        technical: :class:`TechnicalNoiseParams` (ignored unless the config enables it).
    """

    adjacency: jax.Array
    k: jax.Array
    basal: jax.Array
    hill: jax.Array
    decay: jax.Array
    noise: jax.Array
    technical: TechnicalNoiseParams


def simulation_steps(config: SergioConfig, num_cells: int) -> int:
    """T = sampling_state * n_sc + safety_steps * (d - 1): trajectory length covering every level."""
    return config.sampling_state * config.cells_per_type(num_cells) + config.safety_steps * (config.num_genes - 1)


# ----------------------------------------------------------------------------- parameters
def sample_params(rng: np.random.Generator, adjacency: np.ndarray, config: SergioConfig) -> SergioParams:
    """Draw the parameters of S networks as avici's ``GRNSergio`` does (numpy, like avici).

    Per network: ``|K_uv| ~ U(k_range)``; ``p_u ~ Beta(k_sign_beta)`` per regulator u and
    ``sign(K_uv) = 2 Bernoulli(p_u) - 1``; ``b_{v,c} ~ U(basal_range)``, shape (d, C); n, lam, q
    each uniform on its value tuple; technical-noise levels uniform on the lists of
    ``config.technical_noise`` (zeros when it is None). ``K`` is zeroed off the graph.

    Args:
        rng: numpy Generator.
        adjacency: (S, d, d) 0/1 DAGs.

    Returns:
        :class:`SergioParams` of float32 numpy arrays with leading axis S.
    """
    adjacency = np.asarray(adjacency)
    d, num_types = config.num_genes, config.num_cell_types
    if adjacency.ndim != 3 or adjacency.shape[1:] != (d, d):
        raise ValueError(f"adjacency must have shape (S, d, d) with d = {d}, got {adjacency.shape}")
    if adjacency.size and not np.isin(adjacency, (0, 1)).all():
        raise ValueError("adjacency must be 0/1")
    adjacency = adjacency.astype(np.float32)
    num = adjacency.shape[0]
    magnitude = rng.uniform(*config.k_range, size=(num, d, d))
    p_positive = rng.beta(*config.k_sign_beta, size=(num, d, 1))
    sign = 2.0 * rng.binomial(1, np.broadcast_to(p_positive, (num, d, d))) - 1.0
    basal = rng.uniform(*config.basal_range, size=(num, d, num_types))

    def choice(values):
        return rng.choice(np.asarray(values, np.float32), size=num)

    hill, decay, noise = (choice(v) for v in (config.hill_values, config.decay_values, config.noise_values))
    if config.technical_noise is None:
        technical = TechnicalNoiseParams(*(np.zeros(num, np.float32) for _ in TechnicalNoiseParams._fields))
    else:
        levels = TECHNICAL_NOISE[config.technical_noise]
        technical = TechnicalNoiseParams(*(choice(levels[name]) for name in TechnicalNoiseParams._fields))
    return SergioParams(
        adjacency=adjacency,
        k=(adjacency * sign * magnitude).astype(np.float32),
        basal=basal.astype(np.float32),
        hill=hill, decay=decay, noise=noise,
        technical=technical,
    )


# ----------------------------------------------------------------------------- dynamics
# Batch convention: every dynamics function accepts leading batch axes "..." on all of its array
# arguments (and on every SergioParams field); they broadcast against each other.


def hill_function(x: jax.Array, half_response: jax.Array, hill: jax.Array) -> jax.Array:
    """Activating Hill function ``x^n / (h^n + x^n)``, elementwise (arguments broadcast).

    Exactly 0 where ``x <= 0``, as in SERGIO (a silent regulator gives 0 even when ``h = 0``);
    for ``x > 0`` and ``h = 0`` the value is 1.
    """
    positive = x > 0
    x_n = jnp.exp(hill * jnp.log(jnp.where(positive, x, 1.0)))  # faster than jnp.power on CPU
    h_n = jnp.exp(hill * jnp.log(half_response))  # h = 0 gives exp(-inf) = 0
    return jnp.where(positive, x_n / (h_n + x_n), 0.0)


def production_rates(x: jax.Array, half_response: jax.Array, params: SergioParams,
                     knockout: jax.Array) -> jax.Array:
    """Production rates of every gene and cell type.

    ``P_v = b_{v,c}`` for master regulators (genes without regulators), otherwise
    ``P_v = sum_u |K_uv| ([K_uv > 0] H(x_u) + [K_uv < 0] (1 - H(x_u)))
          = sum_u H(x_u) K_uv + sum_u max(-K_uv, 0)``
    with ``H = hill_function(., h_u, n)``; ``P_v = 0`` for knocked-out genes.

    Args:
        x: (..., C, d) concentrations of the regulators.
        half_response: (..., d) half-response ``h_u`` of each regulator.
        params: :class:`SergioParams` with batch shape (...).
        knockout: (..., d) 0/1 knocked-out genes.

    Returns:
        (..., C, d) production rates.
    """
    activation = hill_function(x, half_response[..., None, :], params.hill[..., None, None])
    k = params.k * params.adjacency  # (..., d, d), K_uv on edges u -> v
    repression_offset = jnp.sum(jnp.maximum(-k, 0.0), axis=-2)  # (..., d)
    regulated = jnp.einsum("...cu,...uv->...cv", activation, k) + repression_offset[..., None, :]
    regulated = jnp.maximum(regulated, 0.0)  # >= 0 exactly; rounding can leave -1e-7 (then sqrt(P) = nan)
    is_master = jnp.sum(params.adjacency, axis=-2) == 0  # (..., d)
    rates = jnp.where(is_master[..., None, :], jnp.swapaxes(params.basal, -1, -2), regulated)
    return rates * (1.0 - knockout[..., None, :])


def _cle_step(x: jax.Array, production: jax.Array, params: SergioParams, xi: jax.Array,
              config: SergioConfig) -> jax.Array:
    """One Euler--Maruyama step of the chemical Langevin equation, clipped at 0.

    Args:
        x, production: (..., C, d) concentrations and production rates.
        xi: (..., K, C, d) standard normal draws, K = 1 or 2 (only ``xi[..., 0, :, :]`` is
            used unless the noise type is "dpd" and K = 2).

    Returns:
        (..., C, d) ``max(0, x + dt (P - lam x) + sqrt(dt) * noise)``, where noise is
        ``q (sqrt(P) xi_0 + sqrt(lam x) xi_1)`` ("dpd", K = 2, SERGIO's two draws),
        ``q sqrt(P + lam x) xi_0`` ("dpd", K = 1: the same distribution from one draw),
        ``q (sqrt(P) + sqrt(lam x)) xi_0`` ("spd") or ``q sqrt(P) xi_0`` ("sp").
    """
    decay = params.decay[..., None, None] * x
    q = params.noise[..., None, None]
    if config.noise_type == "dpd" and xi.shape[-3] == 2:
        noise = q * (jnp.sqrt(production) * xi[..., 0, :, :] + jnp.sqrt(decay) * xi[..., 1, :, :])
    elif config.noise_type == "dpd":  # one draw: sqrt(P) xi_0 + sqrt(D) xi_1 ~ sqrt(P + D) xi
        noise = q * jnp.sqrt(production + decay) * xi[..., 0, :, :]
    elif config.noise_type == "spd":
        noise = q * (jnp.sqrt(production) + jnp.sqrt(decay)) * xi[..., 0, :, :]
    else:  # "sp"
        noise = q * jnp.sqrt(production) * xi[..., 0, :, :]
    return jnp.maximum(x + config.dt * (production - decay) + math.sqrt(config.dt) * noise, 0.0)


def simulate_trajectory(params: SergioParams, knockout: jax.Array, x0: jax.Array,
                        half_response: jax.Array, noise: jax.Array, config: SergioConfig,
                        num_steps: jax.Array | int | None = None) -> jax.Array:
    """Simulate all genes jointly from ``x0`` with fixed half-responses (a loop over time).

    Args:
        params: :class:`SergioParams` with batch shape (...).
        knockout: (..., d) 0/1 knocked-out genes.
        x0: (..., C, d) initial concentrations.
        half_response: (..., d) half-response ``h_u`` of each regulator.
        noise: (T, ..., K, C, d) standard normal draws, TIME FIRST, K = 1 or 2 (see
            :func:`_cle_step`); step t uses ``noise[t]``.
        num_steps: steps to simulate (may be traced, <= T); default T.

    Returns:
        (T, ..., C, d) trajectory ``x_t`` for t < num_steps (``x_0 = x0``); zeros after.
    """
    total = noise.shape[0]

    def body(t, carry):
        x, trajectory = carry
        production = production_rates(x, half_response, params, knockout)
        trajectory = jax.lax.dynamic_update_index_in_dim(trajectory, x, t, axis=0)
        xi = jax.lax.dynamic_index_in_dim(noise, t, axis=0, keepdims=False)
        return _cle_step(x, production, params, xi, config), trajectory

    trajectory = jnp.zeros((total, *x0.shape), x0.dtype)
    steps = total if num_steps is None else num_steps
    return jax.lax.fori_loop(0, steps, body, (x0, trajectory))[1]


def _gene_depths_and_levels(adjacency: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(depth, level), each (..., d) int32: longest path into / out of each gene of DAGs (..., d, d)."""
    d = adjacency.shape[-1]
    edge = adjacency > 0
    depth = jnp.zeros(adjacency.shape[:-1], jnp.int32)
    level = jnp.zeros(adjacency.shape[:-1], jnp.int32)
    for _ in range(d):
        depth = jnp.max(jnp.where(edge, depth[..., :, None] + 1, 0), axis=-2)
        level = jnp.max(jnp.where(edge, level[..., None, :] + 1, 0), axis=-1)
    return depth, level


def _required_steps(level: jax.Array, num_sc: int, config: SergioConfig) -> jax.Array:
    """Trajectory entries needed for genes at ``level``: sampling_state * n_sc + safety_steps * max(level)."""
    return config.sampling_state * num_sc + config.safety_steps * jnp.max(level)


def _simulate_cells(params: SergioParams, knockout: jax.Array, noise: jax.Array,
                    sample_offsets: jax.Array, config: SergioConfig) -> jax.Array:
    """:func:`simulate_condition_from_noise` with TIME-FIRST ``noise: (T, ..., K, C, d)``."""
    batch = noise.shape[1:-3]
    num_sc = sample_offsets.shape[-1]
    depth, level = _gene_depths_and_levels(params.adjacency)
    sample_steps = config.safety_steps * level[..., :, None] + sample_offsets[..., None, :]  # (..., d, n_sc)
    sample_steps = jnp.broadcast_to(sample_steps, (*batch, *sample_steps.shape[-2:]))
    num_steps = _required_steps(level, num_sc, config)  # no gene is read at a later step

    def run(means):  # (..., C, d) -> (..., C, d, n_sc)
        half_response = jnp.mean(means, axis=-2)  # (..., d): mean over cell types
        x0 = production_rates(means, half_response, params, knockout) / params.decay[..., None, None]
        trajectory = simulate_trajectory(params, knockout, x0, half_response, noise, config, num_steps)
        # cells[..., c, v, j] = trajectory[sample_steps[..., v, j], ..., c, v]: gather along time
        index = jnp.moveaxis(sample_steps, -1, 0)[..., None, :]  # (n_sc, ..., 1, d)
        cells = jnp.take_along_axis(trajectory, index, axis=0)  # (n_sc, ..., C, d)
        return jnp.moveaxis(cells, 0, -1)

    means0 = jnp.zeros((*batch, *noise.shape[-2:]), noise.dtype)
    means = jax.lax.fori_loop(0, jnp.max(depth), lambda _, m: jnp.mean(run(m), axis=-1), means0)
    return run(means)


def simulate_condition_from_noise(params: SergioParams, knockout: jax.Array, noise: jax.Array,
                                  sample_offsets: jax.Array, config: SergioConfig) -> jax.Array:
    """SERGIO steady-state simulation of one condition per batch entry, given all randomness.

    Gene v at level ``L_v`` is read at steps ``safety_steps * L_v + sample_offsets`` (SERGIO's
    negative indices ``-sampling_state * n_sc .. -1`` into a trajectory of
    ``sampling_state * n_sc + safety_steps * L_v`` entries), so only the first
    ``sampling_state * n_sc + safety_steps * max(L)`` steps are simulated. Each pass starts
    every gene at ``x_0 = P(xbar) / lam`` with ``h_u = mean_c xbar_{c,u}``, using the cell
    means ``xbar`` of the previous pass (zeros at first); the passes repeat ``longest path``
    times so that every gene's regulators are exact before its own pass (see the module
    docstring). Extra passes or steps change nothing, so a batch runs as many passes and steps
    as its deepest graph needs.

    Args:
        params: :class:`SergioParams` with batch shape (...).
        knockout: (..., d) 0/1 knocked-out genes.
        noise: (..., T, K, C, d) standard normal draws, ``T >= simulation_steps(config, N)``;
            K = 2 gives SERGIO's two "dpd" draws per step exactly, K = 1 the same process in
            distribution from one draw (what :func:`simulate_condition` uses).
        sample_offsets: (..., n_sc) int32 step offsets in ``[0, sampling_state * n_sc)``.

    Returns:
        cells: (..., C, d, n_sc) clean expression of each cell type, gene and cell.
    """
    num_sc = sample_offsets.shape[-1]
    needed = config.sampling_state * num_sc + config.safety_steps * (config.num_genes - 1)
    if noise.ndim < 4 or noise.shape[-4] < needed or noise.shape[-3] not in (1, 2):
        raise ValueError(f"noise must have shape (..., T, K, C, d) with T >= {needed} and K in (1, 2), "
                         f"got {noise.shape}")
    return _simulate_cells(params, knockout, jnp.moveaxis(noise, -4, 0), sample_offsets, config)


def apply_technical_noise(key: jax.Array, cells: jax.Array, technical: TechnicalNoiseParams,
                          count_data: bool, apply_effects: bool = True) -> jax.Array:
    """SERGIO's technical noise on ``cells: (C, d, n_sc)`` of one condition (avici ``GRNSergio``).

    In order: outlier genes (each gene with probability ``outlier_prob`` is scaled by a
    LogNormal(outlier_mean, outlier_scale) factor), library size (each cell rescaled to a total
    of LogNormal(lib_size_mean, lib_size_scale)), dropout (each entry kept with probability
    ``sigmoid(shape (log(1 + x) - m))``, ``m`` the ``dropout_percentile``-th percentile of
    ``log(1 + x)`` over the condition), all only if ``apply_effects``; then, if
    ``count_data``, Poisson counts. ``technical`` fields are scalars (vmap for batches).

    Returns:
        (C, d, n_sc) float32.
    """
    num_types, d, num_sc = cells.shape
    effects_key, count_key = jax.random.split(key)
    if apply_effects:  # one threefry call for all uniforms (each call compiles slowly on CPU)
        sizes = (d, d, num_types * num_sc, num_types * d * num_sc)
        u = jnp.split(_uniform(jax.random.bits(effects_key, (sum(sizes),), jnp.uint32)),
                      np.cumsum(sizes)[:-1].tolist())
        outlier = u[0] < technical.outlier_prob  # (d,) Bernoulli
        factor = jnp.exp(technical.outlier_mean + technical.outlier_scale * _standard_normal(u[1]))
        cells = cells * jnp.where(outlier, factor, 1.0)[None, :, None]
        library = jnp.exp(technical.lib_size_mean
                          + technical.lib_size_scale * _standard_normal(u[2]).reshape(num_types, num_sc))
        totals = jnp.sum(cells, axis=1)  # (C, n_sc)
        cells = cells * (library / jnp.where(totals == 0.0, 1.0, totals))[:, None, :]
        log_cells = jnp.log1p(cells)
        midpoint = jnp.percentile(log_cells, technical.dropout_percentile)
        keep_prob = jax.nn.sigmoid(technical.dropout_shape * (log_cells - midpoint))
        cells = jnp.where(u[3].reshape(cells.shape) < keep_prob, cells, 0.0)
    if count_data:
        cells = jax.random.poisson(count_key, cells).astype(cells.dtype)
    return cells


def _uniform(bits: jax.Array) -> jax.Array:
    """Uniform floats in [0, 1) from uint32 ``bits`` (23 mantissa bits, as ``jax.random.uniform``)."""
    mantissa = jax.lax.shift_right_logical(bits, jnp.uint32(9)) | jnp.uint32(0x3F800000)
    return jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0


def _standard_normal(u: jax.Array) -> jax.Array:
    """Standard normals from uniforms ``u`` in [0, 1) by the inverse CDF (as ``jax.random.normal``)."""
    low = jnp.nextafter(jnp.float32(-1.0), jnp.float32(0.0))  # keep erf_inv finite
    return jnp.sqrt(2.0) * jax.lax.erf_inv(jnp.maximum(2.0 * u - 1.0, low))


def _key_words(key: jax.Array) -> jax.Array:
    """The two uint32 words of a threefry PRNG key (raw ``PRNGKey`` or typed ``jax.random.key``)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    if key.shape[-1:] != (2,) or key.dtype != jnp.uint32:
        raise ValueError(f"expected a threefry PRNG key (2 uint32 words), got {key.dtype}{key.shape}")
    return key


def _step_noise(key: jax.Array, step: jax.Array, config: SergioConfig) -> jax.Array:
    """Standard normals of one time step, ``(1, C, d)``: counter-based threefry, inverse CDF.

    Step t uses the threefry-2x32 hash of ``key`` on the counters ``t C d .. (t + 1) C d - 1``
    (``jax.extend.random.threefry_2x32``, the construction of jax's non-partitionable
    ``random.bits``, about twice as fast on CPU as ``jax.random.normal``), so the noise of
    step t does not depend on how many steps are drawn and blocks of networks can simulate
    only the steps their deepest graph needs. One draw per gene and cell type suffices: for
    "dpd", ``sqrt(P) xi_0 + sqrt(lam x) xi_1`` has the law of ``sqrt(P + lam x) xi`` (see
    :func:`_cle_step`).
    """
    size = config.num_cell_types * config.num_genes
    counters = jnp.asarray(step, jnp.uint32) * jnp.uint32(size) + jnp.arange(size, dtype=jnp.uint32)
    bits = threefry_2x32(_key_words(key), counters)
    return _standard_normal(_uniform(bits)).reshape(1, config.num_cell_types, config.num_genes)


def _condition_randomness(key: jax.Array, num_cells: int, config: SergioConfig):
    """Randomness of one condition other than the CLE noise, from one threefry call.

    Returns:
        offsets: (n_sc,) int32 step offsets, uniform on ``[0, sampling_state * n_sc)``.
        shuffle: (C n_sc,) uniforms whose argsort shuffles the cells.
        noise_key: key of the CLE noise (:func:`_step_noise`).
        tech_key: key of the technical noise.
    """
    num_sc, num_types = config.cells_per_type(num_cells), config.num_cell_types
    noise_key, tech_key, bits_key = jax.random.split(key, 3)
    u = _uniform(jax.random.bits(bits_key, (num_sc + num_types * num_sc,), jnp.uint32))
    span = config.sampling_state * num_sc
    offsets = jnp.minimum(jnp.floor(u[:num_sc] * span), span - 1).astype(jnp.int32)
    return offsets, u[num_sc:], noise_key, tech_key


def _finish_condition(tech_key: jax.Array, shuffle: jax.Array, cells: jax.Array,
                      technical: TechnicalNoiseParams, num_cells: int, config: SergioConfig):
    """Technical noise (if configured), then shuffle the C n_sc cells and keep N: (N, d), (N,)."""
    num_types, d, num_sc = cells.shape
    if config.technical_noise is not None or config.count_data:
        cells = apply_technical_noise(tech_key, cells, technical, config.count_data,
                                      apply_effects=config.technical_noise is not None)
    flat = jnp.swapaxes(cells, 1, 2).reshape(num_types * num_sc, d)  # type-0 cells, type-1 cells, ...
    cell_type = jnp.repeat(jnp.arange(num_types, dtype=jnp.int32), num_sc)
    keep = jnp.argsort(shuffle)[:num_cells]  # uniformly random permutation, first N
    return flat[keep], cell_type[keep]


def simulate_condition(key: jax.Array, params: SergioParams, knockout: jax.Array, num_cells: int,
                       config: SergioConfig) -> tuple[jax.Array, jax.Array]:
    """Simulate ``num_cells`` cells of one network under one condition (avici ``GRNSergio``).

    Draws ``n_sc = ceil(N / C)`` step offsets (with replacement) and the CLE noise, runs
    :func:`simulate_condition_from_noise` for the ``C`` cell types, applies technical noise if
    configured, shuffles the ``C n_sc`` cells and keeps the first N (as avici does).

    Args:
        key: PRNG key.
        params: one network's :class:`SergioParams` (no batch axes).
        knockout: (d,) 0/1 knocked-out genes (all zeros for observational data).
        num_cells: N (static under jit).

    Returns:
        (cells, cell_type): (N, d) float32 expression and (N,) int32 cell type of each cell.
    """
    offsets, shuffle, noise_key, tech_key = _condition_randomness(key, num_cells, config)
    steps = jnp.arange(simulation_steps(config, num_cells))
    noise = jax.vmap(_step_noise, (None, 0, None))(noise_key, steps, config)  # (T, 1, C, d)
    cells = _simulate_cells(params, knockout, noise, offsets, config)  # (C, d, n_sc)
    return _finish_condition(tech_key, shuffle, cells, params.technical, num_cells, config)


def _knockouts(num_genes: int) -> jax.Array:
    """(d + 1, d) conditions: row 0 observational (no knockout), row i + 1 knocks out gene i."""
    return jnp.concatenate([jnp.zeros((1, num_genes)), jnp.eye(num_genes)], axis=0)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _simulate_block(keys: jax.Array, params: SergioParams, num_cells: int, config: SergioConfig):
    """All d + 1 conditions of a block of networks: keys (B,), params with batch (B,).

    Equal, network by network and condition by condition, to :func:`simulate_condition` with
    condition keys ``jax.random.split(keys[b], d + 1)``; the CLE runs batched over (B, d + 1).

    Returns:
        cells (B, d + 1, N, d) float32 and cell types (B, d + 1, N) int32.
    """
    d = config.num_genes
    condition_keys = jax.vmap(lambda k: jax.random.split(k, d + 1))(keys)  # (B, d + 1)
    draw = jax.vmap(jax.vmap(_condition_randomness, (0, None, None)), (0, None, None))
    offsets, shuffle, noise_keys, tech_key = draw(condition_keys, num_cells, config)
    # CLE noise, time first (T, B, d + 1, 1, C, d), drawn only for the steps the block needs.
    step_noise = jax.vmap(jax.vmap(_step_noise, (0, None, None)), (0, None, None))
    num_steps = _required_steps(_gene_depths_and_levels(params.adjacency)[1], offsets.shape[-1], config)
    noise = jax.lax.fori_loop(
        0, num_steps, lambda t, buf: buf.at[t].set(step_noise(noise_keys, t, config)),
        jnp.zeros((simulation_steps(config, num_cells), *keys.shape[:1], d + 1, 1, config.num_cell_types, d)))
    per_condition = jax.tree_util.tree_map(lambda a: a[:, None], params)  # batch (B, 1)
    cells = _simulate_cells(per_condition, _knockouts(d), noise, offsets, config)
    finish = jax.vmap(jax.vmap(_finish_condition, (0, 0, 0, None, None, None)),
                      (0, 0, 0, 0, None, None))
    return finish(tech_key, shuffle, cells, params.technical, num_cells, config)


def _check_params(params: SergioParams, config: SergioConfig) -> SergioParams:
    """Convert to float32 jax arrays and check the shapes against ``config`` (batch S)."""
    d, num_types = config.num_genes, config.num_cell_types
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
    num = params.adjacency.shape[0] if params.adjacency.ndim == 3 else -1
    expected = {"adjacency": (num, d, d), "k": (num, d, d), "basal": (num, d, num_types),
                "hill": (num,), "decay": (num,), "noise": (num,)}
    for name, shape in expected.items():
        if getattr(params, name).shape != shape:
            raise ValueError(f"params.{name} must have shape {shape} (S, d = {d}, C = {num_types}), "
                             f"got {getattr(params, name).shape}")
    for name, value in params.technical._asdict().items():
        if value.shape != (num,):
            raise ValueError(f"params.technical.{name} must have shape ({num},), got {value.shape}")
    return params


def simulate_networks(key: jax.Array, params: SergioParams, config: SergioConfig,
                      num_cells: int = 30, block_size: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Simulate observational data and all d single-gene knockouts of S networks, batched.

    Network ``s`` uses ``jax.random.fold_in(key, s)`` only, split into ``d + 1`` condition keys
    for :func:`simulate_condition`, so results do not depend on how networks are batched.

    Args:
        key: PRNG key.
        params: :class:`SergioParams` with leading axis S (e.g. from :func:`sample_params`).
        config: :class:`SergioConfig` matching the parameter shapes.
        num_cells: N cells per condition.
        block_size: networks per compiled call (the last block is padded); default all S.

    Returns:
        (cells, cell_type): ``(S, d + 1, N, d)`` float32 (condition 0 observational, ``i + 1``
        knockout of gene i) and ``(S, d + 1, N)`` int32 cell types.
    """
    params = _check_params(params, config)
    if isinstance(num_cells, bool) or not isinstance(num_cells, (int, np.integer)) or num_cells < 1:
        raise ValueError(f"num_cells must be a positive int, got {num_cells!r}")
    num = params.adjacency.shape[0]
    block = num if block_size is None else int(block_size)
    if block < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    cells, cell_type = [], []
    for begin in range(0, num, block):
        index = np.arange(begin, min(begin + block, num))
        padded = np.concatenate([index, np.full(block - index.size, index[0])])
        keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.asarray(padded))
        out = _simulate_block(keys, jax.tree_util.tree_map(lambda a: a[padded], params), int(num_cells), config)
        cells.append(out[0][: index.size])
        cell_type.append(out[1][: index.size])
    return jnp.concatenate(cells), jnp.concatenate(cell_type)


# ----------------------------------------------------------------------------- graphs
def _graph_sources(graph) -> list:
    """Normalise ``graph`` to a list of "er" / "scale_free" / RegulatoryNetwork entries."""
    entries = [graph] if isinstance(graph, (str, os.PathLike, RegulatoryNetwork)) else list(graph)
    if not entries:
        raise ValueError("graph must name at least one graph source")
    sources = []
    for entry in entries:
        if isinstance(entry, RegulatoryNetwork) or entry in ("er", "scale_free"):
            sources.append(entry)
        elif isinstance(entry, str) and entry in SHIPPED_NETWORKS:
            sources.append(load_network(shipped_network_path(entry)))
        elif isinstance(entry, (str, os.PathLike)):
            if not os.path.isfile(entry):
                raise ValueError(f"graph must be 'er', 'scale_free', a shipped network "
                                 f"{sorted(SHIPPED_NETWORKS)} or the path of a network file; "
                                 f"{os.fspath(entry)!r} is neither")
            sources.append(load_network(entry))
        else:
            raise ValueError(f"unsupported graph source {entry!r}")
    return sources


def sample_graphs(num_networks: int, num_genes: int, rng: np.random.Generator, graph="er", *,
                  edges_per_var: float | Sequence[float] = (1.0, 2.0, 3.0),
                  scale_free_power: float = 1.0, topk: float = 0.2):
    """Sample ``S`` regulatory DAGs on ``d`` genes.

    Args:
        graph: "er" (:func:`~activa_ppl.simulate.graphs.erdos_renyi_dag`), "scale_free"
            (:func:`~activa_ppl.simulate.graphs.scale_free_dag`), "ecoli" or "yeast" (the
            paper's networks, shipped: :data:`~activa_ppl.simulate.graphs.SHIPPED_NETWORKS`),
            the path of a network edge list (random modules of a network by
            :func:`~activa_ppl.simulate.graphs.extract_module`), or a sequence of these, one
            drawn uniformly per network.
        edges_per_var: expected edges per gene (ER) / edges per new gene (scale-free, integer);
            a sequence means one value drawn uniformly per network (default {1, 2, 3}, avici's
            ``neurips-grn`` choices).
        scale_free_power: preferential-attachment power of scale-free graphs.
        topk: module-extraction randomness (fraction of best candidates to draw from).

    Returns:
        (adjacency, source, genes, sources): (S, d, d) bool DAGs, (S,) int32 index of each
        network's entry in ``sources``, (S, d) int32 gene indices into the source network's
        ``genes`` (-1 for ER / scale-free), and the normalised list of sources.
    """
    for name, value in (("num_networks", num_networks), ("num_genes", num_genes)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    sources = _graph_sources(graph)
    choices = tuple(float(x) for x in (edges_per_var if isinstance(edges_per_var, Sequence) else [edges_per_var]))
    if not choices or any(not x >= 0 for x in choices):
        raise ValueError(f"edges_per_var must be non-negative, got {edges_per_var!r}")
    if "scale_free" in [s for s in sources if isinstance(s, str)] and any(x != int(x) for x in choices):
        raise ValueError(f"scale-free graphs need integer edges_per_var, got {edges_per_var!r}")
    adjacency = np.zeros((num_networks, num_genes, num_genes), dtype=bool)
    source = rng.integers(len(sources), size=num_networks).astype(np.int32)
    genes = np.full((num_networks, num_genes), -1, dtype=np.int32)
    for s in range(num_networks):
        entry = sources[source[s]]
        if isinstance(entry, RegulatoryNetwork):
            adjacency[s], genes[s] = extract_module(entry, num_genes, rng, topk=topk)
            continue
        density = choices[int(rng.integers(len(choices)))]
        if entry == "er":
            adjacency[s] = erdos_renyi_dag(num_genes, density, rng)
        else:
            adjacency[s] = scale_free_dag(num_genes, int(density), rng, power=scale_free_power)
    return adjacency, source, genes, sources


# ----------------------------------------------------------------------------- datasets
def sergio_dataset(
    num_networks: int = 1000,
    preset: str | SergioConfig = "in_distribution",
    num_cells: int = 30,
    graph="er",
    seed: int = 0,
    *,
    edges_per_var: float | Sequence[float] = (1.0, 2.0, 3.0),
    scale_free_power: float = 1.0,
    topk: float = 0.2,
    split_fractions: tuple[float, float, float] | None = None,
    block_size: int = _DEFAULT_BLOCK,
    progress: bool = True,
    **config_overrides,
) -> InterventionalDataset:
    """SERGIO gene-expression datasets with every single-gene knockout (paper Appendix C.2).

    For each of S networks: a DAG (:func:`sample_graphs`), parameters from the preset's priors
    (:func:`sample_params`), N observational cells and N cells under each knockout
    ``do(V_i = 0)``, i = 0..d-1 (:func:`simulate_networks`). The paper uses 15,000 networks
    (in-distribution, 8 genes) and 1,800 networks (OOD, 11 genes) with 30 cells per condition,
    on E. coli / S. cerevisiae modules (``graph=["ecoli", "yeast"]``, the shipped networks).

    Randomness: ``np.random.default_rng(seed)`` draws the graphs, then the split, then the
    parameters; network s is simulated with ``jax.random.fold_in(jax.random.PRNGKey(seed), s)``.
    The dataset is a deterministic function of the arguments; ``block_size`` changes it only
    by float32 rounding (XLA may vectorise other batch shapes differently).

    Args:
        num_networks: S.
        preset: "in_distribution", "ood" (:data:`PRESETS`) or a :class:`SergioConfig`.
        num_cells: N cells per condition (N_obs = N_int).
        graph, edges_per_var, scale_free_power, topk: see :func:`sample_graphs`.
        seed: integer seed.
        split_fractions: train/valid/test fractions; default (0.8, 0.1, 0.1) for
            "in_distribution" and (0, 0, 1) (all test) for "ood".
        block_size: networks per compiled simulator call (memory ~ block_size).
        progress: show a tqdm progress bar over networks.
        **config_overrides: fields of :class:`SergioConfig` replacing the preset's, e.g.
            ``num_cell_types=1`` or ``technical_noise="10x-chromium"`` (the metadata keeps the
            preset name and records the full configuration).

    Returns:
        InterventionalDataset with ``observational (S, N, d)``, ``interventional (S, d, N, d)``
        (query i knocks out gene i), identity ``targets``, ``intervention_index`` 0,
        ``intervention_values`` 0, ``num_interventions = 1``, ``adjacency (S, d, d)``, and extras
        ``k (S, d, d)``, ``basal (S, d, C)``, ``hill``, ``decay``, ``noise (S,)``, ``level (S, d)``,
        ``obs_cell_type (S, N)``, ``int_cell_type (S, d, N)``, ``graph_source (S,)``,
        ``source_genes (S, d)`` (and the technical-noise levels when enabled).
    """
    if isinstance(preset, SergioConfig):
        config, preset_name = preset, "custom"
    elif isinstance(preset, str):
        config, preset_name = SergioConfig.preset(preset), preset
    else:
        raise ValueError(f"preset must be a preset name or a SergioConfig, got {preset!r}")
    unknown = set(config_overrides) - {f.name for f in dataclasses.fields(SergioConfig)}
    if unknown:
        raise ValueError(f"unknown sergio_dataset arguments {sorted(unknown)} (not SergioConfig fields either)")
    config = dataclasses.replace(config, **config_overrides)
    for name, value in (("num_networks", num_networks), ("num_cells", num_cells), ("block_size", block_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if split_fractions is None:
        split_fractions = (0.0, 0.0, 1.0) if preset_name == "ood" else (0.8, 0.1, 0.1)
    fractions = np.asarray(split_fractions, dtype=float)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"split_fractions must be 3 non-negative numbers summing to 1, got {split_fractions}")

    num_networks, num_cells, d = int(num_networks), int(num_cells), config.num_genes
    rng = np.random.default_rng(int(seed))
    adjacency, graph_source, source_genes, sources = sample_graphs(
        num_networks, d, rng, graph, edges_per_var=edges_per_var,
        scale_free_power=scale_free_power, topk=topk)
    split = split_codes(num_networks, tuple(fractions), rng)
    params = sample_params(rng, adjacency, config)

    # Simulate networks grouped by longest path (= the passes they need), in fixed-size blocks
    # (the last one padded) so that one compiled function serves every block.
    depth, level = longest_path_lengths(adjacency)
    order = np.argsort(depth.max(axis=1), kind="stable")
    block = min(int(block_size), num_networks)
    root = jax.random.PRNGKey(int(seed))
    cells = np.empty((num_networks, d + 1, num_cells, d), dtype=np.float32)
    cell_type = np.empty((num_networks, d + 1, num_cells), dtype=np.int8)
    from tqdm.auto import tqdm

    with tqdm(total=num_networks, desc=f"SERGIO {preset_name} d={d}", unit="net",
              disable=not progress) as bar:
        for begin in range(0, num_networks, block):
            index = order[begin:begin + block]
            padded = np.concatenate([index, np.full(block - index.size, index[0])])
            keys = jax.vmap(lambda s: jax.random.fold_in(root, s))(jnp.asarray(padded))
            block_params = jax.tree_util.tree_map(lambda a: jnp.asarray(a[padded]), params)
            block_cells, block_types = jax.device_get(_simulate_block(keys, block_params, num_cells, config))
            cells[index] = block_cells[: index.size]
            cell_type[index] = block_types[: index.size]
            bar.update(index.size)

    param_arrays = {"k": params.k, "basal": params.basal, "hill": params.hill, "decay": params.decay,
                    "noise": params.noise}
    if config.technical_noise is not None:
        param_arrays.update({f"tech_{name}": value for name, value in params.technical._asdict().items()})
    extras = dict(param_arrays)
    extras.update(level=level.astype(np.int8), obs_cell_type=cell_type[:, 0],
                  int_cell_type=cell_type[:, 1:], graph_source=graph_source, source_genes=source_genes)
    source_meta = [s if isinstance(s, str) else {"path": portable_network_path(s.path), "sha256": s.sha256,
                                                  "num_genes": s.num_genes} for s in sources]
    metadata = {
        "generator": "sergio",
        "preset": preset_name,
        "config": dataclasses.asdict(config),
        "num_networks": num_networks,
        "num_genes": d,
        "num_cells": num_cells,
        "graph_sources": source_meta,
        "edges_per_var": list(edges_per_var) if isinstance(edges_per_var, Sequence) else float(edges_per_var),
        "scale_free_power": float(scale_free_power),
        "topk": float(topk),
        "split_fractions": [float(x) for x in fractions],
        "intervention": "knockout do(V_i = 0): production rate and initial concentration of gene i set to 0",
        "seed": int(seed),
        "version": library_version(),
    }
    return InterventionalDataset(
        observational=cells[:, 0],
        interventional=cells[:, 1:],
        targets=np.tile(np.eye(d, dtype=bool), (num_networks, 1, 1)),
        intervention_index=np.zeros((num_networks, d), dtype=np.int32),
        intervention_values=np.zeros((num_networks, d), dtype=np.float32),
        adjacency=adjacency.astype(np.int8),
        split=split,
        num_interventions=1,
        metadata=metadata,
        extras=extras,
    )
