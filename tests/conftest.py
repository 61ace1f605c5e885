"""Shared test configuration.

* JAX runs on the CPU: ``JAX_PLATFORMS=cpu`` is set here, before any test module imports jax,
  so results do not depend on whether the machine has an accelerator.
* Randomness is explicit: tests draw from the ``rng`` (``numpy.random.Generator``) and ``key``
  (JAX PRNG key) fixtures, or create their own seeded generators. Nothing seeds or reads the
  global ``numpy.random`` state, and an autouse guard fails any test that changes it.
* No global state is modified: jax configuration is left at its defaults (no x64, no
  compilation cache; a test that needs float64 uses the ``jax.enable_x64`` context), and
  expensive objects shared between tests are immutable (frozen configs, jax arrays, params
  pytrees that nobody mutates).
* Test modules do not import conftest: shared helpers are fixtures here, or, where a module
  needs them at import time (hypothesis strategies, fuzz settings), functions in
  ``tests/helpers.py``.
* The suite runs in pytest-xdist worker processes, a file at a time per worker
  (:func:`pytest_xdist_auto_num_workers`), and each module's compiled programs are released
  when it ends (:func:`_compiled_code_released`).
* Tests write under ``tmp_path`` only: a run that changes any file git tracks (a model card, a
  docs page) fails, naming the files (:func:`pytest_sessionfinish`).
"""

from __future__ import annotations

import gc
import hashlib
import os
import subprocess
from pathlib import Path

os.environ["JAX_PLATFORMS"] = "cpu"
# `activa predict` run in-process turns on JAX's persistent compilation cache and the start-up
# memo (activa_ppl.predict_report); tests that want them set ACTIVA_CACHE_DIR to a tmp folder.
os.environ["ACTIVA_CACHE_DIR"] = "off"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# In case a plugin imported jax before this file ran (the variable is then read too late).
jax.config.update("jax_platforms", "cpu")


ROOT = Path(__file__).resolve().parent.parent


