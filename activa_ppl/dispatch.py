"""How evaluation processes start JAX's CPU backend (a workaround for an intermittent XLA hang).

Evaluations have hung inside XLA on this project's 2-core machine (jax/jaxlib 0.10.2): the main
thread waits in ``BlockUntilReady`` for the scores of
:func:`activa_ppl.metrics.evaluate_predictions` while every XLA and Eigen worker thread is
parked waiting for work, for ever, with no CPU used. Recorded: 5 hangs in 7 runs (the first
scoring of a process included), under asynchronous and under synchronous dispatch. The same
symptom, reported by another JAX project on other machines, disappeared with single-threaded
Eigen (``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``: 12 runs without a hang against 14
hangs in 16 without it). The evidence and native stacks are on the "Reliability" page of the
docs.

:func:`evaluation_runtime` starts the backend that way (single-threaded Eigen, synchronous
dispatch) where it still can, i.e. before JAX's first computation; ``activa evaluate``,
``inference/reproduce_table1.py`` and ``benchmarks/bench_latents.py`` call it first thing.
Library calls of :func:`activa_ppl.evaluation.evaluate` do not change the process's JAX
settings; call :func:`evaluation_runtime` first to get them. ``ACTIVA_EVAL_RUNTIME=0`` keeps
JAX's defaults. Neither setting changes a result; single-threaded Eigen makes the matrix
products of an evaluation slower on a many-core machine.

JAX does not read ``JAX_CPU_ENABLE_ASYNC_DISPATCH`` from the environment
(``jax_cpu_enable_async_dispatch`` is a flag, set with ``jax.config.update``; checked with jax
0.10.2), which this project's documentation recommended until 2026-11-30.
"""

from __future__ import annotations

import os

__all__ = ["OPT_OUT_VARIABLE", "EIGEN_FLAG", "evaluation_runtime"]

#: Set to ``0`` to keep JAX's default CPU runtime in evaluation processes.
OPT_OUT_VARIABLE = "ACTIVA_EVAL_RUNTIME"
#: The XLA flag added to ``XLA_FLAGS``.
EIGEN_FLAG = "--xla_cpu_multi_thread_eigen=false"


def evaluation_runtime() -> bool:
    """Start JAX's CPU backend with single-threaded Eigen (:data:`EIGEN_FLAG` added to
    ``XLA_FLAGS``) and synchronous dispatch, if the backend has not started yet and
    ``ACTIVA_EVAL_RUNTIME`` is not ``0``. An ``XLA_FLAGS`` that already sets
    ``xla_cpu_multi_thread_eigen`` is left alone.

    Returns:
        whether the settings were applied (``False``: opted out, or the backend had started).
    """
    if os.environ.get(OPT_OUT_VARIABLE, "1").strip() == "0":
        return False
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:  # read by XLA when the backend starts
        os.environ["XLA_FLAGS"] = f"{flags} {EIGEN_FLAG}".strip()
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    return True
