"""The methods under evaluation: the :class:`Predictor` type, one adapter per method, and the
registry that builds them from ``NAME[:ARGUMENT]`` specs (``activa evaluate --methods``).

Every adapter returns the same :class:`~activa_ppl.mixture.GaussianMixture` (batch ``(T,)`` for
the ``T`` tasks it is given), so evaluation, plots and ArviZ conversion never branch on the
method. What a method knows beyond the observational data and the intervention index is data on
the adapter (:attr:`Predictor.privileged`), and its display label follows from it
(:meth:`Predictor.label_for`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import jax
import numpy as np

from activa_ppl.baselines.classical import gaussian_conditional_batch, linear_causal_batch
from activa_ppl.baselines.mace_tnp.fitted import FittedMaceTnp, load_mace_tnp
from activa_ppl.data import InterventionalDataset, TaskArrays
from activa_ppl.metrics import MARGINAL_SET_NAMES
from activa_ppl.mixture import GaussianMixture
from activa_ppl.zoo import resolve_model

__all__ = [
    "BASELINE_SETS",
    "INTERVENTION_VALUE",
    "METHODS",
    "TRUE_GRAPH",
    "Predictor",
    "activa_predictor",
    "as_predictor",
    "gaussian_conditional_predictor",
    "linear_causal_predictor",
    "mace_tnp_predictor",
    "predictor_from_spec",
    "register_method",
]

#: Marginals a baseline reports (it does not predict V_t itself; Table 1 shows "—" for All).
BASELINE_SETS = tuple(s for s in MARGINAL_SET_NAMES if s != "all")

#: Names of privileged information a method may use (shown in tables).
INTERVENTION_VALUE = "intervention value"
TRUE_GRAPH = "true graph"


@dataclass(frozen=True)
class Predictor:
    """A method under evaluation.

    Attributes:
        predict: ``predict(tasks, dataset) -> GaussianMixture`` with batch shape ``(T,)`` for the
            ``T`` tasks of ``tasks`` (a :class:`~activa_ppl.data.TaskArrays`).
        label: display name in tables and figures (e.g. ``"Linear Causal"``).
        sets: the marginals the method is scored on; methods that do not predict ``V_t`` skip
            ``"all"``.
        privileged: information beyond the observational data and the intervention *index*
            that the method uses (:data:`INTERVENTION_VALUE`, :data:`TRUE_GRAPH`).
    """

    predict: Callable[[TaskArrays, InterventionalDataset], GaussianMixture]
    label: str
    sets: tuple[str, ...] = MARGINAL_SET_NAMES
    privileged: tuple[str, ...] = field(default=())

    def __call__(self, tasks: TaskArrays, dataset: InterventionalDataset) -> GaussianMixture:
        return self.predict(tasks, dataset)

    def label_for(self, dataset: InterventionalDataset) -> str:
        """The table label on ``dataset``, with the paper's privileged-information mark.

        A method that uses the true graph is marked "(O)" (asymptotic oracle) on
        linear-Gaussian data, where it is correctly specified, and "(PI)" (privileged
        information) elsewhere; other methods keep :attr:`label`.
        """
        if TRUE_GRAPH not in self.privileged:
            return self.label
        meta = dataset.metadata
        oracle = meta.get("generator") == "linear" and meta.get("noise") == "gauss"
        return f"{self.label} ({'O' if oracle else 'PI'})"


def as_predictor(name: str, predictor) -> Predictor:
    """``predictor`` itself, or a plain callable ``predict(tasks, dataset)`` wrapped as a
    :class:`Predictor` labelled ``name`` (scored on its ``sets`` attribute, default all)."""
    if isinstance(predictor, Predictor):
        return predictor
    if callable(predictor):
        return Predictor(predictor, label=name, sets=tuple(getattr(predictor, "sets", MARGINAL_SET_NAMES)))
    raise TypeError(f"predictor {name!r} must be callable; got {type(predictor).__name__}")


def activa_predictor(fitted, seed: int = 0, batch_size: int = 256) -> Predictor:
    """ACTIVA's zero-shot prediction (it sees no intervention value, only its index).

    Args:
        fitted: a :class:`~activa_ppl.fitted.FittedActiva`.
        seed: seed of the latent draws of the predictive mixture.
        batch_size: tasks per forward pass.
    """

    def predict(tasks: TaskArrays, dataset: InterventionalDataset) -> GaussianMixture:
        parts = [
            fitted.predict_batch(tasks.observational[i:i + batch_size], tasks.targets[i:i + batch_size],
                                 tasks.intervention_index[i:i + batch_size],
                                 seed=jax.random.fold_in(jax.random.PRNGKey(seed), i),
                                 bucket=False)  # one N per evaluation set: padding would only cost
            for i in range(0, len(tasks.scm), batch_size)
        ]
        return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)

    return Predictor(predict, label="ACTIVA")


def _values(tasks: TaskArrays, dataset: InterventionalDataset) -> np.ndarray:
    return dataset.intervention_values[tasks.scm, tasks.query]


def gaussian_conditional_predictor() -> Predictor:
    """Gaussian Conditional baseline; uses the intervention value (privileged information)."""

    def predict(tasks, dataset):
        return gaussian_conditional_batch(tasks.observational, tasks.targets.astype(bool),
                                                    _values(tasks, dataset))

    return Predictor(predict, label="Gaussian Cond.", sets=BASELINE_SETS,
                     privileged=(INTERVENTION_VALUE,))


def linear_causal_predictor() -> Predictor:
    """Linear Causal baseline; uses the true graph and the intervention value (privileged)."""

    def predict(tasks, dataset):
        return linear_causal_batch(tasks.observational, dataset.adjacency[tasks.scm],
                                             tasks.targets.astype(bool), _values(tasks, dataset))

    return Predictor(predict, label="Linear Causal", sets=BASELINE_SETS,
                     privileged=(TRUE_GRAPH, INTERVENTION_VALUE))


def mace_tnp_predictor(fitted: FittedMaceTnp, batch_size: int = 256) -> Predictor:
    """MACE-TNP as a :class:`Predictor` (label ``"MACE-TNP"``).

    It reads the exact intervention values ``dataset.intervention_values[tasks.scm,
    tasks.query]`` (privileged information) and is scored on all marginals, ``"all"``
    (with ``V_t``) included. Tasks are predicted in chunks of ``batch_size``, the last one
    padded, so a whole split compiles once.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")

    def predict(tasks: TaskArrays, dataset: InterventionalDataset) -> GaussianMixture:
        values = np.asarray(dataset.intervention_values[tasks.scm, tasks.query], np.float32)
        num = len(tasks.scm)
        obs, targets = np.asarray(tasks.observational), np.asarray(tasks.targets)
        size = min(batch_size, num)
        parts = []
        for i in range(0, num, size):
            sl = slice(i, i + size)
            chunk = [obs[sl], targets[sl], values[sl]]
            pad = size - len(chunk[0])
            if pad:  # repeat the last task: same shapes, no recompilation
                chunk = [np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]) for a in chunk]
            mix = fitted.predict_batch(*chunk)
            parts.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[:size - pad], mix))
        return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)

    return Predictor(predict, label="MACE-TNP", sets=MARGINAL_SET_NAMES, privileged=(INTERVENTION_VALUE,))


