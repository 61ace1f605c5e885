"""The pretrained model zoo: models trained on the paper's data sets, for zero-shot use.

A zoo model is a folder in the :mod:`activa_ppl.fitted` layout plus a ``card.md``. Models are
looked up, in order, in the folders of ``$ACTIVA_MODELS`` (``os.pathsep``-separated), in the
package data (``activa_ppl/models``, present in an installed wheel) and in ``models/`` of a
source checkout; the first folder holding a name wins (:func:`available_models`).

:func:`resolve_model` is the one place that turns a "model folder or zoo name" argument (``activa
predict --model``, ``activa evaluate --methods activa:MODEL``) into a model. Its lookup order:

1. an existing path, relative to the working directory (``./gauss2``, ``models/mine``, ``gauss2``);
2. a zoo name, as above.

So a folder ``./gauss2`` in the working directory shadows the zoo model ``gauss2``. When a bare
name (no path separator) is both, the folder is used and a :class:`ShadowedModelWarning` names
both (``activa`` prints it as ``activa: warning: …``); write ``./gauss2`` to mean the folder
without the warning, or the zoo model's path (``activa models`` prints it) to use that one.
:func:`load_pretrained` never looks in the working directory.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a model is loaded, so that listing models needs no JAX
    from activa_ppl.fitted import FittedActiva

__all__ = ["ShadowedModelWarning", "available_models", "load_pretrained", "locate_model", "model_dirs",
           "resolve_model"]


class ShadowedModelWarning(UserWarning):
    """A bare model name given to :func:`resolve_model` is both a path and a zoo model; the path won."""


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
    return _load_named(_zoo_folder(name), name)


def _zoo_folder(name: str) -> Path:
    """The folder of the zoo model ``name``, else the ``ValueError`` of :func:`load_pretrained`."""
    models = available_models()
    if name not in models:
        listed = ", ".join(sorted(models)) or "none are installed yet"
        raise ValueError(f"no pretrained model named {name!r}; available: {listed}")
    return models[name]


def _load_named(path: Path, name: str) -> FittedActiva:
    """:func:`activa_ppl.fitted.load`, with ``info["model_name"]`` set (warnings and ``repr`` name it)."""
    from activa_ppl.fitted import load

    fitted = load(path)
    fitted.info.setdefault("model_name", name)
    return fitted


def resolve_model(name_or_path: str | os.PathLike) -> FittedActiva:
    """Load a model given as a folder path or a zoo name.

    An existing path is loaded with :func:`activa_ppl.fitted.load` (a path takes precedence over
    a zoo model of the same name, with a :class:`ShadowedModelWarning` naming both when
    ``name_or_path`` is a bare name); anything else is looked up with :func:`load_pretrained`.

    Raises:
        CheckpointError: ``name_or_path`` exists but is not a readable saved ACTIVA model (no
            ``config.json``, another format, checksum mismatch, …; a ``ValueError``).
        ValueError: not an existing path and no zoo model of that name; the message lists the
            available ones.
    """
    return _load_named(*locate_model(name_or_path))


def locate_model(name_or_path: str | os.PathLike) -> tuple[Path, str]:
    """The folder and name of a model given as a folder path or a zoo name, by the lookup of
    :func:`resolve_model` (with its :class:`ShadowedModelWarning`), without loading it.

    Raises:
        ValueError: not an existing path and no zoo model of that name; the message lists the
            available ones.
    """
    path = Path(name_or_path)
    if not path.exists():
        return _zoo_folder(str(name_or_path)), str(name_or_path)
    text = os.fspath(name_or_path)
    zoo = available_models().get(text) if not any(s and s in text for s in (os.sep, os.altsep)) else None
    if zoo is not None and zoo.resolve() != path.resolve():
        warnings.warn(f"model {text!r}: using the folder {path.resolve()} in the working directory, "
                      f"not the pretrained model {text!r} ({zoo}); write ./{text} to mean the folder, "
                      f"or the pretrained model's path to use it", ShadowedModelWarning, stacklevel=3)
    return path, path.resolve().name
