"""Tests of activa_ppl.model and activa_ppl.handlers.beta_kl: the β-ELBO of Eq. 5 against a hand
computation from NumPyro traces, its gradient, the composition of scales (total_tasks,
subsampled plate), model/guide shapes and the prior-predictive mixture.

All Monte-Carlo quantities use fixed keys; the identities checked are exact for a given key, so
their tolerances are float32 round-off (vmap over particles vs a Python loop), not MC error.
The one MC comparison (model samples vs predictive mixture) uses standard errors.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpyro import handlers
from numpyro.infer import Trace_ELBO

import activa_ppl as ap
from activa_ppl.handlers import beta_kl
from activa_ppl.interventions import intervention_representation
from activa_ppl.model import decoded_distribution, predictive_arrays, prior_distribution

T, N_OBS, N_INT, D = 6, 5, 4, 3  # tasks, observational / interventional samples, variables
BETA = 0.3  # deliberately not the config's 0.5
K = 7.0  # total_tasks = K * T
B = 2  # subsample size
NUM_PARTICLES = 4
ELBO = Trace_ELBO(num_particles=NUM_PARTICLES)


# ------------------------------------------------------------------ hand computation ----
def particle_traces(activa, params, key, args, kwargs):
    """The traces of the UNscaled model and guide that Trace_ELBO builds for one particle."""
    model_seed, guide_seed = jax.random.split(key)
    guide = handlers.substitute(handlers.seed(activa.guide, guide_seed), data=params)
    guide_tr = handlers.trace(guide).get_trace(*args, **kwargs)
    model = handlers.substitute(
        handlers.replay(handlers.seed(activa.model, model_seed), guide_tr), data=params)
    model_tr = handlers.trace(model).get_trace(*args, **kwargs)
    return model_tr, guide_tr


def raw_log_prob(site):
    """Sum of the site's log density, ignoring any scale."""
    return jnp.sum(site["fn"].log_prob(site["value"]))


def particle_terms(activa, params, key, args, **kwargs):
    """``(NUM_PARTICLES, 3)``: log p(x|z), log p(z), log q(z) of each particle, summed over the
    tasks, from the unscaled traces. Particles run one after the other (``lax.map``), i.e.
    unbatched, independently of Trace_ELBO's ``vmap`` over particles."""

    def one(particle_key):
        model_tr, guide_tr = particle_traces(activa, params, particle_key, args, kwargs)
        return jnp.stack([raw_log_prob(model_tr["interventional"]), raw_log_prob(model_tr["z"]),
                          raw_log_prob(guide_tr["z"])])

    return jax.lax.map(one, jax.random.split(key, NUM_PARTICLES))


def hand_loss(terms, beta, scale=1.0):
    """Mean over particles of −scale·[log p(x|z) + β(log p(z) − log q(z))] (float64)."""
    terms = np.asarray(terms, np.float64)
    return float(np.mean(-scale * (terms[:, 0] + beta * (terms[:, 1] - terms[:, 2]))))


@pytest.fixture(scope="module")
def activa():
    """The tiny model with a larger covariance floor ε.

    With the preset's ε = 1e-4 the decoded covariances of untrained parameters are so badly
    conditioned that the log-likelihood is ~ −2500 per sample and float32 round-off of batched
    vs unbatched Cholesky solves differs by ~1e-4 relatively; ε = 0.05 keeps the comparison at
    float32 precision. ε is not a parameter, so the shared tiny parameters fit unchanged.
    """
    import activa_ppl as ap

    return ap.Activa(ap.ActivaConfig.preset("tiny", covariance_eps=0.05))


@pytest.fixture(scope="module")
def args(task_factory):
    return task_factory(np.random.default_rng(1), T, N_OBS, D, num_int=N_INT)


@pytest.fixture(scope="module")
def losses(activa, tiny_params, args):
    """Every loss value of this module, from one compiled function."""

    @jax.jit
    def compute(params, key):
        bm, bg = beta_kl(activa.model, beta=BETA), beta_kl(activa.guide, beta=BETA)
        one_m, one_g = beta_kl(activa.model, beta=1.0), beta_kl(activa.guide, beta=1.0)
        return {
            "beta": ELBO.loss(key, params, bm, bg, *args),
            "beta_one": ELBO.loss(key, params, one_m, one_g, *args),
            "plain": ELBO.loss(key, params, activa.model, activa.guide, *args),
            "beta_total": ELBO.loss(key, params, bm, bg, *args, total_tasks=K * T),
            "beta_sub": ELBO.loss(key, params, bm, bg, *args, subsample_size=B),
            "config_beta": ELBO.loss(key, params, *activa.scaled(), *args),
            "terms": particle_terms(activa, params, key, args),
            "terms_sub": particle_terms(activa, params, key, args, subsample_size=B),
        }

    out = compute(tiny_params, jax.random.PRNGKey(2024))
    values = {k: float(v) for k, v in out.items() if not k.startswith("terms")}
    values["hand_beta"] = hand_loss(out["terms"], BETA)
    values["hand_one"] = hand_loss(out["terms"], 1.0)
    values["hand_total"] = hand_loss(out["terms"], BETA, scale=K)
    values["hand_config_beta"] = hand_loss(out["terms"], activa.config.beta)
    values["hand_sub"] = hand_loss(out["terms_sub"], BETA, scale=T / B)
    values["kl_terms"] = np.asarray(out["terms"])[:, 1:]
    return values


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


