"""Tests of the on-disk dataset format (activa_ppl.dataset_io, through
activa_ppl.data.load_dataset) against damaged and hostile folders: property-based fuzzing of
the loader, pickle payloads in the data file, the commit point of a save (failed and killed
saves, concurrent saves), zip bombs and forged manifests.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event
from hypothesis import strategies as st

from activa_ppl.data import load_dataset
from helpers import (DEEP, FAST, JSON_VALUES, cast, dataset_file, float_array, fuzz, object_array, rewrite_npz,
                     save_concurrently, small_dataset, values_ok, write_zip_bomb)


def test_payload_is_live(tmp_path):
    """Control for the payload tests: numpy *would* run it if allowed to unpickle."""
    marker = tmp_path / "ran"
    np.savez(tmp_path / "p.npz", x=object_array(marker))
    with np.load(tmp_path / "p.npz", allow_pickle=True) as npz:
        npz["x"]
    assert marker.exists()


@st.composite
def dataset_mutations(draw):
    """A function that damages a copy of a saved dataset folder, and its description."""
    kind = draw(st.sampled_from(["manifest_field", "array_spec", "manifest_text", "data_bytes",
                                 "data_array", "extra_member", "payload", "none"]))
    if kind == "manifest_field":
        key = draw(st.sampled_from(["format", "format_version", "sha256", "arrays", "num_interventions",
                                    "variable_names", "metadata", "extras", "num_scms"]))
        value = draw(JSON_VALUES)
        drop = draw(st.booleans())
        return kind, dict(key=key, value=value, drop=drop)
    if kind == "array_spec":
        key = draw(st.sampled_from(["observational", "targets", "split", "extra/w"]))
        return kind, dict(key=key, field=draw(st.sampled_from(["shape", "dtype"])), value=draw(JSON_VALUES))
    if kind == "manifest_text":
        return kind, dict(text=draw(st.sampled_from(["", "{", "[" * 5000, "null", "\xff", '{"format": 1}'])
                                    | st.binary(max_size=40)))
    if kind == "data_bytes":
        return kind, dict(how=draw(st.sampled_from(["truncate", "flip", "random", "empty"])),
                          pos=draw(st.floats(0, 1)), blob=draw(st.binary(max_size=64)),
                          fix_sha=draw(st.booleans()))
    if kind == "data_array":
        name = draw(st.sampled_from(["observational", "interventional", "targets", "intervention_index",
                                     "intervention_values", "adjacency", "split", "extra/w"]))
        shape = draw(st.sampled_from([(4, 3, 2), (4, 2, 3, 2), (4, 2, 2), (4, 2), (4,), (), (5, 3, 2), (0,)]))
        array, _ = cast(draw, float_array(draw, shape))
        if array.dtype.kind == "U" or array.dtype.kind == "O":
            array = np.zeros(shape, np.float32)
        return kind, dict(name=name, array=array)
    if kind == "extra_member":
        return kind, dict(member=draw(st.sampled_from(["evil.pkl", "observational.npy", "dir/", "x.npy"])),
                          blob=draw(st.binary(max_size=32)))
    if kind == "payload":  # an object array in place of any stored array
        return kind, dict(name=draw(st.sampled_from(["observational", "interventional", "targets", "split",
                                                     "adjacency", "extra/w"])),
                          size=draw(st.integers(1, 4)))
    return kind, {}


def _mutate_dataset(folder: Path, kind: str, spec: dict, marker: Path) -> None:
    manifest_path, data_path = folder / "manifest.json", dataset_file(folder)
    manifest = json.loads(manifest_path.read_text())

    def fix_sha():
        manifest["sha256"] = hashlib.sha256(data_path.read_bytes()).hexdigest()

    if kind == "manifest_field":
        if spec["drop"]:
            manifest.pop(spec["key"], None)
        else:
            manifest[spec["key"]] = spec["value"]
    elif kind == "array_spec":
        manifest["arrays"][spec["key"]][spec["field"]] = spec["value"]
    elif kind == "manifest_text":
        text = spec["text"]
        manifest_path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        return
    elif kind == "data_bytes":
        raw = data_path.read_bytes()
        pos = int(spec["pos"] * (len(raw) - 1))
        raw = {"truncate": raw[:pos], "flip": raw[:pos] + bytes([raw[pos] ^ 0x5A]) + raw[pos + 1:],
               "random": spec["blob"], "empty": b""}[spec["how"]]
        data_path.write_bytes(raw)
        if spec["fix_sha"]:
            fix_sha()
    elif kind in ("data_array", "extra_member", "payload"):
        with np.load(data_path) as npz:
            arrays = {k: npz[k] for k in npz.files}
        members = {}
        if kind == "data_array":
            arrays[spec["name"]] = spec["array"]
        elif kind == "extra_member":
            members[spec["member"]] = spec["blob"]
        else:
            arrays[spec.get("name", "observational")] = object_array(marker, (spec.get("size", 4),))
        rewrite_npz(data_path, arrays, members)
        manifest["arrays"] = {k: {"shape": list(np.shape(v)), "dtype": np.asarray(v).dtype.str}
                              for k, v in arrays.items()}
        fix_sha()
    manifest_path.write_text(json.dumps(manifest))


def _dataset_property(saved_dataset, mutation):
    kind, spec = mutation
    with tempfile.TemporaryDirectory() as tmp:
        folder, marker = Path(tmp) / "ds", Path(tmp) / "PWNED"
        shutil.copytree(saved_dataset, folder)
        _mutate_dataset(folder, kind, spec, marker)
        try:
            data = load_dataset(folder)
        except ValueError:
            assert kind != "none"
            event(f"{kind}: refused")
        else:  # accepted: then it is a sound dataset
            event(f"{kind}: loaded")
            assert kind not in ("extra_member", "payload", "manifest_text")
            assert kind != "data_bytes" or spec["fix_sha"]  # a flip in zip metadata can be harmless
            for name in ("observational", "interventional", "intervention_values"):
                array = getattr(data, name)
                assert array.dtype == np.float32 and values_ok(array)
            assert data.targets.dtype == np.bool_ and data.split.dtype == np.int8
            assert len(data.variable_names) == data.num_vars
        assert not marker.exists(), "a pickle payload was executed"


test_fuzz_dataset_loader, test_fuzz_dataset_loader_deep = fuzz(
    FAST, DEEP, mutation=dataset_mutations())(_dataset_property)


def test_pickle_payload_in_dataset_folder_refused(saved_dataset, tmp_path):
    """An attacker controlling both files (checksum and manifest updated) gets nowhere."""
    for where in ("core", "extra"):
        folder, marker = tmp_path / where, tmp_path / f"PWNED-{where}"
        shutil.copytree(saved_dataset, folder)
        if where == "core":
            _mutate_dataset(folder, "payload", {}, marker)
        else:
            with np.load(dataset_file(folder)) as npz:
                arrays = {k: npz[k] for k in npz.files}
            arrays["extra/evil"] = object_array(marker, (4,))
            rewrite_npz(dataset_file(folder), arrays)
            manifest = json.loads((folder / "manifest.json").read_text())
            manifest["arrays"]["extra/evil"] = {"shape": [4], "dtype": "|O"}
            manifest["extras"].append("evil")
            manifest["sha256"] = hashlib.sha256(dataset_file(folder).read_bytes()).hexdigest()
            (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match="pickled objects are never loaded"):
            load_dataset(folder)
        assert not marker.exists()


# ======================================================================== the commit point ====
def _same_dataset(a, b) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("observational", "interventional",
                                                                       "intervention_values", "split"))


def test_failed_manifest_commit_keeps_the_previous_dataset(tmp_path, monkeypatch):
    """A save that dies after writing its arrays but before its manifest (the kill window of the
    issue) leaves the previous dataset loadable, and no stray file."""
    import activa_ppl.dataset_io as dataset_io

    old, new = small_dataset(), small_dataset(intervention_values=np.full((4, 2), 7.0))
    old.save(tmp_path / "ds")
    real = dataset_io.atomic_write_bytes

    def dies_at_the_manifest(path, write):
        if Path(path).name == "manifest.json":
            raise OSError("killed (simulated)")
        real(path, write)

    monkeypatch.setattr(dataset_io, "atomic_write_bytes", dies_at_the_manifest)
    with pytest.raises(OSError, match="killed"):
        new.save(tmp_path / "ds")
    monkeypatch.undo()
    assert _same_dataset(load_dataset(tmp_path / "ds"), old)
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == [dataset_file(tmp_path / "ds").name,
                                                                    "manifest.json"]
    new.save(tmp_path / "ds")
    assert _same_dataset(load_dataset(tmp_path / "ds"), new)


_DATASET_SAVER = """
import sys, numpy as np
sys.path.insert(0, sys.argv[2])
from helpers import small_dataset
data = [small_dataset(intervention_values=np.full((4, 2), v)) for v in (1.0, 2.0)]
data[0].save(sys.argv[1])
open(sys.argv[1] + ".ready", "w").close()
i = 0
while True:
    data[i % 2].save(sys.argv[1])
    i += 1
