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

from activa_ppl import baselines, evaluation, handlers, metrics, predictors, report, simulate
from activa_ppl._version import __version__
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
    "train_mace_tnp",
]