# ------------------------------------------------------------------------- β-ELBO values ----
def test_beta_loss_equals_hand_computation(losses):
    assert math.isfinite(losses["beta"])
    assert _rel(losses["beta"], losses["hand_beta"]) < 1e-5, losses


def test_beta_one_equals_plain_elbo(losses):
    assert _rel(losses["beta_one"], losses["plain"]) < 1e-6
    assert _rel(losses["plain"], losses["hand_one"]) < 1e-5


def test_beta_changes_the_loss(losses):
    """Guard: β really enters (the KL term is not zero for these params)."""
    assert _rel(losses["beta"], losses["beta_one"]) > 1e-4


def test_scaled_uses_config_beta(activa, losses):
    assert activa.config.beta != BETA
    assert _rel(losses["config_beta"], losses["hand_config_beta"]) < 1e-5


def test_total_tasks_scaling_composes(losses):
    """model(..., total_tasks=K·T) multiplies every term (likelihood and β-KL) by K."""
    assert _rel(losses["beta_total"], K * losses["beta"]) < 1e-5
    assert _rel(losses["beta_total"], losses["hand_total"]) < 1e-5


def test_subsampled_plate_composes(losses):
    """With subsample_size=B the β-ELBO is the hand value on the guide's subsample × T/B."""
    assert _rel(losses["beta_sub"], losses["hand_sub"]) < 1e-5
    assert abs(losses["beta_sub"] - losses["beta"]) > 1e-3  # a different (sub)set of tasks


def test_kl_term_is_not_degenerate(losses):
    """Guard: log p(z) − log q(z) is far from zero, so β is really tested."""
    kl = losses["kl_terms"]
    assert np.all(np.abs(kl[:, 0] - kl[:, 1]) > 1.0)


def test_site_scales(tiny_activa, tiny_params, args):
    """β multiplies only the latent site's scale, composed with the plate / total_tasks scales;
    the observed site keeps the plain plate scale. Traced abstractly (nothing compiled)."""
    activa, scales = tiny_activa, {}

    def record(tag, **kwargs):
        def fn(params, key):
            m_seed, g_seed = jax.random.split(key)
            guide = handlers.substitute(handlers.seed(beta_kl(activa.guide, beta=BETA), g_seed),
                                        data=params)
            g_tr = handlers.trace(guide).get_trace(*args, **kwargs)
            model = handlers.substitute(handlers.replay(
                handlers.seed(beta_kl(activa.model, beta=BETA), m_seed), g_tr), data=params)
            m_tr = handlers.trace(model).get_trace(*args, **kwargs)
            scales[tag] = (m_tr["z"]["scale"], g_tr["z"]["scale"], m_tr["interventional"]["scale"])
            return 0.0

        jax.eval_shape(fn, tiny_params, jax.random.PRNGKey(0))

    record("full")
    record("total", total_tasks=K * T)
    record("sub", subsample_size=B)
    assert scales["full"] == (BETA, BETA, None)
    np.testing.assert_allclose(scales["total"], (BETA * K, BETA * K, K), rtol=1e-12)
    np.testing.assert_allclose(scales["sub"], (BETA * T / B, BETA * T / B, T / B), rtol=1e-12)


@pytest.mark.parametrize("beta", [0, 0.0, -0.5, float("nan"), None, "0.5"])
def test_beta_must_be_positive(tiny_activa, beta):
    with pytest.raises(ValueError, match="beta"):
        beta_kl(tiny_activa.model, beta=beta)


def test_beta_kl_as_context_manager(tiny_activa, tiny_params, args):
    """``with beta_kl(beta=β):`` scales the latent site like the wrapper does."""
    found = {}

    def fn(params):
        with handlers.trace() as tr, beta_kl(beta=BETA):
            handlers.substitute(handlers.seed(tiny_activa.guide, 0), data=params)(*args)
        found["scale"] = tr["z"]["scale"]
        return 0.0

    jax.eval_shape(fn, tiny_params)
    assert found["scale"] == BETA