def _activa_from_argument(model: str | None, seed: int = 0) -> Predictor:
    if not model:
        raise ValueError("method 'activa' needs a model: activa:PATH or activa:ZOO_NAME")
    return activa_predictor(resolve_model(model), seed=seed)


def _mace_tnp_from_argument(model: str | None, seed: int = 0) -> Predictor:
    if not model:
        raise ValueError("method 'mace-tnp' needs a model: mace-tnp:PATH (a folder saved by train_mace_tnp)")
    return mace_tnp_predictor(load_mace_tnp(model))  # deterministic: no seed needed


def _no_argument(factory: Callable[[], Predictor], name: str) -> Callable[..., Predictor]:
    def build(argument: str | None, seed: int = 0) -> Predictor:
        if argument:
            raise ValueError(f"method {name!r} takes no argument; got {name}:{argument}")
        return factory()

    return build


#: Method name → ``factory(argument, seed) -> Predictor``, used by :func:`predictor_from_spec`.
METHODS: dict[str, Callable[..., Predictor]] = {
    "activa": _activa_from_argument,
    "mace-tnp": _mace_tnp_from_argument,
    "gaussian-conditional": _no_argument(gaussian_conditional_predictor, "gaussian-conditional"),
    "linear-causal": _no_argument(linear_causal_predictor, "linear-causal"),
}


def register_method(name: str, factory: Callable[..., Predictor]) -> None:
    """Make ``name[:ARGUMENT]`` usable in :func:`predictor_from_spec` and ``activa evaluate``.

    Args:
        name: method name, lower case, no ``:`` or ``,``.
        factory: ``factory(argument: str | None, seed: int) -> Predictor``.
    """
    if not name or any(c in name for c in ":,") or name != name.lower():
        raise ValueError(f"method names are lower case without ':' or ','; got {name!r}")
    METHODS[name] = factory


def predictor_from_spec(spec: str, seed: int = 0) -> Predictor:
    """Build a predictor from ``NAME`` or ``NAME:ARGUMENT`` (e.g. ``activa:models/gauss2``).

    Raises:
        ValueError: unknown method (the message lists the known ones) or a bad argument.
    """
    name, _, argument = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in METHODS:
        known = ", ".join(sorted(METHODS))
        raise ValueError(f"unknown method {name!r} in {spec!r}; known methods: {known}")
    return METHODS[name](argument.strip() or None, seed=seed)
