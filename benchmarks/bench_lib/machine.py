"""This machine and how to time on it: machine details, the float32 matmul peak, timing
helpers, and workers that run in fresh Python processes and hand back one JSON result."""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

#: Prefix of the line on which a worker process prints its JSON result.
RESULT_TAG = "BENCH_RESULT "


# --------------------------------------------------------------------------- machine details
def machine_info() -> dict:
    """CPU, cores, load, versions and the allocator environment, for the head of a report."""
    import flax
    import jax
    import numpyro
    import optax

    import activa_ppl

    cpu, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu == "unknown":
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "simd": [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags],
        "cores_logical": os.cpu_count(),
        "cores_usable": usable,
        "load_avg_1_5_15": load_avg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "jaxlib": getattr(jax.lib, "__version__", None) or _jaxlib_version(),
        "numpyro": numpyro.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "activa_ppl": getattr(activa_ppl, "__version__", "?"),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "env": {k: os.environ.get(k, "") for k in ("XLA_FLAGS", "GLIBC_TUNABLES", "LD_PRELOAD")},
    }


def _jaxlib_version() -> str:
    try:
        import jaxlib

        return jaxlib.__version__
    except Exception:  # pragma: no cover
        return "?"


def load_avg() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --------------------------------------------------------------------------- timing
def block(tree):
    """``tree`` after every array in it is ready (jax dispatches asynchronously)."""
    import jax

    for leaf in jax.tree_util.tree_leaves(tree):
        if hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()
    return tree


def xla_cost(cost, key: str = "flops") -> float | None:
    """``flops`` (or another ``key``, e.g. ``"bytes accessed"``) of a jax cost analysis (a dict,
    or a list of dicts in older jax); ``None`` when it is missing or not positive."""
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not isinstance(cost, dict):
        return None
    value = cost.get(key)
    return float(value) if value is not None and value > 0 else None


def timed_repeats(fn, target_s: float, min_reps: int, max_reps: int) -> list[float]:
    """Call ``fn`` (which blocks) until ``target_s`` seconds are spent or ``max_reps`` calls."""
    times, start = [], time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < target_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def matmul_peak(sizes, chain: int = 8, target_s: float = 1.0, dtype: str = "float32") -> dict:
    """Best ``dtype`` matmul rate of this machine's default device (GFLOP/s), through XLA.

    For each size n a jitted chain of ``chain`` (n, n) @ (n, n) products (2 n^3 FLOPs each,
    checked against XLA's cost analysis) is timed; the best call over ``target_s`` seconds
    counts. Returns the best rate and the per-size rates.
    """
    import jax
    import jax.numpy as jnp

    per_size = {}
    for n in sizes:
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
        b = (jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32) / math.sqrt(n)).astype(dtype)

        def f(a, b):
            for _ in range(chain):
                a = a @ b
            return a

        compiled = jax.jit(f).lower(a, b).compile()
        flops = 2.0 * n**3 * chain
        xla = xla_cost(compiled.cost_analysis())
        block(compiled(a, b))
        times = timed_repeats(lambda: block(compiled(a, b)), target_s, 3, 1000)
        per_size[str(n)] = {"gflops": flops / min(times) / 1e9, "xla_flops_ratio": (xla / flops) if xla else None}
    best = max(per_size.values(), key=lambda r: r["gflops"])
    return {"gflops": best["gflops"], "sizes": per_size, "chain": chain}


# --------------------------------------------------------------------------- worker processes
def run_worker(script: str, args: list[str], env: dict | None = None, label: str = "") -> dict:
    """Run ``python script *args`` in a fresh process (compile caches and peak RSS its own)
    and return the result it printed with :func:`print_result`.

    ``env``: extra environment variables of the worker (e.g. an allocator setting); its stderr
    passes through, so progress and tracebacks stay visible."""
    proc = subprocess.run([sys.executable, os.path.abspath(script), *args], stdout=subprocess.PIPE,
                          text=True, env=None if env is None else {**os.environ, **env})
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise RuntimeError(f"benchmark worker {label or ' '.join(args)} failed (exit {proc.returncode}); "
                       f"its stderr is above")


def print_result(result: dict) -> None:
    """Hand ``result`` back to :func:`run_worker` (from the worker process)."""
    print(RESULT_TAG + json.dumps(result), flush=True)


def write_json(path: str | None, report: dict) -> None:
    """Write ``report`` to ``path`` (``--json``) as indented JSON; nothing when ``path`` is None."""
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
