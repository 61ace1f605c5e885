"""The model-quality variants (not in the paper; off by default): the decoder conditioned on the
observational context, the Cholesky covariance head, the learning-rate schedule, per-step sample
subsets and the time budget. Each is checked for what it promises; the defaults must leave the
paper's model and the previous training untouched (tests/test_zoo_golden.py covers the shipped
models)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import activa_ppl as ap
from activa_ppl import training
from activa_ppl.config import TrainConfig

TINY = dict(num_predictive_latents=3, num_validation_latents=2)


@pytest.fixture(scope="module")
def data():
    return ap.simulate.linear_dataset(num_scms=40, num_vars=3, num_samples=12, seed=0)


def _arrays(task_factory, d=3):
    return task_factory(np.random.default_rng(0), 4, 6, d)


@pytest.mark.parametrize("overrides", [dict(decoder_context=True), dict(covariance_head="cholesky"),
                                       dict(decoder_context=True, covariance_head="cholesky")])
def test_variant_parameters_and_prediction(overrides, task_factory):
    activa = ap.Activa(ap.ActivaConfig.preset("tiny", **TINY, **overrides))
    params = jax.jit(lambda k: activa.init_params(k, num_vars=3, num_samples=6))(jax.random.PRNGKey(0))
    decoder = params["decoder$params"]
    assert ("context" in decoder) == overrides.get("decoder_context", False)
    assert ("diagonal" in decoder) == (overrides.get("covariance_head") == "cholesky")
    obs, targets, index, _ = _arrays(task_factory)
    mix = ap.predictive_mixture(activa, params, jax.random.PRNGKey(1), obs, targets, index, 3)
    assert mix.batch_shape == (4,) and mix.num_components == 3 * activa.config.decoder_components
    assert np.all(np.linalg.eigvalsh(np.asarray(mix.covariances)) > 0)


def test_cholesky_head_floors_every_variance(task_factory):
    """Σ = L Lᵀ + εI with diag(L) ≥ floor: every component variance is at least floor²."""
    floor = 0.3
    activa = ap.Activa(ap.ActivaConfig.preset("tiny", **TINY, covariance_head="cholesky", cholesky_floor=floor))
    params = activa.init_params(jax.random.PRNGKey(0), num_vars=3)
    # push the diagonal's pre-activations far negative: softplus -> 0, the floor remains
    dec = params["decoder$params"]
    dec = {**dec, "diagonal": {"kernel": dec["diagonal"]["kernel"] * 0, "bias": dec["diagonal"]["bias"] * 0 - 50}}
    z = jax.random.normal(jax.random.PRNGKey(2), (5, 3))
    _, _, cov = activa.apply({**params, "decoder$params": dec}, "decoder", z)
    variances = np.diagonal(np.asarray(cov), axis1=-2, axis2=-1)
    np.testing.assert_allclose(variances.min(), floor**2 + activa.config.covariance_eps, rtol=0, atol=1e-4)
    assert np.all(variances >= floor**2)


def test_decoder_context_changes_the_prediction_with_the_data(task_factory):
    """With context the decoded mixture depends on D_obs beyond z: the same latent draw decodes
    differently for two datasets."""
    activa = ap.Activa(ap.ActivaConfig.preset("tiny", **TINY, decoder_context=True))
    params = activa.init_params(jax.random.PRNGKey(0), num_vars=3)
    obs, targets, index, _ = _arrays(task_factory)
    rep = ap.intervention_representation(targets, index, 1, obs.shape[1])
    h = activa.apply(params, "obs_embedding", obs, rep)
    z = jnp.zeros((4, 3))
    _, locs, _ = activa.apply(params, "decoder", z, h)
    assert not np.allclose(np.asarray(locs[0]), np.asarray(locs[1]))
    with pytest.raises(ValueError, match="needs the context"):
        activa.apply(params, "decoder", z)


def test_config_rejects_unknown_head_and_non_bool_context():
    with pytest.raises(ValueError, match="covariance_head"):
        ap.ActivaConfig(covariance_head="full")
    with pytest.raises(ValueError, match="decoder_context must be a bool"):
        ap.ActivaConfig(decoder_context=1)
    with pytest.raises(ValueError, match="cholesky_floor"):
        ap.ActivaConfig(cholesky_floor=0)


def test_samples_per_task_draws_sample_subsets(task_factory):
    arrays = task_factory(np.random.default_rng(0), 10, 12, 3, num_int=9)
    obs, targets, index, inter = training._minibatch(jax.random.PRNGKey(0), arrays, 10, 4, 5)
    assert obs.shape == (4, 5, 3) and inter.shape == (4, 5, 3) and targets.shape == (4, 3)
    # every kept sample is a real sample of its task, without repetition
    full = training._minibatch(jax.random.PRNGKey(0), arrays, 10, 4)
    for t in range(4):
        rows = {tuple(r) for r in np.asarray(full[0][t])}
        kept = [tuple(r) for r in np.asarray(obs[t])]
        assert set(kept) <= rows and len(set(kept)) == 5
    # without a subset, the batch is the previous draw bit for bit
    same = training._minibatch(jax.random.PRNGKey(0), arrays, 10, 4, None)
    assert all(np.array_equal(a, b) for a, b in zip(same, full))


def test_schedule_subsets_and_budget_in_a_run(data, tmp_path):
    activa = ap.Activa(ap.ActivaConfig.preset("tiny", **TINY))
    config = TrainConfig(num_steps=8, eval_every=2, batch_size=8, num_validation_tasks=8,
                         lr_schedule="warmup_cosine", learning_rate=1e-3, warmup_steps=4,
                         samples_per_task=6)
    fitted = ap.train(activa, data, config=config, workdir=tmp_path, progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6, 8] and fitted.info["num_steps"] == 8
    rates = [r["learning_rate"] for r in records]
    np.testing.assert_allclose(rates[:2], [5e-4, 1e-3], rtol=1e-6)  # warm-up, then the peak
    assert rates[1] > rates[2] > rates[3] == pytest.approx(0.0, abs=1e-12)  # cosine to 0 at num_steps
    assert all(np.isfinite(r["train_loss_per_sample"]) for r in records)
    # the cosine spans num_steps: extending the run would change it, so resume refuses
    with pytest.raises(ap.CheckpointError, match="different configuration"):
        ap.train(activa, data, config=config, num_steps=12, workdir=tmp_path, progress=False)
    # a time budget stops after the first chunk that reaches it
    short = ap.train(activa, data, config=TrainConfig(num_steps=8, eval_every=2, batch_size=8,
                                                      num_validation_tasks=8, time_budget_s=1e-6),
                     progress=False)
    assert short.info["num_steps"] == 2


@pytest.mark.parametrize("field,value", [("lr_schedule", "linear"), ("warmup_steps", -1),
                                         ("samples_per_task", 1), ("decay_steps", 0),
                                         ("time_budget_s", 0.0)])
def test_train_config_rejects_bad_variant_fields(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_standardized_context_run_resumes(data, tmp_path):
    """A standardized model (whose config holds the tuple ``intervention_values``, a list once
    read back from the checkpoint's JSON) resumes from its workdir and extends its run."""
    activa = ap.Activa(ap.ActivaConfig.preset("tiny", **TINY, standardize=True, intervention_values=(5.0,),
                                              decoder_context=True))
    config = TrainConfig(num_steps=2, eval_every=2, batch_size=8, num_validation_tasks=8, samples_per_task=6)
    ap.train(activa, data, config=config, workdir=tmp_path, progress=False)
    longer = ap.train(activa, data, config=config, num_steps=4, workdir=tmp_path, progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4] and longer.info["num_steps"] == 4


def test_cli_variant_flags_reach_the_configs(tmp_path, monkeypatch):
    """`activa train`'s model-quality options set the ActivaConfig and TrainConfig fields they name."""
    from activa_ppl.cli import main

    ap.simulate.linear_dataset(num_scms=10, num_vars=2, num_samples=6, seed=0).save(tmp_path / "d")
    seen = {}

    def fake_train(activa, data, **kwargs):
        seen.update(config=activa.config, **kwargs)
        raise ap.TrainingDiverged("stopped by the test")

    monkeypatch.setattr(training, "train", fake_train)
    argv = ["train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "m"), "--preset", "tiny", "--quiet",
            "--standardize", "--decoder-context", "--beta", "1.0", "--num-particles", "1",
            "--predictive-latents", "100", "--validation-latents", "20", "--samples-per-task", "4",
            "--lr-schedule", "warmup_cosine", "--warmup-steps", "3", "--time-budget-s", "60"]
    assert main(argv) == 2
    cfg = seen["config"]
    assert (cfg.standardize, cfg.decoder_context, cfg.beta, cfg.num_particles) == (True, True, 1.0, 1)
    assert (cfg.num_predictive_latents, cfg.num_validation_latents) == (100, 20)
    assert (seen["samples_per_task"], seen["lr_schedule"], seen["warmup_steps"], seen["time_budget_s"]) == \
        (4, "warmup_cosine", 3, 60.0)
    # without the options, the preset's values (the paper's β, particles and latents)
    assert main(argv[:7]) == 2
    assert (seen["config"].beta, seen["config"].num_particles, seen["config"].num_predictive_latents) == (0.5, 2, 10)


def test_recommended_configs_are_the_documented_recipe():
    """``ActivaConfig.recommended`` / ``TrainConfig.recommended``: the preset plus exactly the
    recipe's fields (docs/concepts.md), overridable; ``preset`` stays Eq. 4."""
    config = ap.ActivaConfig.recommended("tiny", num_particles=3)
    paper = ap.ActivaConfig.preset("tiny")
    changed = {f for f in config.to_dict() if config.to_dict()[f] != paper.to_dict()[f]}
    assert changed == {"decoder_context", "beta", "num_predictive_latents", "num_validation_latents",
                       "num_particles"}
    assert (config.decoder_context, config.beta, config.num_predictive_latents) == (True, 1.0, 100)
    assert ap.ActivaConfig.recommended().embed_dim == ap.ActivaConfig.preset("small").embed_dim
    assert not paper.decoder_context and paper.beta == 0.5
    train = TrainConfig.recommended(20000, seed=3)
    assert (train.samples_per_task, train.learning_rate, train.lr_schedule, train.warmup_steps,
            train.num_steps, train.seed) == (32, 1e-3, "warmup_cosine", 500, 20000, 3)
    assert TrainConfig.recommended(1200).warmup_steps == 120  # a tenth of a short run
    assert TrainConfig.recommended(1200, warmup_steps=0).warmup_steps == 0
