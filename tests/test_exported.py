"""activa_ppl.exported: the traced prediction stored with jax.export answers as FittedActiva.predict
does, on the first (traced and stored) and a later (read back, model never loaded) call; damaged
or mismatched entries are traced again; off unless the cache is on."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from activa_ppl import disk_memo, exported
from activa_ppl.exported import ExportedActiva, open_model
from activa_ppl.fitted import FittedActiva
from activa_ppl.model_info import OutOfTrainingRangeWarning

pytest.importorskip("flatbuffers")  # jax.export's serialization


@pytest.fixture
def memo(tmp_path):
    """The cache on in a fresh folder for one test (nothing remembered in this process)."""
    exported._LOADED.clear()
    yield disk_memo.enable(tmp_path)
    disk_memo.enable(None)
    exported._LOADED.clear()


@pytest.fixture(scope="module")
def model_dir(saved_model, tmp_path_factory):
    """A copy of the saved tiny model that tests may rewrite."""
    return shutil.copytree(saved_model, tmp_path_factory.mktemp("exported") / "tiny")


def _arrays(mix):
    return [np.asarray(a) for a in (mix.weights, mix.locs, mix.covariances)]


def _assert_same(got, want):
    assert (got.variable_names, got.intervention) == (want.variable_names, want.intervention)
    for a, b in zip(_arrays(got), _arrays(want)):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def _entries(folder):
    return sorted(folder.glob(f"{exported.ENTRY_KIND}-*.jaxexport"))


@pytest.mark.parametrize("num_samples", [10, 16])  # padded to 16 with a mask; a bucket size, no mask
def test_stored_prediction_equals_fitted_predict(memo, model_dir, tiny_fitted, rng, num_samples):
    obs = rng.normal(size=(num_samples, 2))
    want = tiny_fitted.predict(obs, target=1, intervention=0, seed=3)
    first = ExportedActiva(model_dir, "tiny")
    _assert_same(first.predict(obs, target=1, intervention=0, seed=3), want)  # traced and stored
    assert first._fitted is not None and len(_entries(memo)) == 1
    exported._LOADED.clear()  # as a new process: read back from the file
    second = ExportedActiva(model_dir, "tiny")
    got = second.predict(obs, target=1, intervention=0, seed=3)
    assert second._fitted is None  # answered without loading (building) the model
    _assert_same(got, want)
    assert len(_entries(memo)) == 1
    _assert_same(second.predict(obs, target=1, intervention=0, seed=4), tiny_fitted.predict(obs, 1, 0, seed=4))


def test_damaged_or_mismatched_entries_are_traced_again(memo, model_dir, tiny_fitted, rng):
    obs = rng.normal(size=(12, 2))
    want = tiny_fitted.predict(obs, target=0, seed=1)
    first = ExportedActiva(model_dir, "tiny")
    first.predict(obs, target=0, seed=1)
    (entry,) = _entries(memo)
    good = entry.read_bytes()
    key = json.loads(good.split(b"\n", 3)[2])
    other_key = {**key, "num_latents": key["num_latents"] + 1}
    payload = good.split(b"\n", 3)[3]
    damaged = {
        "flipped byte": good[:-100] + bytes([good[-100] ^ 1]) + good[-99:],
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "another key's entry": exported._header(other_key, payload) + payload,
        "garbage with a valid header": exported._header(key, b"x" * 50) + b"x" * 50,
        "another format": b"something else\n" + good,
    }
    exported._LOADED.clear()
    assert exported._read_entry(entry, key) is not None
    for name, data in damaged.items():
        exported._LOADED.clear()
        entry.write_bytes(data)
        assert exported._read_entry(entry, key) is None, name
    # end to end: the damaged entry is not used, the answer is the model's, the entry rewritten
    exported._LOADED.clear()
    entry.write_bytes(damaged["flipped byte"])
    model = ExportedActiva(model_dir, "tiny")
    _assert_same(model.predict(obs, target=0, seed=1), want)
    assert model._fitted is not None  # the model was loaded and traced again
    exported._LOADED.clear()
    assert exported._read_entry(entry, key) is not None  # written again, readable


def test_without_serialization_the_model_answers(memo, model_dir, tiny_fitted, rng, monkeypatch):
    monkeypatch.setattr(exported, "_export", lambda *args: None)  # e.g. flatbuffers missing
    obs = rng.normal(size=(12, 2))
    model = ExportedActiva(model_dir, "tiny")
    _assert_same(model.predict(obs, target=0, seed=2), tiny_fitted.predict(obs, target=0, seed=2))
    assert not _entries(memo)


def test_off_in_library_use_and_unreadable_folders_load_normally(model_dir, tmp_path):
    assert disk_memo.folder() is None
    assert isinstance(open_model(model_dir), FittedActiva)
    disk_memo.enable(tmp_path)
    try:
        assert isinstance(open_model(model_dir), ExportedActiva)
        broken = shutil.copytree(model_dir, tmp_path / "broken")
        (broken / "config.json").write_text("{not json")
        with pytest.raises(ValueError, match="not valid JSON"):  # the error of the normal path
            open_model(broken)
    finally:
        disk_memo.enable(None)


def test_checks_and_warnings_are_those_of_fitted_predict(memo, model_dir, rng):
    model = ExportedActiva(model_dir, "tiny")
    with pytest.raises(ValueError, match="target"):
        model.predict(rng.normal(size=(12, 2)), target="nope")
    with pytest.raises(ValueError, match="obs"):
        model.predict(np.full((12, 2), np.nan), target=0)
    assert not _entries(memo)


def test_out_of_range_warning_once_on_both_paths(memo, tiny_activa, tiny_params, tiny_fitted, tmp_path, rng):
    ranges = {"num_vars": [2, 2], "num_samples": [10, 10], "mean": [-0.5, 0.5], "sd": [0.5, 2.0]}
    folder = FittedActiva(activa=tiny_activa, params=tiny_params, info={"training_data": ranges}).save(tmp_path / "m")
    obs = rng.normal(size=(12, 2)) + 50.0
    for path in ("traced and stored", "read back"):
        exported._LOADED.clear()
        with pytest.warns(OutOfTrainingRangeWarning, match="model ranged") as caught:
            mix = ExportedActiva(folder, "ranged").predict(obs, target=0, seed=0)
        assert len([w for w in caught if w.category is OutOfTrainingRangeWarning]) == 1, path
        _assert_same(mix, tiny_fitted.predict(obs, target=0, seed=0))
