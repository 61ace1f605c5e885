# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Posterior-predictive checks with ArviZ
#
# Any prediction of the library (ACTIVA, the baselines) is a `GaussianMixture`;
# `mixture.to_inference_data(held_out)` (or `ap.to_inference_data`) turns it, with the held-out
# interventional samples, into ArviZ data: `posterior_predictive` (replicate datasets drawn from
# the prediction, one variable per model variable), `observed_data` (the held-out samples),
# `log_likelihood` (each held-out sample's log density under the prediction) and
# `constant_data` (the predicted means, scales and mixture components). Then the usual ArviZ
# tools apply, with arviz 0.2x and with arviz 1.x (the few calls that differ go through
# `activa_ppl.arviz_io`). We check the zoo model `gauss2` on test SCMs of the Gauss 2 set.

# %%
from __future__ import annotations

import json
import os
from pathlib import Path

import arviz as az
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import activa_ppl as ap  # noqa: E402
from activa_ppl.arviz_io import compare_held_out, from_predictive, held_out_elpd, plot_ppc  # noqa: E402
from activa_ppl.predictors import gaussian_conditional_predictor  # noqa: E402

SMALL = os.environ.get("ACTIVA_TUTORIAL_SCALE", "full") == "small"
OUT = Path(os.environ.get("ACTIVA_TUTORIAL_OUT", Path(__file__).resolve().parent / "ppc_arviz"))
OUT.mkdir(parents=True, exist_ok=True)
rng_state = np.random.get_state()  # ArviZ's PPC plots subsample with numpy's global generator
np.random.seed(0)

data = ap.simulate.linear_dataset(num_scms=3000, num_vars=2, noise="gauss", seed=0)
fitted = ap.load_pretrained("gauss2")
test = data.tasks("test")

# %% [markdown]
# ## One query
#
# Test SCM with an edge `X0 → X1`, query `do(X0)`: X1 should shift.

# %%
q = next(i for i in range(len(test.scm)) if test.query[i] == 0 and data.adjacency[test.scm[i], 0, 1])
mix = fitted.predict(test.observational[q], target=0, seed=0).with_names(data.variable_names)
idata = mix.to_inference_data(test.interventional[q], num_draws=100 if SMALL else 500, seed=1)
print(mix)
print(idata)
figure = plot_ppc(idata, num_pp_samples=50)  # az.plot_ppc (0.2x) or az.plot_ppc_dist (1.x)
figure.suptitle(f"ACTIVA, test SCM {test.scm[q]}, do(X0): replicate datasets vs held-out samples")
plt.savefig(OUT / "ppc_one_query.png", dpi=100)
plt.close("all")

# %% [markdown]
# `az.summary(idata)` with default arguments diagnoses the `posterior` group, which holds the
# mean of each replicate dataset: exact independent draws, so `r_hat` is 1 and the effective
# sample size the number of draws. The prediction itself is in `constant_data`.

# %%
print(az.summary(idata))
print(idata.constant_data["mean"].to_series(), idata.constant_data["sd"].to_series(), sep="\n")
summary = az.summary(idata, group="posterior_predictive", kind="stats")
observed = {name: idata.observed_data[name].values for name in data.variable_names}
observed = pd.DataFrame(observed).describe().loc[["mean", "std"]]
print(summary.groupby(summary.index.str.split("[").str[0]).mean())   # per variable, over samples
print(observed)

# %% [markdown]
# ## ELPD of held-out samples, ACTIVA against a baseline
#
# The held-out samples were not used to make the prediction, so their log predictive density
# needs no leave-one-out correction: `held_out_elpd` is exactly `Σ log p̂(v_n)`, and
# `compare_held_out` ranks methods on the same held-out samples, with standard errors (the
# `az.compare` of this setting; with arviz 0.2x, `az.loo` returns the same ELPD with
# `p_loo = 0`, while arviz 1.x's PSIS refuses a log-likelihood that is constant over draws). The Gaussian
# Conditional baseline does not predict the intervened X0 (it pins it at the intervention value),
# so both are compared on the marginal of X1, the variable the intervention acts on.

# %%
gc = gaussian_conditional_predictor()
tasks_q = ap.data.TaskArrays(*(np.asarray(a)[q:q + 1] for a in test))
gc_mix = gc(tasks_q, data)[0].with_names(data.variable_names)
held_out_x1 = test.interventional[q][:, [1]]
activa_x1 = mix.marginal(["X1"]).to_inference_data(held_out_x1, num_draws=100, seed=2)
gc_x1 = ap.to_inference_data(gc_mix.marginal(["X1"]), held_out_x1, num_draws=100, seed=2)
comparison = compare_held_out({"ACTIVA": activa_x1, "Gaussian Cond.": gc_x1})
print(comparison)
print("held-out ELPD of X1, ACTIVA:", held_out_elpd(activa_x1), " Gaussian Cond.:", held_out_elpd(gc_x1))

# %% [markdown]
# ## Many queries at once
#
# A batch of predictions gets a `task` dimension; the PPC plot then pools tasks, and per-task
# checks select with `coords`.

# %%
num = 8 if SMALL else 40
batch = fitted.predict_batch(test.observational[:num], test.targets[:num], test.intervention_index[:num], seed=3)
batch_data = ap.to_inference_data(batch.with_names(data.variable_names), test.interventional[:num],
                                  num_draws=50, task_names=[f"scm{s}-do(X{t})" for s, t in
                                                         zip(test.scm[:num], test.query[:num])], seed=4)
elpd_per_task = batch_data.log_likelihood["joint"].isel(chain=0, draw=0).sum("obs_id").to_series()
print(elpd_per_task.describe())
plot_ppc(batch_data, coords={"task": batch_data.observed_data.task.values[:1]}, num_pp_samples=30)
plt.savefig(OUT / "ppc_first_task_of_batch.png", dpi=100)
plt.close("all")

# %% [markdown]
# ## Draws from the NumPyro model, through `az.from_numpyro`
#
# The model is a NumPyro model, so `numpyro.infer.Predictive` draws from it directly: with the
# trained parameters, the latent `z` from the observational-data prior and the `interventional`
# samples given `z`, each with its task plate. `from_predictive` passes them to
# `az.from_numpyro` (either ArviZ line) with named dimensions.

# %%
import jax  # noqa: E402
from numpyro.infer import Predictive  # noqa: E402

predictive = Predictive(fitted.activa.model, params=fitted.params, num_samples=100 if SMALL else 400)
targets = np.array([[1.0, 0.0]], np.float32)  # do(X0), intervention index 0 (X0 = 5)
draws = predictive(jax.random.PRNGKey(5), test.observational[q][None], targets, np.array([0], np.int32),
                   num_samples=len(test.interventional[q]))
numpyro_data = from_predictive({"interventional": draws["interventional"]}, num_chains=2,
                               coords={"var_name": list(data.variable_names)},
                               dims={"interventional": ["task", "obs_id", "var_name"]})
print(numpyro_data.posterior_predictive["interventional"].mean(("chain", "draw", "task", "obs_id")).to_series())
(OUT / "summary.json").write_text(json.dumps({
    "query": {"scm": int(test.scm[q]), "target": "X0"},
    "held_out_elpd_all": {"ACTIVA": held_out_elpd(idata)},
    "held_out_elpd_X1": {"ACTIVA": held_out_elpd(activa_x1), "Gaussian Cond.": held_out_elpd(gc_x1)},
    "elpd_per_task_mean": float(elpd_per_task.mean()), "num_tasks": num,
    "arviz": az.__version__}, indent=2) + "\n")
np.random.set_state(rng_state)
print(f"wrote {OUT}")