# ------------------------------------------------------------------------------ gradient ----
def test_beta_gradient_equals_hand_gradient(activa, tiny_params, args):
    key = jax.random.PRNGKey(31)

    def hand(params):  # the hand β-loss, differentiable (jnp, float32)
        terms = particle_terms(activa, params, key, args)
        return jnp.mean(-(terms[:, 0] + BETA * (terms[:, 1] - terms[:, 2])))

    @jax.jit
    def grads(params):
        bm, bg = beta_kl(activa.model, beta=BETA), beta_kl(activa.guide, beta=BETA)
        g_elbo = jax.grad(lambda p: ELBO.loss(key, p, bm, bg, *args))(params)
        return g_elbo, jax.grad(hand)(params)

    g_elbo, g_hand = grads(tiny_params)
    flat_elbo = jax.tree_util.tree_leaves_with_path(g_elbo)
    flat_hand = jax.tree_util.tree_leaves(g_hand)
    scale = max(float(jnp.max(jnp.abs(g))) for g in flat_hand)
    assert scale > 0
    worst_global, worst_leaf = 0.0, 0.0
    for (path, a), b in zip(flat_elbo, flat_hand):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert np.all(np.isfinite(a)), jax.tree_util.keystr(path)
        diff = np.max(np.abs(a - b))
        worst_global = max(worst_global, diff / scale)
        worst_leaf = max(worst_leaf, diff / max(np.max(np.abs(b)), 1e-3 * scale))
    # Relative to the gradient's overall size ~1e-5, and no leaf off by more than 1e-4 of its own
    # size (float32 round-off; batched vs unbatched particles).
    assert worst_global < 1e-5, f"gradient error {worst_global:.2e} of max |grad|"
    assert worst_leaf < 1e-4, f"leaf-relative gradient error {worst_leaf:.2e}"
    # Every module receives gradient (the guide-only int_embedding/posterior through the KL).
    for name, tree in g_hand.items():
        assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(tree)) > 0, name


# ------------------------------------------------------------------- model/guide shapes ----
def test_param_layout_matches_svi_init(tiny_activa, tiny_params, args):
    """The params used throughout the tests have the layout SVI creates (checked abstractly)."""
    svi = numpyro.infer.SVI(tiny_activa.model, tiny_activa.guide, numpyro.optim.Adam(1e-3),
                            Trace_ELBO())
    shapes = jax.eval_shape(lambda k: svi.get_params(svi.init(k, *args)), jax.random.PRNGKey(0))
    assert set(shapes) == {f"{m}$params" for m in
                           ("obs_embedding", "prior", "decoder", "int_embedding", "posterior")}
    assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(tiny_params)
    for a, b in zip(jax.tree_util.tree_leaves(shapes), jax.tree_util.tree_leaves(tiny_params)):
        assert a.shape == b.shape and a.dtype == b.dtype


@pytest.mark.parametrize("d,num_samples", [(1, 1), (2, 7), (5, 3)])
def test_model_sample_shapes(tiny_activa, tiny_params, task_factory, d, num_samples):
    obs, targets, index, _ = task_factory(np.random.default_rng(0), 4, 6, d)

    def fn(params, key):
        model = handlers.substitute(handlers.seed(tiny_activa.model, key), data=params)
        tr = handlers.trace(model).get_trace(obs, targets, index, num_samples=num_samples)
        return tr["z"]["value"], tr["interventional"]["value"]

    z, v = jax.eval_shape(fn, tiny_params, jax.random.PRNGKey(0))
    assert z.shape == (4, d)
    assert v.shape == (4, num_samples, d)


def test_guide_needs_interventional(tiny_activa, args):
    obs, targets, index, _ = args
    with pytest.raises(ValueError, match="interventional"):
        tiny_activa.guide(obs, targets, index)


def test_subsample_and_total_tasks_are_exclusive(tiny_activa, tiny_params, args):
    model = handlers.substitute(handlers.seed(tiny_activa.model, 0), data=tiny_params)
    with pytest.raises(ValueError, match="total_tasks"):
        model(*args, subsample_size=2, total_tasks=100)


def test_elbo_and_svi_settings(tiny_activa):
    assert tiny_activa.elbo().num_particles == tiny_activa.config.num_particles
    svi = tiny_activa.svi(numpyro.optim.Adam(1e-3), subsample_size=3)
    assert isinstance(svi.model, beta_kl) and svi.model.beta == tiny_activa.config.beta


