"""Tests of activa_ppl.fitted (FittedActiva.predict / predict_batch / save, load), the safe array
files of activa_ppl.checkpoint, input validation (table-driven and property-based fuzzing of
predict and predict_batch), positive-definite covariances on extreme inputs and ActivaConfig
checks.

The model is the tiny preset with its initial (untrained) parameters: prediction, persistence
and validation do not depend on training.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from flax import traverse_util
from hypothesis import event
from hypothesis import strategies as st

import activa_ppl as ap
from activa_ppl.checkpoint import CheckpointError, load_arrays, save_arrays
from activa_ppl.config import ActivaConfig
from activa_ppl.mixture import GaussianMixture
from activa_ppl.validation import MAX_ABS_VALUE
from helpers import DEEP, FAST, VALID_SHAPES, Payload, cast, float_array, fuzz, object_array, values_ok

N, D = 20, 3
NAMES = ["alpha", "beta", "gamma"]


@pytest.fixture(scope="module")
def obs():
    return np.random.default_rng(0).normal(size=(N, D)).astype(np.float32)


@pytest.fixture(scope="module")
def frame(obs):
    return pd.DataFrame(obs, columns=NAMES)


@pytest.fixture(scope="module")
def reference(tiny_fitted, obs):
    """predict(obs, target=1, seed=0) — the prediction most tests compare against."""
    return tiny_fitted.predict(obs, target=1, intervention=0, seed=0)


def _arrays(mix: GaussianMixture):
    return tuple(np.asarray(x) for x in (mix.weights, mix.locs, mix.covariances))


def _same(a: GaussianMixture, b: GaussianMixture) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(_arrays(a), _arrays(b)))


def _flat(params):
    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


# ----------------------------------------------------------------------------- predict ----
def test_predict_returns_mixture(tiny_fitted, reference):
    cfg = tiny_fitted.config
    k = cfg.num_predictive_latents * cfg.decoder_components
    assert isinstance(reference, GaussianMixture)
    assert reference.batch_shape == ()
    assert reference.num_components == k and reference.num_vars == D
    assert reference.weights.shape == (k,) and reference.covariances.shape == (k, D, D)
    np.testing.assert_allclose(float(jnp.sum(reference.weights)), 1.0, atol=1e-6)
    assert reference.variable_names == ("X0", "X1", "X2")
    assert np.isfinite(float(reference.log_prob(jnp.zeros(D))))


def test_predict_num_latents(tiny_fitted, obs):
    mix = tiny_fitted.predict(obs, target=0, num_latents=3)
    assert mix.num_components == 3 * tiny_fitted.config.decoder_components
    np.testing.assert_allclose(float(jnp.sum(mix.weights)), 1.0, atol=1e-6)


def test_predict_seed(tiny_fitted, obs, reference):
    assert _same(tiny_fitted.predict(obs, target=1, seed=0), reference)
    assert _same(tiny_fitted.predict(obs, target=1, seed=jax.random.PRNGKey(0)), reference)
    other = tiny_fitted.predict(obs, target=1, seed=1)
    assert not np.array_equal(np.asarray(other.locs), np.asarray(reference.locs))


def test_predict_depends_on_target(tiny_fitted, obs, reference):
    other = tiny_fitted.predict(obs, target=2, seed=0)
    assert not np.array_equal(np.asarray(other.locs), np.asarray(reference.locs))


def test_predict_dataframe_equals_array(tiny_fitted, frame, reference):
    by_name = tiny_fitted.predict(frame, target="beta", seed=0)
    by_index = tiny_fitted.predict(frame, target=1, seed=0)
    assert by_name.variable_names == tuple(NAMES)
    assert _same(by_name, reference) and _same(by_index, reference)
    # marginal by name uses the column names
    assert by_name.marginal(["gamma"]).num_vars == 1


@pytest.mark.parametrize("target", [[1], (1,), np.array([False, True, False]),
                                    [False, True, False], np.int64(1), "X1"])
def test_target_specifications(tiny_fitted, obs, reference, target):
    assert _same(tiny_fitted.predict(obs, target=target, seed=0), reference)


def test_multiple_targets(tiny_fitted, frame):
    a = tiny_fitted.predict(frame, target=["alpha", "gamma"], seed=0)
    b = tiny_fitted.predict(frame, target=[True, False, True], seed=0)
    assert _same(a, b)


def test_predict_batch(tiny_fitted, obs):
    q = 3
    stacked = np.stack([obs, obs * 2.0, obs + 1.0])
    targets = np.eye(D, dtype=np.float32)
    mix = tiny_fitted.predict_batch(stacked, targets, np.zeros(q, np.int64), seed=0,
                                    variable_names=NAMES)
    cfg = tiny_fitted.config
    assert mix.batch_shape == (q,)
    assert mix.num_components == cfg.num_predictive_latents * cfg.decoder_components
    assert mix.variable_names == tuple(NAMES)
    np.testing.assert_allclose(np.asarray(mix.weights.sum(-1)), 1.0, atol=1e-6)
    assert all(isinstance(m, GaussianMixture) for m in mix)


# ----------------------------------------------------------------------------- bad input ----
def _with(obs, row, col, value):
    out = obs.copy()
    out[row, col] = value
    return out


@pytest.mark.parametrize("bad,match", [
    (lambda o: _with(o, 3, 1, np.nan), "non-finite"),
    (lambda o: _with(o, 0, 2, np.inf), "non-finite"),
    (lambda o: _with(o, 5, 0, -np.inf), "non-finite"),
    (lambda o: o[:, 0], "2-d"),
    (lambda o: o[None], "2-d"),
    (lambda o: o[:1], "at least 2"),
    (lambda o: o[:0], "at least 2"),
    (lambda o: o.astype(str), "numbers"),
    (lambda o: o.astype(complex), "complex"),
    (lambda o: o[:, :0], "no variables"),
    (lambda o: _with(o, 2, 1, 1e30), "magnitude"),
])
def test_predict_rejects_bad_obs(tiny_fitted, obs, bad, match):
    with pytest.raises(ValueError, match=match):
        tiny_fitted.predict(bad(obs), target=0)


def test_nan_message_names_column(tiny_fitted, frame):
    bad = frame.copy()
    bad.loc[4, "gamma"] = np.nan
    with pytest.raises(ValueError, match="gamma"):
        tiny_fitted.predict(bad, target="alpha")


@pytest.mark.parametrize("target,match", [
    (3, "out of range"), (-1, "out of range"), ([0, 7], "out of range"),
    ("zeta", "unknown variable"), ([], "no variable is targeted"),
    ([False, False, False], "no variable is targeted"), ([True, False], "length"),
    ([1.0], "neither"), (1.0, "interpret"), (None, "target"),
])
def test_predict_rejects_bad_target(tiny_fitted, frame, target, match):
    with pytest.raises(ValueError, match=match):
        tiny_fitted.predict(frame, target=target)


@pytest.mark.parametrize("intervention,match", [(1, "out of range"), (-1, "out of range"),
                                                (0.0, "integer"), (True, "integer")])
def test_predict_rejects_bad_intervention(tiny_fitted, obs, intervention, match):
    assert tiny_fitted.config.num_interventions == 1
    with pytest.raises(ValueError, match=match):
        tiny_fitted.predict(obs, target=0, intervention=intervention)


def test_predict_rejects_non_numeric_column(tiny_fitted, frame):
    bad = frame.copy()
    bad["beta"] = ["x"] * N
    with pytest.raises(ValueError, match="non-numeric.*beta"):
        tiny_fitted.predict(bad, target="alpha")


def test_predict_rejects_duplicate_columns(tiny_fitted, obs):
    bad = pd.DataFrame(obs, columns=["a", "b", "a"])
    with pytest.raises(ValueError, match="duplicate"):
        tiny_fitted.predict(bad, target=1)


@pytest.mark.parametrize("change,match", [
    (dict(targets=np.ones((2, D), np.float32)), "targets"),
    (dict(targets=np.ones((3, D + 1), np.float32)), "targets"),
    (dict(targets=np.zeros((3, D), np.float32)), "targets"),
    (dict(targets=np.full((3, D), 2.0, np.float32)), "targets"),
    (dict(intervention_index=np.zeros(4, np.int32)), "intervention_index"),
    (dict(intervention_index=np.zeros(3, np.float32)), "intervention_index"),
    (dict(intervention_index=np.ones(3, np.int32)), "intervention_index"),
    (dict(observational=np.zeros((3, N), np.float32)), "observational"),
    (dict(observational=np.zeros((3, 1, D), np.float32)), "at least 2"),
    (dict(observational=np.full((3, N, D), np.nan, np.float32)), "NaN"),
])
def test_predict_batch_rejects_bad_shapes(tiny_fitted, obs, change, match):
    kwargs = dict(observational=np.stack([obs] * 3), targets=np.eye(D, dtype=np.float32),
                  intervention_index=np.zeros(3, np.int32))
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        tiny_fitted.predict_batch(**kwargs)


# ------------------------------------------------------------------ sound predictions ----
def _assert_sound_mixture(mix, d: int):
    """Finite weights summing to 1, finite locations, symmetric positive-definite covariances."""
    weights, locs, cov = (np.asarray(x, dtype=np.float64) for x in (mix.weights, mix.locs, mix.covariances))
    assert np.isfinite(weights).all() and np.isfinite(locs).all() and np.isfinite(cov).all()
    assert locs.shape[-1] == d and cov.shape[-2:] == (d, d)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(cov, np.swapaxes(cov, -1, -2), rtol=1e-5, atol=1e-6)
    assert np.linalg.eigvalsh(cov).min() > 0
    assert np.isfinite(np.asarray(jnp.linalg.cholesky(mix.covariances))).all()  # float32, as used


# ------------------------------------------------ extreme inputs, messages per argument ----
def _extreme(kind: str) -> np.ndarray:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 3))
    if kind == "all_constant":
        return np.full((20, 3), 2.5)
    if kind == "one_constant":
        x[:, 1] = -4.0
        return x
    if kind == "zeros":
        return np.zeros((20, 3))
    if kind == "max_magnitude":
        return np.sign(x) * MAX_ABS_VALUE
    if kind == "huge":
        return x * 6e13
    if kind == "tiny":
        return x * 1e-30
    if kind == "mixed_scales":
        return x * np.array([MAX_ABS_VALUE / 10, 1.0, 1e-15])
    if kind == "duplicate_columns":
        return np.repeat(x[:, :1], 3, axis=1)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["all_constant", "one_constant", "zeros", "max_magnitude", "huge", "tiny",
                                  "mixed_scales", "duplicate_columns"])
@pytest.mark.parametrize("target", [0, [0, 2]])
def test_covariances_positive_definite_on_extreme_inputs(tiny_fitted, kind, target):
    obs = _extreme(kind)
    mix = tiny_fitted.predict(obs, target=target, seed=3)
    _assert_sound_mixture(mix, 3)
    assert np.isfinite(np.asarray(mix.log_prob(jnp.asarray(obs[:5], jnp.float32)))).all()


def test_values_just_above_the_limit_are_refused(tiny_fitted):
    obs = _extreme("max_magnitude")
    obs[7, 2] = -MAX_ABS_VALUE * 1.01
    with pytest.raises(ValueError, match=r"obs: 1 value\(s\) of magnitude > 1e\+15, first at row 7, column 'X2'"):
        tiny_fitted.predict(obs, target=0)
    batch = obs[None].astype(np.float64)
    batch[0, 3, 0] = 1e300  # beyond float32: reported as too large, not as inf after a cast
    with pytest.raises(ValueError, match=r"observational: 2 value\(s\) of magnitude .* query 0, row 3, column 0"):
        tiny_fitted.predict_batch(batch, np.eye(3)[:1], np.zeros(1, int))


def test_predict_batch_names_each_argument(tiny_fitted):
    obs = _extreme("one_constant")[None]
    cases = [
        (dict(observational=np.zeros((0, 20, 3))), "observational: holds no query"),
        (dict(targets=np.array([[0.0, 0.5, 0.0]])), "targets: each row must be a 0/1 mask; query 0"),
        (dict(targets=np.array([["1", "0", "0"]])), "targets: expected numbers"),
        (dict(intervention_index=np.array([1])), r"intervention_index: values must lie in 0..0 .* query 0 has 1"),
        (dict(seed="x"), "seed: expected an integer or a single JAX PRNG key"),
        (dict(seed=jax.random.split(jax.random.PRNGKey(0), 3)), "seed: expected an integer"),
        (dict(num_latents=-1), "num_latents: expected a positive integer"),
        (dict(variable_names=["a", "b"]), "variable_names: expected 3 distinct strings"),
    ]
    for change, message in cases:
        kwargs = dict(observational=obs, targets=np.eye(3)[:1], intervention_index=np.zeros(1, int))
        kwargs.update(change)
        with pytest.raises(ValueError, match=message):
            tiny_fitted.predict_batch(**kwargs)


# ------------------------------------------------------ predict and predict_batch, fuzzed ----
_WRONG = st.one_of(st.just(frozenset()), st.frozensets(st.sampled_from(
    ["shape", "dtype", "values", "frame", "target", "intervention", "seed", "num_latents"]), min_size=1, max_size=2))


@st.composite
def predict_calls(draw):
    """Arguments of ``FittedActiva.predict`` (about half of them valid) and whether they are."""
    wrong = draw(_WRONG)
    if "shape" not in wrong:
        shape = draw(st.sampled_from(VALID_SHAPES))
    else:  # anything that is not (N >= 2, d >= 1)
        shape = draw(st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple).filter(
            lambda s: len(s) != 2 or s[0] < 2 or s[1] < 1))
    array, numeric = cast(draw, float_array(draw, shape, bad_values="values" in wrong), bad="dtype" in wrong)
    obs_ok = "shape" not in wrong and numeric and values_ok(array)
    d = shape[1] if len(shape) == 2 else 1
    names = [f"X{j}" for j in range(max(d, 1))]
    obs = array
    if "shape" not in wrong and ("frame" in wrong or draw(st.booleans())):  # as a DataFrame
        names = draw(st.lists(st.sampled_from(["a", "b", "c", "gene 1", "7", "é"]), min_size=d, max_size=d,
                              unique="frame" not in wrong))
        obs = pd.DataFrame(array, columns=names)
        if "frame" in wrong and len(set(names)) == d:
            obs[obs.columns[0]] = "x"  # a text column
        obs_ok = obs_ok and "frame" not in wrong and array.dtype != bool  # bool columns are refused
    target_kind = draw(st.sampled_from(["bad_index", "bad_name", "empty", "bad_mask", "float", "none"]
                                       if "target" in wrong else ["index", "name", "mask", "list"]))
    target = {
        "index": draw(st.integers(0, max(d - 1, 0))),
        "name": names[draw(st.integers(0, len(names) - 1))],
        "mask": [j == 0 for j in range(d)],
        "list": [0, d - 1],
        "bad_index": draw(st.sampled_from([d, d + 3, -1])),
        "bad_name": "no such column",
        "empty": [],
        "bad_mask": [True] * (d + 1),
        "float": 0.5,
        "none": None,
    }[target_kind]
    target_ok = "target" not in wrong and not (target_kind == "name" and names.count(target) != 1)
    intervention = draw(st.sampled_from([1, -1, 0.0, True, "0"] if "intervention" in wrong else [0, np.int64(0)]))
    seed = draw(st.sampled_from([2**64, "x", 1.5, None, np.zeros(3, np.uint32)] if "seed" in wrong
                                else [0, 12345, 2**63 - 1, -5, np.int32(7), jax.random.PRNGKey(3)]))
    num_latents = draw(st.sampled_from([0, -2, 1.5, True, "3"] if "num_latents" in wrong else [None]))
    ok = obs_ok and target_ok and not wrong & {"intervention", "seed", "num_latents"}
    return dict(obs=obs, target=target, intervention=intervention, seed=seed,
                num_latents=num_latents), ok, d


def _predict_property(quiet_tiny_fitted, call):
    kwargs, ok, d = call
    try:
        mix = quiet_tiny_fitted.value.predict(**kwargs)
    except ValueError as e:
        assert not ok, f"valid input refused: {e}"
        argument = str(e).split(":")[0]
        assert argument in {"obs", "target", "intervention", "seed", "num_latents"}, str(e)
        event(f"refused, naming {argument}")
        return
    assert ok, "invalid input accepted"
    event("predicted")
    assert mix.batch_shape == () and mix.num_vars == d
    _assert_sound_mixture(mix, d)


test_fuzz_predict, test_fuzz_predict_deep = fuzz(FAST, DEEP, call=predict_calls())(_predict_property)


@st.composite
def predict_batch_calls(draw):
    """Arguments of ``FittedActiva.predict_batch`` (about half valid) and whether they are."""
    wrong = draw(st.one_of(st.just(frozenset()), st.frozensets(st.sampled_from(
        ["shape", "dtype", "values", "targets", "index"]), min_size=1, max_size=2)))
    if "shape" not in wrong:
        n, d = draw(st.sampled_from(VALID_SHAPES))
        shape = (1, n, d)
    else:
        shape = draw(st.lists(st.integers(0, 3), min_size=0, max_size=4).map(tuple).filter(
            lambda s: len(s) != 3 or s[0] < 1 or s[1] < 2 or s[2] < 1))
    obs, numeric = cast(draw, float_array(draw, shape, bad_values="values" in wrong), bad="dtype" in wrong)
    ok = "shape" not in wrong and numeric and values_ok(obs)
    q = shape[0] if len(shape) == 3 else 1
    d = shape[2] if len(shape) == 3 else 1  # 0 possible (an invalid shape)
    targets = np.zeros((q, d))
    targets[:, :1] = 1
    targets_kind = draw(st.sampled_from(["zero_row", "two", "nan", "shape", "text"] if "targets" in wrong
                                        else ["one", "all"]))
    if targets_kind == "all":
        targets[:] = 1
    elif targets_kind == "zero_row":
        targets[:1] = 0
    elif targets_kind == "two":
        targets[:1, :1] = 2
    elif targets_kind == "nan":
        targets[:1, :1] = np.nan
    elif targets_kind == "shape":
        targets = np.ones((q, d + 1))
    elif targets_kind == "text":
        targets = targets.astype(str)
    index = draw(st.sampled_from(
        [np.ones(q, np.int64), np.zeros(q), np.zeros(q + 1, np.int64), np.full(q, -1)] if "index" in wrong
        else [np.zeros(q, np.int64), np.zeros(q, np.int32), np.zeros(q, np.uint8)]))
    ok = ok and not wrong & {"targets", "index"}
    return dict(observational=obs, targets=targets, intervention_index=index), ok, d


def _predict_batch_property(quiet_tiny_fitted, call):
    kwargs, ok, d = call
    try:
        mix = quiet_tiny_fitted.value.predict_batch(**kwargs)
    except ValueError as e:
        assert not ok, f"valid input refused: {e}"
        argument = str(e).split(":")[0]
        assert argument in {"observational", "targets", "intervention_index"}, str(e)
        event(f"refused, naming {argument}")
        return
    assert ok, "invalid input accepted"
    event("predicted")
    _assert_sound_mixture(mix, d)


test_fuzz_predict_batch, test_fuzz_predict_batch_deep = fuzz(
    FAST, DEEP, call=predict_batch_calls())(_predict_batch_property)


# -------------------------------------------------------------------------- ActivaConfig ----
@pytest.mark.parametrize("fields,match", [
    (dict(embed_dim=0), "embed_dim"), (dict(hidden_dim=-4), "hidden_dim"),
    (dict(num_particles=1.5), "num_particles"), (dict(decoder_components=True), "decoder_components"),
    (dict(num_heads=3), "divisible"), (dict(beta=0.0), "beta"), (dict(beta=-1.0), "beta"),
    (dict(prior_variance=0), "prior_variance"), (dict(covariance_eps=float("nan")), "covariance_eps"),
    (dict(posterior_variance="0.1"), "posterior_variance"), (dict(num_interventions=0), "num_interventions"),
])
def test_activa_config_rejects_invalid_fields(fields, match):
    with pytest.raises(ValueError, match=match):
        ActivaConfig.preset("tiny", **fields)


@pytest.mark.parametrize("fields", [dict(prior_variance=float("inf")), dict(beta=True),
                                    dict(covariance_eps=float("inf"))])
def test_activa_config_rejects_inf_and_bool(fields):
    try:
        ActivaConfig.preset("tiny", **fields)
    except ValueError:
        return
    raise AssertionError(f"ActivaConfig accepted {fields}")


def test_activa_config_preset_and_dict_errors():
    with pytest.raises(ValueError, match="preset"):
        ActivaConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown"):
        ActivaConfig.from_dict({**ActivaConfig().to_dict(), "dropout": 0.1})
    cfg = ActivaConfig.preset("tiny", beta=0.25)
    assert ActivaConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# ----------------------------------------------------------------------- save and load ----
def test_save_load_round_trip(tiny_fitted, obs, reference, tmp_path):
    path = tiny_fitted.save(tmp_path / "model")
    names = sorted(p.name for p in path.iterdir())
    assert names == ["config.json", _params(path).name] and _params(path).name.startswith("params-")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folders left
    loaded = ap.load(path)
    assert loaded.config == tiny_fitted.config
    assert loaded.info == tiny_fitted.info
    a, b = _flat(loaded.params), _flat(tiny_fitted.params)
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    assert _same(loaded.predict(obs, target=1, seed=0), reference)


def test_save_replaces_existing_model(tiny_fitted, tmp_path):
    path = tmp_path / "model"
    tiny_fitted.save(path)
    bumped = jax.tree_util.tree_map(lambda x: x + 1.0, tiny_fitted.params)
    ap.FittedActiva(tiny_fitted.activa, bumped, {"v": 2}).save(path)
    loaded = ap.load(path)
    assert loaded.info == {"v": 2}
    assert all(np.array_equal(_flat(loaded.params)[k], v) for k, v in _flat(bumped).items())
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def _params(path: Path) -> Path:
    """The parameter file a saved model's config.json names."""
    return path / json.loads((path / "config.json").read_text())["params_file"]


