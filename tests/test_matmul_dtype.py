"""``ActivaConfig.matmul_dtype`` (issue 17): the float32 default changes nothing (no extra Flax
arguments, configuration files as before), bfloat16 keeps the parameter tree and float32
parameters, really multiplies in bfloat16, and lands close to float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from activa_ppl.config import ActivaConfig
from activa_ppl.model import Activa, predictive_arrays
from activa_ppl.networks import attention_kwargs, dense_kwargs

D, N, Q = 3, 12, 5


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    obs = jnp.asarray(rng.normal(size=(Q, N, D)), jnp.float32)
    targets = jnp.asarray(np.eye(D, dtype=np.float32)[np.arange(Q) % D])
    return obs, targets, jnp.zeros((Q,), jnp.int32)


def test_default_is_float32_and_adds_nothing():
    cfg = ActivaConfig()
    assert cfg.matmul_dtype == "float32"
    assert dense_kwargs(cfg.matmul_dtype) == {} and attention_kwargs(cfg.matmul_dtype) == {}
    # files of float32 models stay as they were; files without the field read as float32
    assert "matmul_dtype" not in cfg.to_dict()
    assert ActivaConfig.from_dict(cfg.to_dict()) == cfg
    bf16 = ActivaConfig.preset("tiny", matmul_dtype="bfloat16")
    assert bf16.to_dict()["matmul_dtype"] == "bfloat16" and ActivaConfig.from_dict(bf16.to_dict()) == bf16
    for presets in ActivaConfig.PRESETS.values():
        assert "matmul_dtype" not in presets


@pytest.mark.parametrize("bad", ["float16", "bf16", None, 32])
def test_invalid_matmul_dtype(bad):
    with pytest.raises(ValueError, match="matmul_dtype"):
        ActivaConfig(matmul_dtype=bad)


def test_bfloat16_same_params_bf16_dots_and_close_prediction(key):
    f32 = Activa(ActivaConfig.preset("tiny"))
    b16 = Activa(ActivaConfig.preset("tiny", matmul_dtype="bfloat16"))
    p32, p16 = f32.init_params(key, D, N), b16.init_params(key, D, N)
    assert jax.tree_util.tree_structure(p32) == jax.tree_util.tree_structure(p16)
    for a, b in zip(jax.tree_util.tree_leaves(p32), jax.tree_util.tree_leaves(p16)):
        assert b.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    obs, targets, index = _inputs()
    jaxpr = str(jax.make_jaxpr(lambda p: b16.apply(p, "obs_embedding", obs, jnp.zeros((Q, N, D, 1))))(p32))
    assert "bf16" in jaxpr and "preferred_element_type=float32" in jaxpr
    assert "bf16" not in str(jax.make_jaxpr(lambda p: f32.apply(p, "obs_embedding", obs, jnp.zeros((Q, N, D, 1))))(p32))
    h32 = f32.observational_embedding(p32, obs, targets, index)
    h16 = b16.observational_embedding(p32, obs, targets, index)
    assert h16.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(h16), np.asarray(h32), atol=0.05 * float(jnp.abs(h32).max()))
    # the decoder on fixed latents (the predictive mixture samples z, whose component choice
    # may flip with the logits, so it is only checked for dtype and finiteness)
    z = jax.random.normal(key, (Q, D))
    for a, b in zip(f32.apply(p32, "decoder", z), b16.apply(p32, "decoder", z)):
        assert b.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=0.05 * float(jnp.abs(a).max()))
    for b in predictive_arrays(b16, p32, key, obs, targets, index, 4):
        assert b.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(b)))


def test_bfloat16_loss_close_to_float32(key):
    f32 = Activa(ActivaConfig.preset("tiny"))
    b16 = Activa(ActivaConfig.preset("tiny", matmul_dtype="bfloat16"))
    params = f32.init_params(key, D, N)
    obs, targets, index = _inputs()
    inter = obs + 1.0
    losses = []
    for activa in (f32, b16):
        model, guide = activa.scaled()
        elbo = activa.elbo(shared_embedding=True)
        losses.append(float(elbo.loss(jax.random.PRNGKey(7), params, model, guide, obs, targets, index, inter)))
    assert np.isfinite(losses).all()
    assert abs(losses[1] - losses[0]) <= 0.02 * abs(losses[0])