# ------------------------------------------------------------------ predictive mixture ----
def test_predictive_arrays_match_manual_composition(tiny_activa, tiny_params, args):
    """predictive_arrays = uniform mixture over S prior draws of the decoded B-mixtures."""
    activa, s = tiny_activa, 4
    obs, targets, index, _ = args
    key = jax.random.PRNGKey(8)

    @jax.jit
    def both(params):
        cfg = activa.config
        rep = intervention_representation(targets, index, cfg.num_interventions, obs.shape[-2])
        h = activa.apply(params, "obs_embedding", obs, rep)
        logits, locs = activa.apply(params, "prior", h)
        z = prior_distribution(logits, locs, cfg.prior_variance).sample(key, (s,))  # (S, Q, d)
        dec = [activa.apply(params, "decoder", z[i]) for i in range(s)]
        return predictive_arrays(activa, params, key, obs, targets, index, s), dec

    (w, m, c), dec = both(tiny_params)
    b = tiny_activa.config.decoder_components
    for q in range(T):
        for i in range(s):
            dl, dm, dc = (np.asarray(x[q]) for x in dec[i])
            sl = slice(i * b, (i + 1) * b)
            np.testing.assert_allclose(w[q, sl], np.exp(dl - np.logaddexp.reduce(dl)) / s,
                                       rtol=1e-5)
            np.testing.assert_allclose(m[q, sl], dm, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(c[q, sl], dc, rtol=1e-5, atol=1e-6)


def test_model_samples_match_predictive_mixture(tiny_activa, tiny_params, task_factory):
    """Monte Carlo: samples from the generative model (z ~ prior, v ~ decoder) and the predictive
    mixture of predictive_arrays describe the same distribution (means and variances within
    5 standard errors)."""
    activa, copies, s = tiny_activa, 3000, 3000
    obs, targets, index, _ = task_factory(np.random.default_rng(3), 1, N_OBS, D)
    rep = lambda a: jnp.repeat(a, copies, axis=0)  # noqa: E731

    @jax.jit
    def run(params, key):
        k1, k2 = jax.random.split(key)
        model = handlers.substitute(handlers.seed(activa.model, k1), data=params)
        tr = handlers.trace(model).get_trace(rep(obs), rep(targets), rep(index), num_samples=1)
        pred = predictive_arrays(activa, params, k2, obs, targets, index, s)
        return tr["interventional"]["value"][:, 0], pred

    v, (w, m, c) = run(tiny_params, jax.random.PRNGKey(5))
    v, w, m, c = (np.asarray(x, np.float64) for x in (v, w[0], m[0], c[0]))
    mix_mean = (w[:, None] * m).sum(0)
    mix_var = (w[:, None] * (np.diagonal(c, axis1=-2, axis2=-1) + m**2)).sum(0) - mix_mean**2
    # Standard errors: the sample mean of `copies` draws, and the mean of a mixture built from
    # S latent draws (each latent contributes its decoded mean; spread of those per coordinate).
    lat_means = (w.reshape(s, -1)[..., None] * m.reshape(s, -1, D)).sum(1) * s  # (S, d)
    se = np.sqrt(v.var(0) / copies + lat_means.var(0) / s)
    assert np.all(np.abs(v.mean(0) - mix_mean) < 5 * se), (v.mean(0), mix_mean, se)
    # Variance: SE of a sample variance ≈ var·sqrt(2/(n−1)) (near-Gaussian), plus the mixture's
    # own MC error, bounded by the same formula with S draws.
    se_var = mix_var * np.sqrt(2 / (copies - 1)) + mix_var * np.sqrt(2 / (s - 1))
    assert np.all(np.abs(v.var(0) - mix_var) < 5 * se_var), (v.var(0), mix_var)


def test_decoded_and_prior_distribution_shapes():
    logits = jnp.zeros((3, 4))
    locs = jnp.zeros((3, 4, 2))
    p = prior_distribution(logits, locs, 0.1)
    assert p.batch_shape == (3,) and p.event_shape == (2,)
    np.testing.assert_allclose(np.asarray(p.variance), 0.1, rtol=1e-6)
    covs = jnp.broadcast_to(jnp.eye(2), (3, 4, 2, 2))
    q = decoded_distribution(logits, locs, covs)
    assert q.batch_shape == (3,) and q.event_shape == (2,)


def test_svi_run_minibatches_the_whole_training_set(tiny_activa):
    """The user-facing NumPyro loop: svi.run over all tasks with a subsampled plate."""
    data = ap.simulate.linear_dataset(num_scms=60, num_vars=2, num_samples=20, seed=3)
    tasks = data.tasks("train")
    arrays = (tasks.observational, tasks.targets, tasks.intervention_index, tasks.interventional)
    svi = tiny_activa.svi(numpyro.optim.Adam(3e-3), subsample_size=8)
    result = svi.run(jax.random.PRNGKey(0), 60, *arrays, progress_bar=False)
    losses = np.asarray(result.losses)
    assert losses.shape == (60,) and np.all(np.isfinite(losses))
    assert losses[-10:].mean() < losses[:10].mean()
    assert set(result.params) == {f"{m}$params" for m in ("obs_embedding", "prior", "decoder",
                                                           "int_embedding", "posterior")}