@pytest.fixture
def saved(tiny_fitted, tmp_path):
    return tiny_fitted.save(tmp_path / "model")


def test_truncated_params_refused(saved):
    params = _params(saved)
    raw = params.read_bytes()
    params.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="SHA-256"):
        ap.load(saved)
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_arrays(params)
    assert issubclass(CheckpointError, ValueError)


def test_flipped_byte_refused(saved):
    params = _params(saved)
    raw = bytearray(params.read_bytes())
    raw[len(raw) // 3] ^= 0x10  # inside the array data
    params.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="SHA-256"):
        ap.load(saved)
    with pytest.raises(CheckpointError):  # and without config.json's checksum: CRC / digest
        load_arrays(params)


def test_flipped_byte_in_array_data_caught_by_digest(tmp_path):
    """A flip that keeps the zip container valid is caught by the array digest."""
    good = {"w": np.arange(6, dtype=np.float32)}
    path = tmp_path / "a.npz"
    save_arrays(path, good)
    # Rebuild the archive with a modified array but the old metadata (valid zip, valid CRCs).
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    tampered = bytearray(members["w.npy"])
    tampered[-1] ^= 0x01
    members["w.npy"] = bytes(tampered)
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    with pytest.raises(CheckpointError, match="checksum"):
        load_arrays(path)


