"""Tests of saved-model folders (activa_ppl.model_io, through activa_ppl.load) against damaged
and hostile copies: property-based fuzzing of the loader. The table-driven cases (truncated,
flipped, foreign or unfitting files, pickle payloads, failed saves) are in tests/test_fitted.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import jax
import numpy as np
from hypothesis import event
from hypothesis import strategies as st

import activa_ppl as ap
from activa_ppl.checkpoint import CheckpointError, load_arrays, save_arrays
from helpers import DEEP_SMALL, FAST_SMALL, JSON_VALUES, fuzz, object_array, rewrite_npz


@st.composite
def model_mutations(draw):
    kind = draw(st.sampled_from(["config_field", "model_config_field", "config_text", "params_bytes",
                                 "params_array", "payload", "none"]))
    if kind in ("config_field", "model_config_field"):
        key = draw(st.sampled_from(["format", "format_version", "model_config", "info", "params_file",
                                    "params_sha256"] if kind == "config_field" else
                                   ["embed_dim", "num_heads", "beta", "covariance_eps", "num_interventions",
                                    "unknown_field"]))
        return kind, dict(key=key, value=draw(JSON_VALUES), drop=draw(st.booleans()))
    if kind == "config_text":
        return kind, dict(text=draw(st.sampled_from(["", "{", "[" * 5000, "null", "[]"]) | st.binary(max_size=30)))
    if kind == "params_bytes":
        return kind, dict(pos=draw(st.floats(0, 1)), truncate=draw(st.booleans()), fix_sha=draw(st.booleans()))
    if kind == "params_array":
        return kind, dict(how=draw(st.sampled_from(["nan", "inf", "huge", "shape", "dtype", "drop", "extra"])),
                          index=draw(st.integers(0, 10**6)))
    if kind == "payload":  # an object array in place of any parameter array
        return kind, dict(index=draw(st.integers(0, 10**6)))
    return kind, {}


def _model_property(saved_model, mutation):
    kind, spec = mutation
    with tempfile.TemporaryDirectory() as tmp:
        folder, marker = Path(tmp) / "model", Path(tmp) / "PWNED"
        shutil.copytree(saved_model, folder)
        config_path = folder / "config.json"
        config = json.loads(config_path.read_text())
        params_path = folder / config["params_file"]
        if kind == "config_field":
            config.pop(spec["key"], None) if spec["drop"] else config.__setitem__(spec["key"], spec["value"])
        elif kind == "model_config_field":
            mc = config["model_config"]
            mc.pop(spec["key"], None) if spec["drop"] else mc.__setitem__(spec["key"], spec["value"])
        elif kind == "params_bytes":
            raw = params_path.read_bytes()
            pos = int(spec["pos"] * (len(raw) - 1))
            raw = raw[:pos] if spec["truncate"] else raw[:pos] + bytes([raw[pos] ^ 0x21]) + raw[pos + 1:]
            params_path.write_bytes(raw)
        elif kind in ("params_array", "payload"):
            arrays, meta = load_arrays(params_path)
            name = sorted(arrays)[spec.get("index", 0) % len(arrays)]
            if kind == "payload":
                rewrite_npz(params_path, {**arrays, name: object_array(marker)})
            else:
                how, a = spec["how"], arrays[name]
                arrays[name] = {"nan": np.full_like(a, np.nan), "inf": np.full_like(a, np.inf),
                                "huge": np.full_like(a, 3e38), "shape": np.zeros(a.shape + (2,), a.dtype),
                                "dtype": a.astype(np.float64), "drop": None, "extra": a}[how]
                if how == "drop":
                    del arrays[name]
                if how == "extra":
                    arrays[name + "_extra"] = a
                save_arrays(params_path, arrays, meta)
        if kind in ("params_bytes", "params_array", "payload") and spec.get("fix_sha", True):
            config["params_sha256"] = hashlib.sha256(params_path.read_bytes()).hexdigest()
        if kind == "config_text":
            text = spec["text"]
            config_path.write_bytes(text if isinstance(text, bytes) else text.encode())
        else:
            config_path.write_text(json.dumps(config))
        try:
            fitted = ap.load(folder)
        except CheckpointError:
            assert kind != "none"
            event(f"{kind}: refused")
        except ValueError as e:
            raise AssertionError(f"ValueError that is not a CheckpointError: {e}") from e
        else:
            event(f"{kind}: loaded")
            assert kind in ("none", "config_field", "model_config_field", "params_array", "params_bytes")
            leaves = jax.tree_util.tree_leaves(fitted.params)
            assert all(np.isfinite(np.asarray(x)).all() for x in leaves)
            assert isinstance(fitted.info, dict)
        assert not marker.exists(), "a pickle payload was executed"


test_fuzz_model_loader, test_fuzz_model_loader_deep = fuzz(
    FAST_SMALL, DEEP_SMALL, mutation=model_mutations())(_model_property)
