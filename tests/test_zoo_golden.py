"""Every shipped model predicts what it predicted when ``tests/golden/zoo_predictions.npz`` was
recorded (``tests/golden/record_zoo_predictions.py``): refactors must not change behaviour.

Portable by default: the comparison allows float32 rounding differences (another CPU's SIMD
width or thread count changes reduction orders in the networks), ``rtol=1e-3`` and an absolute
floor of ``1e-4`` of each array's largest entry. Measured: with ``XLA_FLAGS="--xla_cpu_max_isa=AVX2
--xla_cpu_multi_thread_eigen=false"`` on the recording AMD EPYC (AVX-512), one of beta8's 480
means moved by 6e-4 relative (1.7e-4 absolute), every other value by less; a change of
behaviour moves values by orders of magnitude more. ``ACTIVA_GOLDEN_EXACT=1`` demands bit
identity, which holds on the machine (CPU kind, jax/jaxlib version, flags) that recorded the file.

The file was recorded with Flax's softmax attention. The default attention since issue 17
(``ActivaConfig(attention="deferred")``) computes the same function in another order: measured,
it moves the ACTIVA predictions by at most 8e-6 absolute (beta8's means, whose largest is 6.5),
well inside the portable tolerance. The exact check therefore runs the ACTIVA models with
``attention="softmax"`` (MACE-TNP's layers are the default ones: its entries are compared at
the portable tolerance there too).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

import activa_ppl as ap
from activa_ppl.baselines.mace_tnp import load_mace_tnp
from activa_ppl.model import Activa

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = np.load(Path(__file__).parent / "golden" / "zoo_predictions.npz")
NAMES = sorted({k.rsplit("/", 1)[0] for k in GOLDEN.files})
EXACT = os.environ.get("ACTIVA_GOLDEN_EXACT") == "1"


def test_golden_file_covers_every_shipped_model():
    shipped = {p.parent.relative_to(ROOT / "models").as_posix()
               for p in (ROOT / "models").glob("**/config.json")}
    assert shipped == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_shipped_model_predicts_as_recorded(name):
    g = {k: GOLDEN[f"{name}/{k}"] for k in ("obs", "targets", "weights", "locs", "covariances")}
    if name.startswith("baselines/"):
        mix = load_mace_tnp(ROOT / "models" / name).predict_batch(g["obs"], g["targets"],
                                                                GOLDEN[f"{name}/values"])
    else:
        fitted = ap.load(ROOT / "models" / name)
        if EXACT:  # the attention the file was recorded with (see the module docstring)
            fitted = dataclasses.replace(
                fitted, activa=Activa(dataclasses.replace(fitted.config, attention="softmax")))
        mix = fitted.predict_batch(g["obs"], g["targets"], GOLDEN[f"{name}/index"], seed=0)
    for k in ("weights", "locs", "covariances"):
        got, want = np.asarray(getattr(mix, k)), g[k]
        if EXACT and not name.startswith("baselines/"):
            np.testing.assert_array_equal(got, want, err_msg=f"{name} {k}")
        else:
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max(),
                                       err_msg=f"{name} {k}")