def test_every_single_byte_flip_is_refused_or_harmless(tmp_path):
    good = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(2, np.int32)}
    path = tmp_path / "a.npz"
    save_arrays(path, good, {"x": 1})
    raw = path.read_bytes()
    probe = tmp_path / "probe.npz"
    escaped = {}
    for i in range(len(raw)):
        for bit in (0x01, 0x80):
            flipped = bytearray(raw)
            flipped[i] ^= bit
            probe.write_bytes(bytes(flipped))
            try:
                arrays, _ = load_arrays(probe)
            except CheckpointError:
                continue
            except Exception as e:  # noqa: BLE001 - the point of the test
                escaped.setdefault(type(e).__name__, []).append(i)
                continue
            # Accepted: only possible when the flip hit bytes that carry no data (zip metadata).
            assert set(arrays) == set(good) and all(np.array_equal(arrays[k], good[k]) for k in good)
    assert not escaped, f"exceptions other than CheckpointError: { {k: v[:5] for k, v in escaped.items()} }"


def test_non_object_metadata_refused(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, w=np.ones(2), __meta__=np.frombuffer(b"[1, 2]", dtype=np.uint8))
    with pytest.raises(CheckpointError):
        load_arrays(path)


def test_missing_or_foreign_files_refused(saved, tmp_path):
    with pytest.raises(CheckpointError, match="not a saved ACTIVA model"):
        ap.load(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="no such file"):
        load_arrays(tmp_path / "nothing.npz")
    plain = tmp_path / "plain.npz"
    np.savez(plain, w=np.ones(3))
    with pytest.raises(CheckpointError, match="__meta__"):
        load_arrays(plain)
    config = json.loads((saved / "config.json").read_text())
    config["format_version"] = 99
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="version"):
        ap.load(saved)


