"""The public surface: the names the issue tracker, docs and users call, each documented."""

import importlib
import inspect
import pkgutil

import pytest

import activa_ppl as ap

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(ap.__path__, prefix="activa_ppl.") if not m.name.endswith("__main__")
)


def test_top_level_names():
    expected = {"Activa", "ActivaConfig", "TrainConfig", "GaussianMixture", "InterventionalDataset",
                "train", "load", "load_pretrained", "simulate", "handlers", "beta_kl", "baselines",
                "metrics", "FittedActiva", "CheckpointError"}
    assert expected <= set(ap.__all__)
    for name in ap.__all__:
        assert hasattr(ap, name), name
    assert callable(ap.simulate.linear_dataset)


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_name_is_documented(module_name):
    module = importlib.import_module(module_name)
    assert module.__doc__, f"{module_name} has no module docstring"
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{module_name}.{name} has no docstring"
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and inspect.isfunction(member):
                    assert inspect.getdoc(member), f"{module_name}.{name}.{attr} has no docstring"


def test_load_pretrained_reports_what_exists():
    with pytest.raises(ValueError, match="no pretrained model named 'no-such-model'"):
        ap.load_pretrained("no-such-model")
