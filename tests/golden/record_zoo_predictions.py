"""Record every shipped model's predictions on fixed inputs (``zoo_predictions.npz``).

``tests/test_zoo_golden.py`` compares the shipped models' current predictions against these
values, so a refactor that must not change behaviour is checked against what the models
predicted before it. Rerun only when a shipped model is retrained on purpose:

    python tests/golden/record_zoo_predictions.py

Inputs are stored beside the outputs (the test does not depend on any generator). Per model:
``<name>/obs (Q, N, d)``, ``<name>/targets (Q, d)``, ``<name>/index (Q,)`` (ACTIVA) or
``<name>/values (Q,)`` (MACE-TNP), and the mixture's ``weights``, ``locs``, ``covariances``.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OUT = HERE / "zoo_predictions.npz"
NUM_QUERIES, NUM_SAMPLES = 3, 40


def inputs(seed: int, num_vars: int, positive: bool):
    """``(obs (Q, N, d), targets (Q, d))``: fixed datasets, targets cycling over the variables."""
    rng = np.random.default_rng(seed)
    if positive:  # expression-like (SERGIO)
        obs = rng.gamma(2.0, 2.0, size=(NUM_QUERIES, NUM_SAMPLES, num_vars))
    else:
        obs = rng.normal(size=(NUM_QUERIES, NUM_SAMPLES, num_vars)) * rng.uniform(0.5, 3, num_vars)
    targets = np.eye(num_vars)[np.arange(NUM_QUERIES) % num_vars]
    return obs.astype(np.float32), targets.astype(np.float32)


def predictions(root: Path = ROOT) -> dict[str, np.ndarray]:
    import dataclasses

    import activa_ppl as ap
    from activa_ppl.baselines.mace_tnp import load_mace_tnp
    from activa_ppl.model import Activa

    out: dict[str, np.ndarray] = {}
    for i, config in enumerate(sorted((root / "models").glob("*/config.json"))):
        name = config.parent.name
        fitted = ap.load(config.parent)
        # Flax's softmax attention, as tests/test_zoo_golden.py's exact check runs it
        fitted = dataclasses.replace(fitted, activa=Activa(dataclasses.replace(fitted.config, attention="softmax")))
        d = int(fitted.info["dataset"].get("num_vars", fitted.info["dataset"].get("num_genes", 2)))
        obs, targets = inputs(i, d, positive="sergio" in name)
        index = np.zeros(NUM_QUERIES, np.int32)
        mix = fitted.predict_batch(obs, targets, index, seed=0)
        out.update({f"{name}/obs": obs, f"{name}/targets": targets, f"{name}/index": index})
        out.update({f"{name}/{k}": np.asarray(getattr(mix, k)) for k in ("weights", "locs", "covariances")})
    for i, config in enumerate(sorted((root / "models" / "baselines").glob("*/config.json"))):
        name = "baselines/" + config.parent.name
        fitted = load_mace_tnp(config.parent)
        obs, targets = inputs(100 + i, fitted.config.num_vars, positive="sergio" in name)
        values = np.full(NUM_QUERIES, 5.0 if "sergio" not in name else 0.0, np.float32)
        mix = fitted.predict_batch(obs, targets, values)
        out.update({f"{name}/obs": obs, f"{name}/targets": targets, f"{name}/values": values})
        out.update({f"{name}/{k}": np.asarray(getattr(mix, k)) for k in ("weights", "locs", "covariances")})
    return out


if __name__ == "__main__":
    values = predictions()
    np.savez_compressed(OUT, **values)
    (HERE / "zoo_predictions.json").write_text(json.dumps(
        {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
         "arrays": sorted(values)}, indent=1) + "\n")
    print(f"wrote {OUT} ({len(values)} arrays)")
