"""What one benchmark cell is: a dataset shape of the paper, simulated data of that shape, and
the parameter counts that pair an ACTIVA preset with a MACE-TNP preset of about its size."""

from __future__ import annotations

import math

SHAPES = {  # name -> (N samples per dataset, d variables)
    "gauss2": (100, 2),   # the paper's Gauss 2 sets
    "gauss8": (80, 8),    # the paper's Gauss 8 sets
    "sergio": (30, 8),    # the paper's SERGIO sets (30 cells, 8 genes)
}
TRAIN_TASKS = 512  # size of the simulated training set the minibatches are drawn from


def dataset(shape: str, train_tasks: int, seed: int):
    """A linear-Gaussian dataset of the shape's (N, d): only shapes matter for the speed
    (the SERGIO shape uses simulated linear data of SERGIO's size; no SERGIO simulation)."""
    from activa_ppl import simulate

    n, d = SHAPES[shape]
    num_scms = max(4, -(-train_tasks // d) * 10 // 8 + 1)  # 80 % train split
    return simulate.linear_dataset(num_scms=num_scms, num_vars=d, noise="gauss", num_samples=n, seed=seed)


def param_count(tree) -> int:
    """Number of scalars in a pytree of arrays (or of shapes)."""
    import jax

    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def mace_param_count(preset: str, d: int) -> int:
    """Parameters of the MACE-TNP ``preset`` at ``d`` variables (its Cholesky head depends on d)."""
    import jax

    from activa_ppl.baselines.mace_tnp import MaceTnpConfig, init_params

    cfg = MaceTnpConfig.preset(preset, d)
    return param_count(jax.eval_shape(lambda k: init_params(cfg, k), jax.random.PRNGKey(0)))


def closest_mace_preset(activa_params: int, d: int) -> tuple[str, int]:
    """The MACE-TNP preset whose parameter count is closest (in ratio) to ``activa_params``."""
    counts = {name: mace_param_count(name, d) for name in ("tiny", "small", "paper")}
    name = min(counts, key=lambda k: abs(math.log(counts[k] / activa_params)))
    return name, counts[name]
