"""What keeps the whole suite runnable in one process (docs/reliability.md, "XLA's compiler
dying late in a long process").

Every XLA CPU executable holds memory mappings of its own, and one pytest process compiles
thousands of programs: without releasing them the suite reached Linux's default
``vm.max_map_count`` (65,530) near its end and XLA's compiler aborted. ``conftest.py`` calls
``jax.clear_caches()`` after each module; this checks that the call still releases the
executables of jitted functions that are alive (a future JAX that stopped doing so would bring
the crash back, late and far from its cause).
"""

from __future__ import annotations

import gc
import sys

import jax
import jax.numpy as jnp
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")


def _mappings() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def test_clear_caches_releases_the_executables_of_live_functions():
    jax.clear_caches()
    gc.collect()
    before = _mappings()
    functions = [jax.jit(lambda x, i=i: jnp.sin(x) * i + jnp.cos(x) ** 2) for i in range(100)]
    for f in functions:
        f(jnp.ones(3)).block_until_ready()
    grown = _mappings() - before
    assert grown >= 100, f"100 compiled programs added only {grown} mappings: the premise changed"
    jax.clear_caches()  # `functions` still holds every jitted function
    gc.collect()
    left = _mappings() - before
    assert left < 0.2 * grown, f"clear_caches kept {left} of {grown} mappings"