def test_params_that_do_not_fit_the_config_refused(saved):
    config = json.loads((saved / "config.json").read_text())
    config["model_config"]["embed_dim"] = 32
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not fit"):
        ap.load(saved)


# -------------------------------------------------------------------- pickle payloads ----
def _meta_blob():
    header = {"format": "activa_ppl.arrays", "format_version": 1, "sha256": "0" * 64, "meta": {}}
    return np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)


def test_payload_is_live(tmp_path):
    """Control: the payload does create its marker when numpy is allowed to unpickle."""
    marker = tmp_path / "control-marker"
    np.save(tmp_path / "obj.npy", object_array(marker), allow_pickle=True)
    np.load(tmp_path / "obj.npy", allow_pickle=True)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["npz_object_entry", "npz_object_meta", "npy_object_array",
                                  "raw_pickle"])
def test_pickle_payload_refused_without_executing(tmp_path, kind):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.npz"
    if kind == "npz_object_entry":
        np.savez(path, __meta__=_meta_blob(), w=object_array(marker))
    elif kind == "npz_object_meta":
        np.savez(path, __meta__=object_array(marker), w=np.ones(2))
    elif kind == "npy_object_array":
        with open(path, "wb") as f:
            np.save(f, object_array(marker), allow_pickle=True)
    else:
        path.write_bytes(pickle.dumps({"w": Payload(marker)}))
    with pytest.raises(CheckpointError):
        load_arrays(path)
    assert not marker.exists()