"""


@pytest.mark.slow
def test_killed_dataset_saves_leave_a_loadable_dataset(tmp_path):
    """The issue's reproduction: 20 SIGKILLs at random moments of a process saving datasets in a
    loop; after each the folder loads (the old or the new dataset), whole."""
    import os
    import signal
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(0)
    tests_dir = str(Path(__file__).parent)
    for trial in range(20):
        folder = tmp_path / f"ds{trial}"
        proc = subprocess.Popen([sys.executable, "-c", _DATASET_SAVER, str(folder), tests_dir])
        while not Path(str(folder) + ".ready").exists():
            assert proc.poll() is None, "the saver died"
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0.0, 0.2)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        data = load_dataset(folder)
        assert float(data.intervention_values[0, 0]) in (1.0, 2.0)


def test_concurrent_dataset_saves_leave_one_whole_dataset(tmp_path):
    folder = tmp_path / "ds"
    data = {v: small_dataset(intervention_values=np.full((4, 2), v)) for v in (1.0, 2.0)}
    assert save_concurrently(data.values(), folder) == []
    loaded = load_dataset(folder)
    assert _same_dataset(loaded, data[float(loaded.intervention_values[0, 0])])
    assert sorted(p.name for p in folder.iterdir()) == [dataset_file(folder).name, "manifest.json"]


def test_save_keeps_unrelated_files_and_reads_version_1(tmp_path):
    """Files the format did not write survive a save; a version-1 folder (``data.npz``) loads,
    and saving over it replaces its ``data.npz``."""
    folder = tmp_path / "ds"
    small_dataset().save(folder)
    (folder / "data-backup.npz").write_bytes(b"mine")
    (folder / "notes.txt").write_text("mine")
    manifest = json.loads((folder / "manifest.json").read_text())
    dataset_file(folder).rename(folder / "data.npz")
    manifest.update(format_version=1, data_file="data.npz")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert _same_dataset(load_dataset(folder), small_dataset())
    small_dataset().save(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [dataset_file(folder).name, "data-backup.npz", "manifest.json", "notes.txt"])


# ================================================================ forged files and manifests ====
def _forge(folder: Path, arrays: dict, **manifest_changes) -> None:
    """Rewrite the data file with ``arrays`` (uncompressed) and the manifest to match."""
    rewrite_npz(dataset_file(folder), arrays)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["arrays"] = {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in arrays.items()}
    manifest["sha256"] = hashlib.sha256(dataset_file(folder).read_bytes()).hexdigest()
    manifest.update(manifest_changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_zip_bomb_in_dataset_refused_before_allocating(saved_dataset, tmp_path):
    """A deflated 1 GiB member (1 MB on disk), manifest and checksum matching, is refused from
    its sizes before anything is allocated."""
    import resource
    import zipfile

    folder = tmp_path / "ds"
    shutil.copytree(saved_dataset, folder)
    with np.load(dataset_file(folder)) as npz:
        arrays = {k: npz[k] for k in npz.files}
    shape = (arrays["observational"].shape[0], 2**25, 2)  # 4 x 32 Mi x 2 float32 = 1 GiB
    rewrite_npz(dataset_file(folder), {k: v for k, v in arrays.items() if k != "observational"})
    with zipfile.ZipFile(dataset_file(folder), "a") as zf:
        write_zip_bomb(zf, "observational", shape)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["arrays"]["observational"]["shape"] = list(shape)
    manifest["sha256"] = hashlib.sha256(dataset_file(folder).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert dataset_file(folder).stat().st_size < 16 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="zip bomb"):
        load_dataset(folder)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 256 << 10  # KiB


@pytest.mark.parametrize("change, message", [
    (dict(num_interventions=10**9), "num_interventions must lie in 1..65536"),
    (dict(num_scms=-5), "'num_scms' is -5"),
    (dict(num_vars=99), "'num_vars' is 99"),
    (dict(data_file="../elsewhere.npz"), "data_file"),
])
def test_forged_manifest_fields_refused(saved_dataset, tmp_path, change, message):
    folder = tmp_path / "ds"
    shutil.copytree(saved_dataset, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(change)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=message):
        load_dataset(folder)


def test_manifest_declaring_huge_arrays_refused_before_reading(saved_dataset, tmp_path):
    folder = tmp_path / "ds"
    shutil.copytree(saved_dataset, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["arrays"]["observational"]["shape"] = [4, 10**9, 10**3]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="GiB"):
        load_dataset(folder)


@pytest.mark.parametrize("field, shape", [("observational", (4, 0, 2)), ("interventional", (4, 2, 0, 2)),
                                          ("d", None)])
def test_empty_sample_or_variable_axes_refused_at_load(saved_dataset, tmp_path, field, shape):
    """N_obs = 0, N_int = 0 or d = 0 is refused when the dataset is loaded, not deep in training."""
    folder = tmp_path / "ds"
    shutil.copytree(saved_dataset, folder)
    with np.load(dataset_file(folder)) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if field == "d":
        for k, axes in (("observational", 1), ("interventional", 1), ("targets", 1), ("adjacency", 2),
                        ("extra/w", 2)):
            v = arrays[k]
            arrays[k] = np.zeros(v.shape[:v.ndim - axes] + (0,) * axes, v.dtype)
        _forge(folder, arrays, num_vars=0, variable_names=[])
    else:
        arrays[field] = np.zeros(shape, np.float32)
        _forge(folder, arrays)
    with pytest.raises(ValueError, match="a dataset needs d >= 1, N_obs >= 1 and N_int >= 1"):
        load_dataset(folder)
