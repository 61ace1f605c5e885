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
import pytest
from hypothesis import event
from hypothesis import strategies as st

import activa_ppl as ap
from activa_ppl.checkpoint import CheckpointError, load_arrays, save_arrays
from helpers import (DEEP_SMALL, FAST_SMALL, JSON_VALUES, fuzz, object_array, rewrite_npz, save_concurrently,
                     write_zip_bomb)


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


# ============================================================ saves: concurrency and ownership ====
def _bumped(fitted, k: float):
    return ap.FittedActiva(fitted.activa, jax.tree_util.tree_map(lambda x: x + k, fitted.params), {"k": k})


def _params_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("params-*.npz"))


def test_concurrent_saves_into_one_folder_leave_one_whole_model(tiny_fitted, tmp_path):
    """Two threads saving 5 times each into one folder: no save fails, and the folder ends
    holding exactly the model of the last save (one parameter file, no staging files)."""
    folder, models = tmp_path / "model", {k: _bumped(tiny_fitted, k) for k in (1.0, 2.0)}
    assert save_concurrently(models.values(), folder) == []
    loaded = ap.load(folder)
    winner = models[loaded.info["k"]]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
               zip(jax.tree_util.tree_leaves(loaded.params), jax.tree_util.tree_leaves(winner.params)))
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", *_params_files(folder)]
    assert len(_params_files(folder)) == 1


_SAVER = """
import sys, jax, activa_ppl as ap
fitted = ap.FittedActiva(ap.Activa(ap.ActivaConfig.preset("tiny")), None, {{}})
params = fitted.activa.init_params(jax.random.PRNGKey(0))
for i in range({saves}):
    k = float(sys.argv[1]) * 100 + i
    ap.FittedActiva(fitted.activa, jax.tree_util.tree_map(lambda x: x + k, params), {{"k": k}}).save(sys.argv[2])
"""


@pytest.mark.slow
def test_concurrent_saves_from_processes(tmp_path):
    """The issue's reproduction: two processes each saving 7 times into one folder, 4 trials;
    every save succeeds and the folder loads whole, its parameters those its config names."""
    import subprocess
    import sys

    script = _SAVER.format(saves=7)
    for trial in range(4):
        folder = tmp_path / f"m{trial}"
        procs = [subprocess.Popen([sys.executable, "-c", script, str(w), str(folder)], stderr=subprocess.PIPE)
                 for w in (1, 2)]
        for p in procs:
            assert p.wait(timeout=600) == 0, p.stderr.read().decode()[-2000:]
        loaded = ap.load(folder)
        assert loaded.info["k"] in (106.0, 206.0)
        assert len(_params_files(folder)) == 1


def test_save_removes_only_its_own_parameter_files(tiny_fitted, tmp_path):
    """`params-mybackup.npz` and a foreign `params-<12 hex>.npz` survive; the replaced model's
    file and one left by a killed save (content-addressed) are removed."""
    folder = tiny_fitted.save(tmp_path / "model")
    first = _params_files(folder)[0]
    (folder / "params-mybackup.npz").write_bytes((folder / first).read_bytes())
    (folder / "params-0123456789ab.npz").write_bytes(b"a user's file")
    orphan = _bumped(tiny_fitted, 3.0).save(tmp_path / "other")
    orphan_name = _params_files(orphan)[0]
    shutil.copy(orphan / orphan_name, folder / orphan_name)  # as a killed save would leave it
    (folder / ".params-x1y2z3.staging").write_bytes(b"half")  # a killed writer's staging file
    _bumped(tiny_fitted, 1.0).save(folder)
    names = sorted(p.name for p in folder.iterdir())
    assert first not in names and orphan_name not in names and ".params-x1y2z3.staging" not in names
    assert "params-mybackup.npz" in names and "params-0123456789ab.npz" in names
    assert ap.load(folder).info == {"k": 1.0}


def test_saved_files_follow_the_umask(tiny_fitted, tmp_path):
    import os

    old = os.umask(0o022)
    try:
        folder = tiny_fitted.save(tmp_path / "model")
    finally:
        os.umask(old)
    for p in folder.iterdir():
        assert p.stat().st_mode & 0o777 == 0o644, p.name


def test_params_link_leaving_the_folder_refused(saved_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(saved_model, folder)
    params = folder / _params_files(folder)[0]
    outside = tmp_path / "elsewhere.npz"
    shutil.move(params, outside)
    params.symlink_to(outside)
    with pytest.raises(CheckpointError, match="outside the model folder"):
        ap.load(folder)


# ============================================================== bounded memory on untrusted files ====
def _bomb_params(folder: Path, gib: float = 1.0) -> None:
    """Replace one parameter array by a deflated all-zero array of ``gib`` GiB (a few MB on disk),
    checksum and config updated as an attacker would."""
    import zipfile

    params = folder / _params_files(folder)[0]
    arrays, meta = load_arrays(params)
    name = sorted(arrays)[0]
    save_arrays(params, {k: v for k, v in arrays.items() if k != name}, meta)
    with zipfile.ZipFile(params, "a") as zf:
        write_zip_bomb(zf, name, (int(gib * 2**28),))
    config = json.loads((folder / "config.json").read_text())
    config["params_sha256"] = hashlib.sha256(params.read_bytes()).hexdigest()
    (folder / "config.json").write_text(json.dumps(config))


def test_zip_bomb_in_params_refused_before_allocating(saved_model, tmp_path):
    """A parameter file holding a deflated 1 GiB member is refused from its header, with the
    peak memory of the load far below the bomb's size."""
    import resource

    folder = tmp_path / "model"
    shutil.copytree(saved_model, folder)
    _bomb_params(folder, gib=1.0)
    assert folder.joinpath(_params_files(folder)[0]).stat().st_size < 8 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="zip bomb|do not fit"):
        ap.load(folder)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 256 << 10  # < 256 MiB, while the bomb declares 1 GiB


@pytest.mark.parametrize("damage, message", [
    ("big_endian", "do not fit"),
    ("huge_value", "magnitude above"),
    ("long_int", "not valid JSON"),
    ("embed_overflow", "invalid model_config|do not fit"),
    ("prior_variance", "invalid model_config|magnitude"),
])
def test_forged_model_folders_refused_naming_the_file(saved_model, tmp_path, damage, message):
    folder = tmp_path / "model"
    shutil.copytree(saved_model, folder)
    config_path, params = folder / "config.json", folder / _params_files(folder)[0]
    config = json.loads(config_path.read_text())
    text = None
    if damage in ("big_endian", "huge_value"):
        arrays, meta = load_arrays(params)
        name = sorted(arrays)[0]
        arrays[name] = (arrays[name].astype(">f4") if damage == "big_endian"
                        else np.full_like(arrays[name], 3e37))
        save_arrays(params, arrays, meta)
        config["params_sha256"] = hashlib.sha256(params.read_bytes()).hexdigest()
    elif damage == "long_int":
        text = json.dumps(config).replace('"info": {', '"info": {"n": ' + "9" * 5000 + ", ", 1)
    elif damage == "embed_overflow":
        config["model_config"]["embed_dim"] = 2**40
    else:
        config["model_config"]["prior_variance"] = 1e300
    config_path.write_text(text or json.dumps(config))
    with pytest.raises(CheckpointError, match=message) as info:
        ap.load(folder)
    assert str(folder) in str(info.value)
