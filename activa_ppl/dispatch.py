"""How evaluation processes start JAX's CPU backend, and a watchdog for hung evaluations.

Evaluations hung inside XLA on this project's 2-core machine (jax/jaxlib 0.10.2): the main
thread waited in ``BlockUntilReady`` for the scores of
:func:`activa_ppl.metrics.evaluate_predictions`, for ever, with no CPU used.
**Cause (found 2026-11-30):** a batched ``jnp.linalg.cholesky`` is a LAPACK custom call that
splits its batch over XLA's intra-op thread pool (``jax::ParallelBatchMap``) and blocks its own
pool thread until the parts are done; when every pool thread is inside such a call, nobody runs
the parts (native stack of a hung process: ``tf_XLAEigen`` → ``lapack_spotrf_ffi`` →
``ParallelBatchMap`` → ``BlockingCounter::Wait``). Scoring and sampling now factor with
:func:`activa_ppl.mixture_math.cholesky`, unrolled in elementwise ops: with JAX's defaults
``benchmarks/repro_xla_hang.py`` went from 0 of 9 trials finished to 2 of 2.

What stays, as belt and braces:

* :func:`evaluation_runtime` starts the backend with synchronous dispatch, where it still can,
  i.e. before JAX's first computation; ``activa evaluate``, ``inference/reproduce_table1.py``
  and ``benchmarks/bench_latents.py`` call it first thing. ``ACTIVA_EVAL_RUNTIME=0`` keeps JAX's
  defaults. It changes no result. (XLA flags tried against the hang before its cause was found
  are on the "Reliability" page; none is set: one of them, without YNNPACK fusions, made the hang
  rarer but crashed a compilation in the test suite.)
* :func:`run_with_stall_restart` runs a command in a child process and restarts it when it
  prints nothing for a while; evaluations are seeded, so a rerun gives the same numbers.
  ``inference/reproduce_table1.py`` runs itself that way.

JAX does not read ``JAX_CPU_ENABLE_ASYNC_DISPATCH`` from the environment
(``jax_cpu_enable_async_dispatch`` is a flag, set with ``jax.config.update``; checked with jax
0.10.2), which this project's documentation recommended until 2026-11-30.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from collections.abc import Sequence

__all__ = ["OPT_OUT_VARIABLE", "WATCHED_CHILD_VARIABLE", "evaluation_runtime", "run_with_stall_restart"]

#: Set to ``1`` in the child process of :func:`run_with_stall_restart` (so a script that
#: re-runs itself under the watchdog knows it is the child).
WATCHED_CHILD_VARIABLE = "ACTIVA_WATCHED_CHILD"

#: Set to ``0`` to keep JAX's default CPU runtime in evaluation processes.
OPT_OUT_VARIABLE = "ACTIVA_EVAL_RUNTIME"


def evaluation_runtime() -> bool:
    """Start JAX's CPU backend with synchronous dispatch, if the backend has not started yet
    and ``ACTIVA_EVAL_RUNTIME`` is not ``0``.

    Returns:
        whether the settings were applied (``False``: opted out, or the backend had started).
    """
    if os.environ.get(OPT_OUT_VARIABLE, "1").strip() == "0":
        return False
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return False
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    return True


def run_with_stall_restart(argv: Sequence[str], *, stall_s: float = 600.0, max_restarts: int = 3,
                           env: dict | None = None, poll_s: float = 1.0, out=None) -> int:
    """Run ``argv`` in a child process, copying its output (stdout and stderr, merged) to
    ``out`` (default: this process's stdout) as it comes, and kill and restart it when it writes
    nothing for ``stall_s`` seconds: the intermittent XLA hang above leaves a process silent for
    ever, and a seeded evaluation rerun gives the same numbers.

    The child's environment is ``env`` (default: this process's) with
    :data:`WATCHED_CHILD_VARIABLE` set to ``1``. Progress bars count as output, so ``stall_s``
    must exceed the longest silent stretch of a healthy run (a compilation, a chunk of work).

    Returns:
        the child's exit status; ``1`` after ``max_restarts`` restarts that all stalled.
    """
    if not stall_s > 0 or max_restarts < 0:
        raise ValueError(f"need stall_s > 0 and max_restarts >= 0, got {stall_s!r} and {max_restarts!r}")
    sink = out if out is not None else sys.stdout.buffer
    child_env = {**(os.environ if env is None else env), WATCHED_CHILD_VARIABLE: "1"}
    for attempt in range(max_restarts + 1):
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env)
        last = [time.monotonic()]

        def pump(stream=proc.stdout, last=last):  # raw chunks: progress bars end in \r, not \n
            for chunk in iter(lambda: os.read(stream.fileno(), 4096), b""):
                last[0] = time.monotonic()
                sink.write(chunk)
                sink.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        stalled = False
        while proc.poll() is None:
            if time.monotonic() - last[0] > stall_s:
                stalled = True
                proc.kill()
                proc.wait()
                break
            time.sleep(poll_s)
        reader.join(timeout=10)
        if not stalled:
            return proc.returncode
        print(f"\n[watchdog] no output for {stall_s:.0f} s (the intermittent XLA hang, "
              f"activa_ppl.dispatch): killed; restart {attempt + 1} of {max_restarts}"
              if attempt < max_restarts else
              f"\n[watchdog] no output for {stall_s:.0f} s: killed; no restarts left", file=sys.stderr, flush=True)
    return 1
