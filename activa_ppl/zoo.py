"""The pretrained model zoo: models trained on the paper's data sets, for zero-shot use.

A zoo model is a folder in the :mod:`activa_ppl.fitted` layout plus a ``card.md``. Models are
looked up, in order, in the folders of ``$ACTIVA_MODELS`` (``os.pathsep``-separated), in the
package data (``activa_ppl/models``, present in an installed wheel) and in ``models/`` of a
source checkout.

:func:`resolve_model` is the one place that turns a "model folder or zoo name" argument (``activa
predict --model``, ``activa evaluate --methods activa:MODEL``) into a model.
"""

from __future__ import annotations

import os
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a model is loaded, so that listing models needs no JAX
    from activa_ppl.fitted import FittedActiva

__all__ = ["available_models", "load_pretrained", "model_dirs", "resolve_model"]


def model_dirs() -> list[Path]:
    """The folders searched for zoo models, in order."""
    dirs = [Path(p) for p in os.environ.get("ACTIVA_MODELS", "").split(os.pathsep) if p]
    package = Path(__file__).resolve().parent
    dirs += [package / "models", package.parent / "models"]
    return [d for d in dirs if d.is_dir()]


def available_models() -> dict[str, Path]:
    """Name → folder of every model found (the first folder wins for a repeated name)."""
    found: dict[str, Path] = {}
    for root in model_dirs():
        for child in sorted(root.iterdir()):
            if (child / "config.json").is_file():
                found.setdefault(child.name, child)
    return found


def load_pretrained(name: str) -> FittedActiva:
    """Load the zoo model ``name`` (e.g. ``"gauss2"``).

    Raises:
        ValueError: no model of that name; the message lists the available ones.
    """
    models = available_models()
    if name not in models:
        listed = ", ".join(sorted(models)) or "none are installed yet"
        raise ValueError(f"no pretrained model named {name!r}; available: {listed}")
    return _load_named(models[name], name)


def _load_named(path: Path, name: str) -> FittedActiva:
    """:func:`activa_ppl.fitted.load`, with ``info["model_name"]`` set (warnings and ``repr`` name it)."""
    from activa_ppl.fitted import load

    fitted = load(path)
    fitted.info.setdefault("model_name", name)
    return fitted


def resolve_model(name_or_path: str | os.PathLike) -> FittedActiva:
    """Load a model given as a folder path or a zoo name.

    An existing path is loaded with :func:`activa_ppl.fitted.load` (a path takes precedence over
    a zoo model of the same name); anything else is looked up with :func:`load_pretrained`.

    Raises:
        CheckpointError: ``name_or_path`` exists but is not a readable saved ACTIVA model (no
            ``config.json``, another format, checksum mismatch, …; a ``ValueError``).
        ValueError: not an existing path and no zoo model of that name; the message lists the
            available ones.
    """
    if Path(name_or_path).exists():
        return _load_named(Path(name_or_path), Path(name_or_path).resolve().name)
    return load_pretrained(str(name_or_path))
