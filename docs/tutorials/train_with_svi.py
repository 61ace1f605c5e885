# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Training your own model with `svi.run`
#
# ACTIVA is a NumPyro model/guide pair, so the plain NumPyro training loop works: `Activa.model`
# is the generative story of Eq. 4 (a conditional mixture prior over `z`, a mixture decoder over
# `V`), `Activa.guide` is the encoder `q(z | D_int, D_obs, do)`, `beta_kl` scales the latent
# sites by β so that `Trace_ELBO` computes the β-ELBO of Eq. 5, and the tasks live in a
# `numpyro.plate` with `subsample_size`, so each step sees a minibatch of tasks.
#
# `activa_ppl.train` does the same with compiled chunks, validation, checkpoints and resumption;
# this tutorial shows the moving parts. `ACTIVA_TUTORIAL_SCALE=small` (CI) shrinks it.

# %%
from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402

import activa_ppl as ap  # noqa: E402
from activa_ppl.training import task_arrays  # noqa: E402

SMALL = os.environ.get("ACTIVA_TUTORIAL_SCALE", "full") == "small"
OUT = Path(os.environ.get("ACTIVA_TUTORIAL_OUT", Path(__file__).resolve().parent / "train_with_svi"))
OUT.mkdir(parents=True, exist_ok=True)
NUM_STEPS = 40 if SMALL else 1000

# %% [markdown]
# ## Data: tasks
#
# A task is one observational dataset, one intervention query and its interventional samples.
# `tasks("train")` flattens S SCMs with M queries each into `T = S·M` tasks.

# %%
data = ap.simulate.linear_dataset(num_scms=300 if SMALL else 3000, num_vars=2, noise="gauss", seed=0)
train = task_arrays(data.tasks("train"))         # observational (T, N, d), targets (T, d),
print([a.shape for a in train])                  # intervention_index (T,), interventional (T, N, d)

# %% [markdown]
# ## The model, the guide and the β handler
#
# `model.scaled()` returns `(beta_kl(model, β), beta_kl(guide, β))`; `model.svi(...)` wraps them
# in `numpyro.infer.SVI` with `Trace_ELBO(num_particles=4)`. With `subsample_size=32` the
# `tasks` plate draws 32 tasks per step and scales their log densities by `T / 32`.

# %%
model = ap.Activa(ap.ActivaConfig.preset("tiny" if SMALL else "small"))
trace = numpyro.handlers.trace(numpyro.handlers.seed(model.model, 0)).get_trace(*[a[:4] for a in train])
for name, site in trace.items():
    if site["type"] == "sample":
        print(f"{name:16s} observed={site['is_observed']!s:5s} shape={site['value'].shape}")

svi = model.svi(numpyro.optim.Adam(5e-4), subsample_size=32)
result = svi.run(jax.random.PRNGKey(0), NUM_STEPS, *train, progress_bar=not SMALL)

# %% [markdown]
# ## From SVI parameters to predictions
#
# `FittedActiva` couples the architecture with the learned parameters; it predicts, saves and
# loads like the models of `activa_ppl.train`.

# %%
fitted = ap.FittedActiva(model, result.params, info={"num_steps": NUM_STEPS, "trained_with": "svi.run"})
test = data.tasks("test")
nll = float(np.mean([-np.asarray(fitted.predict(test.observational[i], target=int(np.argmax(test.targets[i])),
                                                seed=i).log_prob(test.interventional[i])).mean()
                     for i in range(0, len(test.scm), 10)]))
print(f"test NLL per sample (every 10th task): {nll:.3f}")
fitted.save(OUT / "model")

fig, ax = plt.subplots(figsize=(5, 3))
losses = np.asarray(result.losses) / (len(train[0]) * train[3].shape[1])
ax.plot(losses)
ax.set_xlabel("SVI step")
ax.set_ylabel("negative β-ELBO per sample")
ax.set_yscale("symlog")
fig.tight_layout()
fig.savefig(OUT / "loss.png", dpi=110)
(OUT / "summary.json").write_text(json.dumps({"num_steps": NUM_STEPS, "final_loss_per_sample": float(losses[-1]),
                                              "test_nll_every_10th_task": nll}, indent=2) + "\n")
print(f"wrote {OUT}")
