"""activa_ppl: amortized estimation of post-interventional distributions (ACTIVA) on NumPyro.

Given an observational dataset ``(N, d)`` and an intervention query (target variables and the
index of the intervention value), ACTIVA predicts the full joint distribution after the
intervention as a :class:`GaussianMixture`, in one forward pass.

>>> import activa_ppl as ap
>>> data = ap.simulate.linear_dataset(num_scms=300, num_vars=2, noise="gauss", seed=0)
>>> model = ap.Activa(ap.ActivaConfig.preset("small"))
>>> fitted = ap.train(model, data, num_steps=200, seed=0)          # doctest: +SKIP
>>> mix = fitted.predict(obs, target=0, intervention=0, seed=0)     # doctest: +SKIP
"""

from typing import TYPE_CHECKING

from activa_ppl._version import __version__

# Names are imported on first use (PEP 562), so that ``import activa_ppl`` and the ``activa``
# command start without importing JAX; the imports below are what they resolve to (and what
# type checkers and the API docs read).
if TYPE_CHECKING:
    from activa_ppl import baselines, evaluation, handlers, metrics, predictors, report, simulate
    from activa_ppl.arviz_io import to_inference_data
    from activa_ppl.baselines.mace_tnp import FittedMaceTnp, MaceTnpConfig, load_mace_tnp, train_mace_tnp
    from activa_ppl.checkpoint import CheckpointError
    from activa_ppl.config import ActivaConfig, TrainConfig
    from activa_ppl.data import InterventionalDataset, TaskArrays, load_dataset
    from activa_ppl.fitted import FittedActiva, load
    from activa_ppl.handlers import beta_kl
    from activa_ppl.interventions import intervention_representation
    from activa_ppl.loop import TrainingDiverged
    from activa_ppl.mixture import GaussianMixture
    from activa_ppl.model import Activa, predictive_mixture
    from activa_ppl.training import train
    from activa_ppl.zoo import available_models, load_pretrained

_SUBMODULES = {"baselines", "evaluation", "handlers", "metrics", "predictors", "report", "simulate"}
_LOCATIONS = {
    "to_inference_data": "arviz_io",
    "FittedMaceTnp": "baselines.mace_tnp", "MaceTnpConfig": "baselines.mace_tnp",
    "load_mace_tnp": "baselines.mace_tnp", "train_mace_tnp": "baselines.mace_tnp",
    "CheckpointError": "checkpoint", "ActivaConfig": "config", "TrainConfig": "config",
    "InterventionalDataset": "data", "TaskArrays": "data", "load_dataset": "data",
    "FittedActiva": "fitted", "load": "fitted", "beta_kl": "handlers",
    "intervention_representation": "interventions", "TrainingDiverged": "loop",
    "GaussianMixture": "mixture", "Activa": "model", "predictive_mixture": "model",
    "train": "training", "available_models": "zoo", "load_pretrained": "zoo",
}


def __getattr__(name: str):
    """Import a public name on first access (module-level ``__getattr__``, PEP 562)."""
    import importlib

    if name in _SUBMODULES:
        value = importlib.import_module(f"activa_ppl.{name}")
    elif name in _LOCATIONS:
        value = getattr(importlib.import_module(f"activa_ppl.{_LOCATIONS[name]}"), name)
    else:
        raise AttributeError(f"module 'activa_ppl' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    """The public names, imported or not."""
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "__version__",
    "Activa",
    "ActivaConfig",
    "CheckpointError",
    "FittedActiva",
    "FittedMaceTnp",
    "GaussianMixture",
    "InterventionalDataset",
    "MaceTnpConfig",
    "TaskArrays",
    "TrainConfig",
    "TrainingDiverged",
    "available_models",
    "baselines",
    "beta_kl",
    "evaluation",
    "handlers",
    "intervention_representation",
    "load",
    "load_dataset",
    "load_mace_tnp",
    "load_pretrained",
    "predictors",
    "metrics",
    "predictive_mixture",
    "report",
    "simulate",
    "train",
    "to_inference_data",
    "train_mace_tnp",
]