def test_pickle_payload_in_saved_model_refused(saved, tmp_path):
    """An attacker who controls both files (checksum in config.json updated) still gets nowhere."""
    marker = tmp_path / "PWNED"
    params = _params(saved)
    np.savez(params, __meta__=_meta_blob(), **{"decoder$params/Dense_0/kernel": object_array(marker)})
    config = json.loads((saved / "config.json").read_text())
    config["params_sha256"] = hashlib.sha256(params.read_bytes()).hexdigest()
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError):
        ap.load(saved)
    assert not marker.exists()


def test_save_arrays_refuses_object_arrays(tmp_path):
    with pytest.raises(ValueError, match="object"):
        save_arrays(tmp_path / "x.npz", {"w": object_array(tmp_path / "m")})
    assert not (tmp_path / "x.npz").exists()


# ------------------------------------------------------------------------ failed saves ----
def _assert_previous_model_intact(path: Path, fitted):
    loaded = ap.load(path)
    assert loaded.info == fitted.info
    assert all(np.array_equal(v, _flat(fitted.params)[k]) for k, v in _flat(loaded.params).items())


def test_failed_params_write_keeps_previous_model(tiny_fitted, tmp_path, monkeypatch):
    path = tiny_fitted.save(tmp_path / "model")
    import activa_ppl.model_io as fitted_module

    def half_written(target, arrays, meta=None):
        Path(target).write_bytes(b"PK\x03\x04 half a file")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(fitted_module, "save_arrays", half_written)
    bumped = ap.FittedActiva(tiny_fitted.activa,
                             jax.tree_util.tree_map(lambda x: x * 2, tiny_fitted.params), {"v": 2})
    with pytest.raises(OSError, match="disk full"):
        bumped.save(path)
    _assert_previous_model_intact(path, tiny_fitted)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_failed_config_write_keeps_previous_model(tiny_fitted, tmp_path):
    path = tiny_fitted.save(tmp_path / "model")
    unserialisable = ap.FittedActiva(tiny_fitted.activa, tiny_fitted.params, {"x": object()})
    with pytest.raises(TypeError):
        unserialisable.save(path)
    _assert_previous_model_intact(path, tiny_fitted)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_failed_commit_keeps_previous_model(tiny_fitted, tmp_path, monkeypatch):
    """A failure while replacing config.json (the commit point) leaves the old model whole."""
    path = tiny_fitted.save(tmp_path / "model")
    import activa_ppl.model_io as fitted_module

    def failing_commit(target, write):
        raise OSError("rename failed (simulated)")

    monkeypatch.setattr(fitted_module, "atomic_write_bytes", failing_commit)
    bumped = ap.FittedActiva(tiny_fitted.activa,
                             jax.tree_util.tree_map(lambda x: x + 1.0, tiny_fitted.params), {"v": 2})
    with pytest.raises(OSError, match="rename failed"):
        bumped.save(path)
    monkeypatch.undo()
    _assert_previous_model_intact(path, tiny_fitted)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", _params(path).name]


def test_save_keeps_other_files(tiny_fitted, tmp_path):
    """Saving into a zoo folder keeps its model card."""
    path = tmp_path / "model"
    path.mkdir()
    (path / "card.md").write_text("# card")
    tiny_fitted.save(path)
    tiny_fitted.save(path)
    assert (path / "card.md").read_text() == "# card"
    assert sorted(p.name for p in path.iterdir()) == ["card.md", "config.json", _params(path).name]


@pytest.mark.parametrize("names, ok", [(("a", "b"), True), (iter(["a", "b"]), True), (("a", "a"), False),
                                       (("a", 1), False), ("ab", False), (5, False)])
def test_predict_batch_variable_names_must_be_distinct_strings(tiny_fitted, names, ok):
    """A generator is read once; duplicates and non-strings are a ValueError, never a TypeError."""
    args = (np.zeros((1, 20, 2)), np.array([[1.0, 0.0]]), np.array([0]))
    if ok:
        assert tiny_fitted.predict_batch(*args, variable_names=names).variable_names == ("a", "b")
    else:
        with pytest.raises(ValueError, match="variable_names: expected 2 distinct strings"):
            tiny_fitted.predict_batch(*args, variable_names=names)
