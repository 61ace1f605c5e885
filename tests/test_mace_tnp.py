"""Tests of the MACE-TNP joint extension (activa_ppl.mace_tnp, paper Appendix D).

Shapes, the symmetries Appendix D.4 states (means equivariant and covariances *not*
equivariant under variable permutations; invariance to the order of observational samples),
z-score normalisation and denormalisation, the likelihood used in training, saving and
loading, the evaluation predictor, input validation, and a short training run on Gauss 2
that must lower the validation NLL and resume bit-identically after an interruption.

The tiny preset keeps compilation short; the module makes three short training runs.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import activa_ppl as ap
from activa_ppl import loop
from activa_ppl.baselines import mace_tnp as mt
from activa_ppl.checkpoint import CheckpointError
from activa_ppl.evaluation import evaluate
from activa_ppl.baselines.mace_tnp.objective import STD_FLOOR
from activa_ppl.baselines.mace_tnp.training import _schedule
from activa_ppl.predictors import INTERVENTION_VALUE, mace_tnp_predictor
from activa_ppl.metrics import MARGINAL_SET_NAMES
from activa_ppl.mixture import GaussianMixture

D = 3


@pytest.fixture(scope="module")
def config():
    return mt.MaceTnpConfig.preset("tiny", num_vars=D)


@pytest.fixture(scope="module")
def fitted(config):
    """Untrained tiny model over d = 3 variables (random initial parameters)."""
    return mt.FittedMaceTnp(config, mt.init_params(config, jax.random.PRNGKey(3)), info={"note": "untrained"})


@pytest.fixture
def batch(rng):
    """``observational (4, 12, 3)`` with distinct per-variable scales, one-hot targets, values."""
    scale = np.array([1.0, 3.0, 0.5], np.float32)
    shift = np.array([0.5, -2.0, 4.0], np.float32)
    obs = (rng.normal(size=(4, 12, D)) * scale + shift).astype(np.float32)
    obs[..., 1] += 0.8 * obs[..., 0]  # some correlation
    targets = np.eye(D, dtype=np.float32)[[0, 1, 2, 0]]
    values = np.array([5.0, 5.0, -1.0, 2.0], np.float32)
    return obs, targets, values


def _normalized_cov(mix, obs):
    """Covariances divided by std_i std_j of the observational data: the normalised-unit Σ."""
    std = np.maximum(np.asarray(obs).std(axis=-2), STD_FLOOR)  # (T, d)
    return np.asarray(mix.covariances) / (std[:, None, :, None] * std[:, None, None, :])


# ------------------------------------------------------------------------------ shapes
def test_predict_batch_shapes_and_validity(fitted, config, batch):
    mix = fitted.predict_batch(*batch)
    k = config.num_components
    assert isinstance(mix, GaussianMixture)
    assert mix.batch_shape == (4,)
    assert mix.weights.shape == (4, k) and mix.locs.shape == (4, k, D) and mix.covariances.shape == (4, k, D, D)
    np.testing.assert_allclose(np.asarray(mix.weights).sum(-1), 1.0, atol=1e-5)
    eig = np.linalg.eigvalsh(np.asarray(mix.covariances, np.float64))
    assert np.all(eig > 0)
    # the Cholesky floor: every normalised-unit variance is at least 0.1² (diag of L L^T >= L_ii²)
    assert np.all(np.diagonal(_normalized_cov(mix, batch[0]), axis1=-2, axis2=-1) >= 0.1**2 * (1 - 1e-4))


def test_single_predict_matches_batch(fitted, batch):
    obs, targets, values = batch
    one = fitted.predict(obs[2], target=2, value=float(values[2]))
    many = fitted.predict_batch(obs, targets, values)
    assert one.batch_shape == () and one.variable_names == ("X0", "X1", "X2")
    np.testing.assert_allclose(np.asarray(one.locs), np.asarray(many.locs[2]), rtol=1e-5, atol=1e-5)


def test_prediction_depends_on_value_and_target(fitted, batch):
    obs, targets, values = batch
    base = np.asarray(fitted.predict_batch(obs, targets, values).locs)
    other_value = np.asarray(fitted.predict_batch(obs, targets, values + 3.0).locs)
    other_target = np.asarray(fitted.predict_batch(obs, np.roll(targets, 1, axis=1), values).locs)
    assert np.abs(base - other_value).max() > 1e-3
    assert np.abs(base - other_target).max() > 1e-3


def test_values_per_variable_use_only_targets(fitted, batch):
    obs, targets, values = batch
    per_var = np.where(targets > 0, values[:, None], 123.0).astype(np.float32)  # junk off-target
    a = fitted.predict_batch(obs, targets, values)
    b = fitted.predict_batch(obs, targets, per_var)
    np.testing.assert_allclose(np.asarray(a.locs), np.asarray(b.locs), rtol=1e-6, atol=1e-6)


# -------------------------------------------------------------------------- symmetries
def test_variable_permutation_means_equivariant_covariances_not(fitted, batch):
    obs, targets, values = batch
    perm = np.array([2, 0, 1])
    mix = fitted.predict_batch(obs, targets, values)
    mix_p = fitted.predict_batch(obs[..., perm], targets[:, perm], values)
    # Means are per node: they follow the permutation; weights come from a pooled encoding.
    np.testing.assert_allclose(np.asarray(mix_p.locs), np.asarray(mix.locs)[..., perm], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(mix_p.weights), np.asarray(mix.weights), rtol=1e-4, atol=1e-5)
    # Cholesky factors come from a variable-pooled encoding: in normalised units they are the
    # same for every variable order (invariant), hence NOT permuted along with the variables.
    cov_n, cov_n_p = _normalized_cov(mix, obs), _normalized_cov(mix_p, obs[..., perm])
    np.testing.assert_allclose(cov_n_p, cov_n, rtol=1e-4, atol=1e-5)
    permuted = np.asarray(mix.covariances)[..., perm, :][..., :, perm]
    assert np.abs(np.asarray(mix_p.covariances) - permuted).max() > 1e-2


def test_observational_sample_permutation_invariance(fitted, batch, rng):
    obs, targets, values = batch
    shuffled = obs[:, rng.permutation(obs.shape[1])]
    a, b = fitted.predict_batch(obs, targets, values), fitted.predict_batch(shuffled, targets, values)
    for x, y in ((a.weights, b.weights), (a.locs, b.locs), (a.covariances, b.covariances)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------- normalisation
def test_denormalize_maps_the_law_of_the_affine_transform(rng):
    t, k, d = 2, 3, D
    logits = jnp.asarray(rng.normal(size=(t, k)), jnp.float32)
    locs = jnp.asarray(rng.normal(size=(t, k, d)), jnp.float32)
    tril = np.tril(rng.normal(size=(t, k, d, d)))
    idx = np.arange(d)
    tril[..., idx, idx] = np.abs(tril[..., idx, idx]) + 0.3
    tril = jnp.asarray(tril, jnp.float32)
    mean = jnp.asarray(rng.normal(size=(t, d)) * 3, jnp.float32)
    std = jnp.asarray(rng.uniform(0.2, 4.0, size=(t, d)), jnp.float32)
    norm = GaussianMixture.from_logits(logits, locs, scale_tril=tril)
    data = mt.denormalize(logits, locs, tril, mean, std)
    np.testing.assert_allclose(data.mean, mean + std * norm.mean, rtol=1e-5, atol=1e-5)
    scale = np.asarray(std)[:, :, None] * np.asarray(std)[:, None, :]
    np.testing.assert_allclose(data.covariance, scale * np.asarray(norm.covariance), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(data.covariances, np.asarray(norm.covariances) * scale[:, None], rtol=1e-4, atol=1e-5)
    # change of variables: log p_X(x) = log p_Z((x - m) / s) - sum log s
    x = jnp.asarray(rng.normal(size=(5, t, d)) * 2, jnp.float32)
    expected = norm.log_prob((x - mean) / std) - jnp.log(std).sum(-1)
    np.testing.assert_allclose(data.log_prob(x), expected, rtol=1e-4, atol=1e-4)


def test_affine_change_of_units_is_undone(fitted, batch):
    """Rescaling and shifting each variable (data and values) maps predictions accordingly:
    the network only sees z-scores, the output is denormalised."""
    obs, targets, values = batch
    a = np.array([10.0, -3.0, 0.5], np.float32)
    b = np.array([2.0, 0.25, 7.0], np.float32)
    t_idx = targets.argmax(-1)
    mix = fitted.predict_batch(obs, targets, values)
    mix_u = fitted.predict_batch(a + b * obs, targets, a[t_idx] + b[t_idx] * values)
    np.testing.assert_allclose(np.asarray(mix_u.weights), np.asarray(mix.weights), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(np.asarray(mix_u.locs), a + b * np.asarray(mix.locs), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.asarray(mix_u.covariances), np.asarray(mix.covariances) * np.outer(b, b),
                               rtol=1e-3, atol=1e-4)


def test_validation_nll_is_the_mixture_nll(fitted, config, batch, rng):
    obs, targets, values = batch
    inter = (rng.normal(size=(4, 9, D)) + 1.0).astype(np.float32)
    mix = fitted.predict_batch(obs, targets, values)
    direct = -np.asarray(mix.log_prob(np.swapaxes(inter, 0, 1))).mean()
    got = float(mt.validation_nll(config, fitted.params, obs, targets, values, inter))
    np.testing.assert_allclose(got, direct, rtol=1e-5)


def test_training_loss_is_normalised_nll_with_sample_query(fitted, config, batch, rng):
    """The training query is one interventional sample's intervened coordinate, the loss is
    the NLL of all samples and variables in z-units = data-unit NLL - mean sum log std."""
    obs, targets, _ = batch
    inter = (rng.normal(size=(4, 9, D)) + 1.0).astype(np.float32)
    q = np.array([0, 3, 8, 5])
    loss = float(jax.jit(mt.training_loss, static_argnums=0)(config, fitted.params, obs, inter, targets, jnp.asarray(q)))
    sample_values = inter[np.arange(4), q]  # (4, d): only the target entries are read
    nll = float(mt.validation_nll(config, fitted.params, obs, targets, sample_values, inter))
    log_std = np.log(obs.std(axis=1)).sum(-1).mean()
    np.testing.assert_allclose(loss, nll - log_std, rtol=1e-4, atol=1e-4)


# -------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("change, match", [
    (lambda o, t, v: (o[..., :2], t[:, :2], v), "built for d = 3"),
    (lambda o, t, v: (o[0], t, v), r"expected shape \(T, N, d\)"),
    (lambda o, t, v: (o[:, :1], t, v), "at least 2 samples"),
    (lambda o, t, v: (o, t[:3], v), "targets: expected shape"),
    (lambda o, t, v: (o, t, v[:3]), "values: expected shape"),
    (lambda o, t, v: (np.where(np.arange(3) == 1, np.nan, o), t, v), "NaN or inf"),
    (lambda o, t, v: (o, t * 0, v), "at least one target"),
    (lambda o, t, v: (o, t * 0.5, v), "0/1 mask"),
    (lambda o, t, v: (o, t, np.full_like(v, np.inf)), "must be finite"),
])
def test_predict_batch_rejects_bad_inputs(fitted, batch, change, match):
    with pytest.raises(ValueError, match=match):
        fitted.predict_batch(*change(*batch))


def test_head_fixes_the_number_of_variables(config):
    params = mt.init_params(config, jax.random.PRNGKey(0))
    obs, query, targets = jnp.zeros((1, 5, D + 1)), jnp.zeros((1, 1, D + 1)), jnp.ones((1, D + 1))
    with pytest.raises(ValueError, match="built for d = 3"):  # raised while tracing: no compile
        jax.eval_shape(lambda p: mt.MaceTnp(config).apply(p, obs, query, targets), params)


@pytest.mark.parametrize("fields, match", [
    (dict(num_vars=0), "num_vars must be a positive integer"),
    (dict(num_vars=2, embed_dim=10, num_heads=4), "divisible"),
    (dict(num_vars=2, diag_floor=0.0), "diag_floor must be positive"),
    (dict(num_vars=2, num_components=True), "num_components must be a positive integer"),
])
def test_config_rejects_invalid_fields(fields, match):
    with pytest.raises(ValueError, match=match):
        mt.MaceTnpConfig(**fields)


def test_config_presets_and_round_trip():
    with pytest.raises(ValueError, match="unknown MaceTnpConfig preset"):
        mt.MaceTnpConfig.preset("huge", num_vars=2)
    small = mt.MaceTnpConfig.preset("small", num_vars=2, num_layers=3)
    assert (small.embed_dim, small.hidden_dim, small.num_layers, small.num_components) == (32, 64, 3, 20)
    assert mt.MaceTnpConfig.from_dict(small.to_dict()) == small
    with pytest.raises(ValueError, match="unknown MaceTnpConfig fields"):
        mt.MaceTnpConfig.from_dict({**small.to_dict(), "extra": 1})


@pytest.mark.parametrize("fields, match", [
    (dict(num_steps=0), "num_steps"),
    (dict(clip_norm=0.0), "clip_norm"),
    (dict(warmup_fraction=1.0), "warmup_fraction"),
    (dict(learning_rate=float("nan")), "learning_rate"),
    (dict(weight_decay=-1.0), "weight_decay"),
])
def test_train_config_rejects_invalid_fields(fields, match):
    with pytest.raises(ValueError, match=match):
        mt.MaceTnpTrainConfig(**fields)


def test_optimizer_schedule_warms_up_and_decays():
    cfg = mt.MaceTnpTrainConfig(num_steps=100, warmup_fraction=0.1, learning_rate=1e-3)
    sched = _schedule(cfg)
    assert float(sched(0)) == 0.0
    np.testing.assert_allclose(float(sched(10)), 1e-3, rtol=1e-6)
    assert float(sched(55)) < 1e-3 and float(sched(100)) == pytest.approx(0.0, abs=1e-9)


# -------------------------------------------------------------------- persistence
def test_save_load_round_trip(fitted, batch, tmp_path):
    path = fitted.save(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    assert config["format"] == "activa_ppl.mace_tnp" and config["format_version"] == 1
    assert config["params_file"] == f"params-{config['params_sha256'][:12]}.npz"
    assert sorted(p.name for p in path.iterdir()) == sorted(["config.json", config["params_file"]])
    loaded = mt.load_mace_tnp(path)
    assert loaded.config == fitted.config and loaded.info == fitted.info
    a, b = fitted.predict_batch(*batch), loaded.predict_batch(*batch)
    np.testing.assert_array_equal(np.asarray(a.locs), np.asarray(b.locs))
    np.testing.assert_array_equal(np.asarray(a.covariances), np.asarray(b.covariances))


def test_load_refuses_foreign_corrupted_or_mismatched(fitted, tmp_path):
    path = fitted.save(tmp_path / "model")
    config = json.loads((path / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no config.json"):
        mt.load_mace_tnp(tmp_path / "nowhere")
    # an ACTIVA model (another format) is refused
    (path / "config.json").write_text(json.dumps({**config, "format": "activa_ppl.model"}))
    with pytest.raises(CheckpointError, match="not a MACE-TNP model"):
        mt.load_mace_tnp(path)
    # parameters of a d = 3 head under a d = 4 configuration
    (path / "config.json").write_text(json.dumps({**config, "model_config": {**config["model_config"], "num_vars": 4}}))
    with pytest.raises(CheckpointError, match="do not fit"):
        mt.load_mace_tnp(path)
    # a flipped byte in the parameter file
    (path / "config.json").write_text(json.dumps(config))
    params = path / config["params_file"]
    raw = bytearray(params.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    params.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="SHA-256"):
        mt.load_mace_tnp(path)


# -------------------------------------------------------------------- evaluation
@pytest.fixture(scope="module")
def gauss2():
    return ap.simulate.linear_dataset(num_scms=300, num_vars=2, noise="gauss", seed=0)


def test_predictor_uses_intervention_values_and_pads(gauss2):
    cfg = mt.MaceTnpConfig.preset("tiny", num_vars=2)
    fitted2 = mt.FittedMaceTnp(cfg, mt.init_params(cfg, jax.random.PRNGKey(1)))
    pred = mace_tnp_predictor(fitted2, batch_size=16)
    assert pred.label == "MACE-TNP" and pred.sets == MARGINAL_SET_NAMES
    assert pred.privileged == (INTERVENTION_VALUE,)
    tasks = gauss2.tasks("test")
    tasks = type(tasks)(*(np.asarray(a)[:40] for a in tasks))  # 40 tasks: chunks 16, 16, 8 (padded)
    mix = pred(tasks, gauss2)
    assert mix.batch_shape == (40,)
    values = gauss2.intervention_values[tasks.scm, tasks.query]
    assert np.all(values == 5.0)
    direct = fitted2.predict_batch(tasks.observational, tasks.targets, values)
    np.testing.assert_allclose(np.asarray(mix.locs), np.asarray(direct.locs), rtol=1e-5, atol=1e-5)
    result = evaluate(gauss2, {"MACE-TNP": pred}, split="test", max_scms=8, progress=False)  # 16 tasks
    assert set(result["MACE-TNP"]) >= {"all", "all_but_target"}
    assert np.isfinite(result["MACE-TNP"]["all"]["nll"]["mean"])


# ---------------------------------------------------------------------- training
TRAIN = mt.MaceTnpTrainConfig(num_steps=240, batch_size=16, eval_every=80, learning_rate=2e-3,
                              num_validation_tasks=60, seed=0)


@pytest.fixture(scope="module")
def trained(gauss2, tmp_path_factory):
    cfg = mt.MaceTnpConfig.preset("tiny", num_vars=2)
    workdir = tmp_path_factory.mktemp("mace_run")
    fitted2 = mt.train_mace_tnp(cfg, gauss2, config=TRAIN, workdir=workdir, progress=False)
    return cfg, fitted2, workdir


def test_training_lowers_validation_nll(trained, gauss2):
    cfg, fitted2, workdir = trained
    valid = gauss2.tasks("valid")
    arrays = (valid.observational, valid.targets, gauss2.intervention_values[valid.scm, valid.query],
              valid.interventional)
    initial = float(mt.validation_nll(cfg, mt.init_params(cfg, jax.random.PRNGKey(TRAIN.seed)), *arrays))
    final = float(mt.validation_nll(cfg, fitted2.params, *arrays))
    # measured: about 54 at initialisation, about 3.3 after 240 tiny steps
    assert final < min(initial - 10.0, 5.0), (initial, final)
    records = [json.loads(line) for line in (workdir / loop.METRICS_NAME).read_text().splitlines()]
    assert [r["step"] for r in records] == [80, 160, 240]
    assert fitted2.info["best_valid_nll"] == min(r["valid_nll"] for r in records)
    assert fitted2.info["best_step"] == records[int(np.argmin([r["valid_nll"] for r in records]))]["step"]
    assert all(np.isfinite(r["train_nll_per_sample"]) for r in records)


def test_interrupted_run_resumes_bit_identically(trained, gauss2, tmp_path, monkeypatch):
    cfg, fitted2, _ = trained
    real_save = loop.save_arrays

    def save_then_stop(path, arrays, meta=None):
        digest = real_save(path, arrays, meta)
        if meta["step"] >= 160:
            raise KeyboardInterrupt  # a kill right after the step-160 checkpoint
        return digest

    monkeypatch.setattr(loop, "save_arrays", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        mt.train_mace_tnp(cfg, gauss2, config=TRAIN, workdir=tmp_path, progress=False)
    monkeypatch.setattr(loop, "save_arrays", real_save)
    resumed = mt.train_mace_tnp(cfg, gauss2, config=TRAIN, workdir=tmp_path, progress=False)
    assert resumed.info["num_steps"] == 240
    for x, y in zip(jax.tree_util.tree_leaves(resumed.params), jax.tree_util.tree_leaves(fitted2.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # a finished run is returned as is; another configuration is refused
    again = mt.train_mace_tnp(cfg, gauss2, config=TRAIN, workdir=tmp_path, progress=False)
    assert again.info["best_step"] == resumed.info["best_step"]
    with pytest.raises(CheckpointError, match="different configuration"):
        mt.train_mace_tnp(cfg, gauss2, config=TRAIN, workdir=tmp_path, progress=False, learning_rate=1e-3)


def test_train_rejects_dataset_of_other_dimension(gauss2):
    with pytest.raises(ValueError, match="built for d = 3"):
        mt.train_mace_tnp(mt.MaceTnpConfig.preset("tiny", num_vars=3), gauss2, num_steps=1, progress=False)
    with pytest.raises(TypeError, match="MaceTnpConfig or MaceTnp"):
        mt.train_mace_tnp("tiny", gauss2, num_steps=1, progress=False)


def test_own_log_density_equals_the_library_one():
    """MACE-TNP's training log density (inverse factors) equals mixture_log_prob (the library's
    one log density, triangular solves) to float tolerance; see objective._log_prob for why
    MACE-TNP keeps its own formulation."""
    from activa_ppl.baselines.mace_tnp.objective import _log_prob
    from activa_ppl.mixture import mixture_log_prob

    rng = np.random.default_rng(0)
    t, k, d, n = 3, 4, 8, 5
    logits = rng.normal(size=(t, k)).astype(np.float32)
    locs = rng.normal(size=(t, k, d)).astype(np.float32)
    tril = np.tril(rng.normal(size=(t, k, d, d)) * 0.3) + np.eye(d) * rng.uniform(0.5, 2, (t, k, 1, 1))
    x = rng.normal(size=(t, n, d)).astype(np.float32)
    ours = _log_prob(logits, locs, jnp.asarray(tril, jnp.float32), x)
    ref = mixture_log_prob(jax.nn.log_softmax(logits), locs, jnp.asarray(tril, jnp.float32), np.swapaxes(x, 0, 1)).T
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-4, atol=1e-4)
