"""Tests of the on-disk dataset format (activa_ppl.dataset_io, through
activa_ppl.data.load_dataset) against damaged and hostile folders: property-based fuzzing of
the loader, and pickle payloads in ``data.npz``.
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
from helpers import DEEP, FAST, JSON_VALUES, cast, float_array, fuzz, object_array, rewrite_npz, values_ok


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
    manifest_path, data_path = folder / "manifest.json", folder / "data.npz"
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
            with np.load(folder / "data.npz") as npz:
                arrays = {k: npz[k] for k in npz.files}
            arrays["extra/evil"] = object_array(marker, (4,))
            rewrite_npz(folder / "data.npz", arrays)
            manifest = json.loads((folder / "manifest.json").read_text())
            manifest["arrays"]["extra/evil"] = {"shape": [4], "dtype": "|O"}
            manifest["extras"].append("evil")
            manifest["sha256"] = hashlib.sha256((folder / "data.npz").read_bytes()).hexdigest()
            (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match="pickled objects are never loaded"):
            load_dataset(folder)
        assert not marker.exists()
