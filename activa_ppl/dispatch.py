"""How evaluation processes start JAX's CPU backend (workarounds for an intermittent XLA hang).

Evaluations hang inside XLA on this project's 2-core machine (jax/jaxlib 0.10.2), more often the
busier the machine: the main thread waits in ``BlockUntilReady`` for the scores of
:func:`activa_ppl.metrics.evaluate_predictions` while every XLA and Eigen worker thread is
parked waiting for work, for ever, with no CPU used. A computation dispatched from another
thread of the hung process runs and does not wake it: a completion is lost, no task is waiting
in a queue. ``benchmarks/repro_xla_hang.py`` reproduces it in a minute or two on a loaded
machine (random mixtures of ACTIVA's size, scored in fresh processes under alternating XLA
settings). Measured there on 2026-11-30, trials of eight scorings of 1024 tasks beside one or
two trainings: JAX's defaults finished 0 of 7, ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``
(the cure another JAX project measured for the same symptom) 0 of 2, and
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=`` (no YNNPACK fusions, which on jax 0.10.2
run the matrix products on the calling thread and the ``tf_XLAEigen`` pool together) 4 of 5.
The evidence and native stacks are on the "Reliability" page of the docs.

Two workarounds, since no setting cures it:

* :func:`evaluation_runtime` starts the backend without YNNPACK fusions (:data:`YNN_FLAG`) and
  with synchronous dispatch, where it still can, i.e. before JAX's first computation;
  ``activa evaluate``, ``inference/reproduce_table1.py`` and ``benchmarks/bench_latents.py``
  call it first thing, and the test suite's ``conftest.py`` sets the flag. Library calls of
  :func:`activa_ppl.evaluation.evaluate` do not change the process's JAX settings; call
  :func:`evaluation_runtime` first to get them. ``ACTIVA_EVAL_RUNTIME=0`` keeps JAX's defaults.
  Neither setting changes a result beyond float rounding.
* :func:`run_with_stall_restart` runs a command in a child process and restarts it when it
  prints nothing for a while; evaluations are seeded, so a rerun gives the same numbers.
  ``inference/reproduce_table1.py`` runs itself that way.

JAX does not read ``JAX_CPU_ENABLE_ASYNC_DISPATCH`` from the environment
(``jax_cpu_enable_async_dispatch`` is a flag, set with ``jax.config.update``; checked with jax
0.10.2), which this project's documentation recommended until 2026-11-30.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

from collections.abc import Sequence

__all__ = ["OPT_OUT_VARIABLE", "YNN_FLAG", "YNN_FLAG_MIN_JAXLIB", "WATCHED_CHILD_VARIABLE", "evaluation_runtime",
           "with_ynn_flag", "run_with_stall_restart"]

#: Set to ``1`` in the child process of :func:`run_with_stall_restart` (so a script that
#: re-runs itself under the watchdog knows it is the child).
WATCHED_CHILD_VARIABLE = "ACTIVA_WATCHED_CHILD"

#: Set to ``0`` to keep JAX's default CPU runtime in evaluation processes.
OPT_OUT_VARIABLE = "ACTIVA_EVAL_RUNTIME"
#: The XLA flag added to ``XLA_FLAGS``: no YNNPACK fusions (an empty list of fusion types).
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
#: The oldest jaxlib on which :data:`YNN_FLAG` was checked to exist (0.10.2 and 0.12.0.1 have
#: it). XLA aborts the process on a flag it does not know, so older versions get no flag.
YNN_FLAG_MIN_JAXLIB = (0, 10, 2)


def with_ynn_flag(flags: str) -> str:
    """``flags`` (an ``XLA_FLAGS`` value) with :data:`YNN_FLAG` added, unless they set
    ``xla_cpu_experimental_ynn_fusion_type`` already or the installed jaxlib is older than
    :data:`YNN_FLAG_MIN_JAXLIB`. Importing jaxlib does not start XLA; the flags are read when
    the backend starts."""
    import jaxlib

    version = tuple(int(part) for part in re.findall(r"\d+", jaxlib.__version__)[:3])
    if "xla_cpu_experimental_ynn_fusion_type" in flags or version < YNN_FLAG_MIN_JAXLIB:
        return flags
    return f"{flags} {YNN_FLAG}".strip()


def evaluation_runtime() -> bool:
    """Start JAX's CPU backend without YNNPACK fusions (:func:`with_ynn_flag` on
    ``XLA_FLAGS``) and with synchronous dispatch, if the backend has not started yet and
    ``ACTIVA_EVAL_RUNTIME`` is not ``0``. An ``XLA_FLAGS`` that already sets
    ``xla_cpu_experimental_ynn_fusion_type`` is left alone.

    Returns:
        whether the settings were applied (``False``: opted out, or the backend had started).
    """
    if os.environ.get(OPT_OUT_VARIABLE, "1").strip() == "0":
        return False
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return False
    flags = with_ynn_flag(os.environ.get("XLA_FLAGS", ""))  # read by XLA when the backend starts
    if flags:
        os.environ["XLA_FLAGS"] = flags
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