def _tracked_files() -> dict[str, str] | None:
    """SHA-256 of every file git tracks in the checkout (None outside a git checkout)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    digests = {}
    for name in listed.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file() and not path.is_symlink():
            digests[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def pytest_sessionstart(session):
    """Record the tracked files' contents (in the controlling process only, not xdist workers)."""
    if not hasattr(session.config, "workerinput"):
        session.config._tracked_before = _tracked_files()


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when a test changed a file that git tracks.

    Tests write under ``tmp_path``; a test that writes into the checkout (once: a trial run of
    ``inference/reproduce_table1.py`` rewrote the zoo's model cards with its one-SCM numbers, and
    they were committed) changes the shipped project. Edits made by hand while the suite runs
    trip this too; rerun then.
    """
    before = getattr(session.config, "_tracked_before", None)
    if before is None:
        return
    after = _tracked_files() or {}
    changed = sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = ("tests changed files that git tracks (tests must write under tmp_path): "
                   + ", ".join(changed[:20]) + (" ..." if len(changed) > 20 else ""))
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _global_numpy_rng_untouched():
    """Guard: no test (and no library code it calls) draws from the global numpy RNG, whose
    state would make results depend on test order."""
    before = np.random.get_state()
    yield
    after = np.random.get_state()
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and \
        before[2:] == after[2:], "the global numpy.random state was used; draw from a Generator"


@pytest.fixture(autouse=True)
def _caches_left_off():
    """A test that ran `activa predict` with a cache folder leaves no cache on for the next one
    (the compilation cache and the start-up memo are process-wide settings)."""
    yield
    from activa_ppl import disk_memo

    if disk_memo.folder() is not None:
        disk_memo.enable(None)
    if jax.config.jax_compilation_cache_dir is not None:
        jax.config.update("jax_compilation_cache_dir", None)


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pyproject's addopts): one pytest-xdist worker per usable core, at most 4.

    Each worker is a JAX process of up to about 4 GB; on the 2-core machine two workers run the
    fast suite in about two thirds of the single-process time (987 s against 1,443 s,
    2026-12-01). ``--dist loadfile`` keeps a file's tests, and its module fixtures, on one worker.
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    return max(1, min(usable, 4))


@pytest.fixture(autouse=True, scope="module")
def _compiled_code_released():
    """Each test module's compiled programs are dropped when it ends (``jax.clear_caches``).

    Every XLA CPU executable keeps its machine code in memory mappings of its own (about three
    per program), and JAX keeps every executable it compiled for as long as the jitted function
    lives. Over the whole suite (thousands of compilations in one process) the count reached
    Linux's default ``vm.max_map_count`` (65,530) near the end, and XLA's compiler then died of
    a failed allocation (an abort, or a segfault) in whichever test compiled next. Clearing per
    module keeps the count to what one module compiles; the cost is a recompile of what a later
    module shares (the session fixtures' parameters stay: they are arrays, not programs).
    """
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh, fixed-seed numpy generator per test (never the global numpy state)."""
    return np.random.default_rng(20240611)


@pytest.fixture
def key() -> jax.Array:
    """A fixed JAX PRNG key."""
    return jax.random.PRNGKey(0)


def make_tasks(rng: np.random.Generator, num_tasks: int, num_obs: int, num_vars: int,
               num_int: int | None = None, num_interventions: int = 1):
    """Random task arrays ``(observational, targets, intervention_index, interventional)``.

    Targets are one-hot (task t targets variable ``t % d``); intervention indices cycle through
    ``0..num_interventions-1``.
    """
    num_int = num_obs if num_int is None else num_int
    obs = rng.normal(size=(num_tasks, num_obs, num_vars)).astype(np.float32)
    inter = (rng.normal(size=(num_tasks, num_int, num_vars)) + 1.0).astype(np.float32)
    targets = np.zeros((num_tasks, num_vars), np.float32)
    targets[np.arange(num_tasks), np.arange(num_tasks) % num_vars] = 1.0
    index = (np.arange(num_tasks) % num_interventions).astype(np.int32)
    return jnp.asarray(obs), jnp.asarray(targets), jnp.asarray(index), jnp.asarray(inter)


def init_params(activa, key: jax.Array, num_vars: int = 2, num_obs: int = 6,
                abstract: bool = False):
    """:meth:`Activa.init_params`, compiled (``abstract=True``: shapes only, nothing compiled)."""
    init = lambda k: activa.init_params(k, num_vars=num_vars, num_samples=num_obs)
    return jax.eval_shape(init, key) if abstract else jax.jit(init)(key)


@pytest.fixture(scope="session")
def task_factory():
    """:func:`make_tasks`, as a fixture (test modules do not import conftest)."""
    return make_tasks


@pytest.fixture(scope="session")
def params_factory():
    """:func:`init_params`, as a fixture."""
    return init_params


@pytest.fixture(scope="session")
def tiny_activa():
    """The tiny-preset model (configuration only; immutable)."""
    import activa_ppl as ap

    return ap.Activa(ap.ActivaConfig.preset("tiny"))


@pytest.fixture(scope="session")
def tiny_params(tiny_activa):
    """Parameters of the tiny model initialised at d = 2 (shared, never mutated)."""
    return init_params(tiny_activa, jax.random.PRNGKey(42), num_vars=2)


@pytest.fixture(scope="session")
def tiny_fitted(tiny_activa, tiny_params):
    """An untrained :class:`FittedActiva` with the initial tiny parameters (fast to build)."""
    import activa_ppl as ap

    return ap.FittedActiva(activa=tiny_activa, params=tiny_params, info={"note": "untrained"})


class TraceCounter:
    """Counts how often jax traces functions named ``fun_name`` (JAX's own monitoring events,
    ``/jax/core/compile/jaxpr_trace_duration``), e.g. ``"run_chunk"`` for a training chunk of
    :func:`activa_ppl.loop.chunk_function`. Use as a context manager; read ``.count``."""

    EVENT = "/jax/core/compile/jaxpr_trace_duration"

    def __init__(self, fun_name: str):
        self.fun_name, self.count = fun_name, 0

    def _listener(self, event, duration, **kwargs):
        if event == self.EVENT and kwargs.get("fun_name") == self.fun_name:
            self.count += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listener)


@pytest.fixture
def trace_counter():
    """:class:`TraceCounter`, as a fixture (a factory: ``trace_counter("run_chunk")``)."""
    return TraceCounter


class _Quiet:
    """A fixture value that hypothesis prints by name, not by its (huge) repr."""

    def __init__(self, value, name: str):
        self.value, self.name = value, name

    def __repr__(self) -> str:
        return self.name


@pytest.fixture(scope="module")
def quiet_tiny_fitted(tiny_fitted) -> _Quiet:
    """The session's untrained tiny model (``.value``), printed as ``tiny_fitted`` in hypothesis
    failure reports."""
    return _Quiet(tiny_fitted, "tiny_fitted")


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory):
    """:func:`helpers.small_dataset` saved to a folder (copy it before damaging it)."""
    from helpers import small_dataset

    path = tmp_path_factory.mktemp("dataset") / "ds"
    small_dataset().save(path)
    return path


@pytest.fixture(scope="module")
def saved_model(tiny_fitted, tmp_path_factory):
    """``tiny_fitted`` saved to a model folder (copy it before damaging it)."""
    return tiny_fitted.save(tmp_path_factory.mktemp("model") / "model")
