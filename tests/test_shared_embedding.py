"""The observational embedding shared between model and guide (issue 17): one step's loss and
gradients equal plain ``Trace_ELBO``'s to float tolerance, the parameter tree and SVI state are
unchanged, ``svi.run`` still works, and the compiled step does fewer FLOPs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
import pytest
from numpyro import handlers

from activa_ppl.config import ActivaConfig, TrainConfig
from activa_ppl.model import Activa, SharedEmbeddingELBO
from activa_ppl.training import svi_chunks

NUM_TASKS, NUM_OBS, NUM_VARS = 6, 12, 3
TOTAL = 40  # the training set the minibatch stands for (total_tasks scaling)

CONFIGS = {
    "tiny": ActivaConfig.preset("tiny"),
    # standardization (value channel) and the decoder's context (h' used by the decoder too)
    "standardized-context": ActivaConfig.preset("tiny", standardize=True, intervention_values=(5.0, -2.0),
                                                num_interventions=2, decoder_context=True),
}


def _batch(num_interventions: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(NUM_TASKS, NUM_OBS, NUM_VARS)).astype(np.float32)
    inter = (rng.normal(size=(NUM_TASKS, NUM_OBS, NUM_VARS)) + 1.0).astype(np.float32)
    targets = np.eye(NUM_VARS, dtype=np.float32)[np.arange(NUM_TASKS) % NUM_VARS]
    index = (np.arange(NUM_TASKS) % num_interventions).astype(np.int32)
    return tuple(jnp.asarray(a) for a in (obs, targets, index, inter))


def _loss_and_grads(activa, elbo, params, key, batch):
    model, guide = activa.scaled()

    def loss(p):
        return elbo.loss(key, p, model, guide, *batch, total_tasks=TOTAL)

    return jax.value_and_grad(loss)(params)


def _assert_grads_close(new, old, rtol=1e-4):
    """Float tolerance for gradients: per module, every entry within ``rtol`` × the module's
    largest gradient entry, and the whole gradient within ``rtol`` in relative L2 norm.

    Not per entry: some gradients are zero in exact arithmetic (e.g. of an attention key bias,
    to which the softmax is invariant) and both paths return float32 rounding noise there,
    which no two summation orders reproduce.
    """
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(old)
    for module in old:
        scale = max(float(jnp.abs(x).max()) for x in jax.tree_util.tree_leaves(old[module]))
        for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(new[module])[0],
                                jax.tree_util.tree_leaves(old[module])):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=rtol * scale,
                                       err_msg=f"{module} {jax.tree_util.keystr(path)}")
    flat_new, flat_old = (np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(t)]) for t in (new, old))
    assert np.linalg.norm(flat_new - flat_old) <= rtol * np.linalg.norm(flat_old)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_one_step_loss_and_gradients_equal_trace_elbo(name, key):
    activa = Activa(CONFIGS[name])
    params = activa.init_params(jax.random.PRNGKey(1), NUM_VARS, NUM_OBS)
    batch = _batch(activa.config.num_interventions)
    old_loss, old_grads = _loss_and_grads(activa, activa.elbo(), params, key, batch)
    new_loss, new_grads = _loss_and_grads(activa, activa.elbo(shared_embedding=True), params, key, batch)
    assert np.isfinite(float(old_loss))
    np.testing.assert_allclose(float(new_loss), float(old_loss), rtol=1e-5)
    _assert_grads_close(new_grads, old_grads)
    # every module gets its gradient, the shared encoder's included
    assert set(new_grads) == {f"{m}$params" for m in activa.modules}
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(new_grads["obs_embedding$params"]))


def test_encoder_runs_once_in_the_traces(key):
    """With ``h_obs`` neither callable runs the observational encoder; without it both do."""
    activa = Activa(CONFIGS["tiny"])
    params = activa.init_params(jax.random.PRNGKey(1), NUM_VARS, NUM_OBS)
    batch = _batch()
    h = activa.observational_embedding(params, *batch[:3])
    assert h.shape == (NUM_TASKS, NUM_VARS, activa.config.embed_dim)
    for fn in (activa.model, activa.guide):
        plain = handlers.trace(handlers.seed(handlers.substitute(fn, data=params), key)).get_trace(*batch)
        shared = handlers.trace(handlers.seed(handlers.substitute(fn, data=params), key)).get_trace(
            *batch, h_obs=h)
        assert "obs_embedding$params" in plain and "obs_embedding$params" not in shared
        np.testing.assert_allclose(shared["z"]["value"], plain["z"]["value"], rtol=1e-5, atol=1e-6)


def test_svi_init_state_and_run_unchanged(key):
    """SVI init registers every param site (same tree as ``init_params``); ``svi.run`` works with
    the shared ELBO, with and without ``subsample_size`` (which turns sharing off)."""
    activa = Activa(CONFIGS["tiny"])
    batch = _batch()
    optim = numpyro.optim.optax_to_numpyro(optax.adam(1e-3))
    old, new = activa.svi(optim), activa.svi(optim, shared_embedding=True)
    assert isinstance(new.loss, SharedEmbeddingELBO)
    s_old = old.init(key, *batch, total_tasks=TOTAL)
    s_new = new.init(key, *batch, total_tasks=TOTAL)
    assert jax.tree_util.tree_structure(s_old) == jax.tree_util.tree_structure(s_new)
    for a, b in zip(jax.tree_util.tree_leaves(s_old), jax.tree_util.tree_leaves(s_new)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    shapes = jax.eval_shape(lambda k: activa.init_params(k, NUM_VARS, NUM_OBS), key)
    assert jax.tree_util.tree_structure(old.get_params(s_old)) == jax.tree_util.tree_structure(shapes)
    (_, l_old), (_, l_new) = old.update(s_old, *batch, total_tasks=TOTAL), new.update(s_new, *batch, total_tasks=TOTAL)
    np.testing.assert_allclose(float(l_new), float(l_old), rtol=1e-5)
    result = new.run(key, 3, *batch, total_tasks=TOTAL, progress_bar=False)
    assert result.losses.shape == (3,) and np.all(np.isfinite(result.losses))
    sub = activa.svi(optim, subsample_size=4, shared_embedding=True)
    result = sub.run(key, 3, *batch, progress_bar=False)
    assert np.all(np.isfinite(result.losses))
    assert set(result.params) == {f"{m}$params" for m in activa.modules}


def test_svi_chunks_paths_agree_and_shared_does_fewer_flops():
    """The default chunk (shared) and the old path (``shared_embedding=False``): the same initial
    state, first-step losses equal to float tolerance, and fewer FLOPs per compiled step."""
    activa = Activa(CONFIGS["tiny"])
    batch = _batch()
    arrays = tuple(jnp.concatenate([a] * 3) for a in batch)  # 18 tasks, minibatches of 6
    config = TrainConfig(batch_size=NUM_TASKS, eval_every=1, seed=3)
    runs, flops = {}, {}
    for shared in (True, False):
        chunks = svi_chunks(activa, config, arrays[0].shape[0], shared_embedding=shared)
        state = chunks.init(*arrays)
        args = (state, np.int32(1), chunks.batch_key, *arrays)
        flops[shared] = chunks.compiled.lower(*args).compile().cost_analysis()["flops"]
        runs[shared] = (state, chunks.run(1, state, *arrays)[1])
    for a, b in zip(jax.tree_util.tree_leaves(runs[True][0]), jax.tree_util.tree_leaves(runs[False][0])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(runs[True][1]), np.asarray(runs[False][1]), rtol=1e-5)
    assert flops[True] < 0.9 * flops[False]
