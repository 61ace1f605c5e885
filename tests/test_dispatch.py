"""activa_ppl.dispatch: evaluation_runtime sets synchronous dispatch before JAX's CPU backend
starts (no XLA flag; the user's XLA_FLAGS untouched), respects the opt-out and leaves a started
backend alone, each case in a fresh interpreter; run_with_stall_restart reruns a silent child."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOW = ("import os, jax; print(os.environ.get('XLA_FLAGS', '-').replace(' ', '_'), "
        "jax.config.values['jax_cpu_enable_async_dispatch'])")


def _run(code: str, **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "ACTIVA_EVAL_RUNTIME")}
    environ.update(env, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.split()


def test_applied_before_the_backend_starts():
    out = _run("from activa_ppl.dispatch import evaluation_runtime as e; print(e()); "
               "import jax; jax.numpy.ones(2).block_until_ready(); " + SHOW)
    assert out == ["True", "-", "False"]


def test_user_xla_flags_untouched():
    code = "from activa_ppl.dispatch import evaluation_runtime as e; print(e()); " + SHOW
    assert _run(code, XLA_FLAGS="--xla_cpu_enable_fast_math=false") == ["True", "--xla_cpu_enable_fast_math=false",
                                                                        "False"]


@pytest.mark.parametrize("started", [False, True], ids=["opted-out", "backend-started"])
def test_left_alone(started):
    start = "import jax; jax.numpy.ones(2).block_until_ready(); " if started else ""
    out = _run(start + "from activa_ppl.dispatch import evaluation_runtime as e; print(e()); " + SHOW,
               **({} if started else {"ACTIVA_EVAL_RUNTIME": "0"}))
    assert out == ["False", "-", "True"]


def test_activa_evaluate_applies_it_and_other_commands_do_not(tmp_path):
    code = "from activa_ppl.cli import main; main([{args}]); " + SHOW
    data = tmp_path / "d"
    simulate = ["simulate", "--num-vars", "2", "--num-scms", "10", "--num-samples", "5", "--out", str(data)]
    assert _run(code.format(args=", ".join(map(repr, simulate))))[-2:] == ["-", "True"]
    evaluate = ["evaluate", "--dataset", str(data), "--methods", "gaussian-conditional", "--max-scms", "1",
                "--figure-scms", "0", "--quiet", "--out", str(tmp_path / "e")]
    assert _run(code.format(args=", ".join(map(repr, evaluate))))[-2:] == ["-", "False"]


def _watched(script: str, **kw) -> tuple[int, bytes]:
    import io

    from activa_ppl.dispatch import run_with_stall_restart

    sink = io.BytesIO()
    code = run_with_stall_restart([sys.executable, "-c", script], out=sink, poll_s=0.05, **kw)
    return code, sink.getvalue()


def test_stall_restart_copies_output_and_exit_status():
    code, out = _watched("import os, sys; print('bar\\r', os.environ['ACTIVA_WATCHED_CHILD']); sys.exit(3)",
                         stall_s=30)
    assert code == 3 and out.split() == [b"bar", b"1"]


def test_a_silent_child_is_killed_and_rerun(tmp_path):
    marker = tmp_path / "first-run"
    script = (f"import pathlib, sys, time; m = pathlib.Path({str(marker)!r})\n"
              "if not m.exists():\n    m.touch(); print('started', flush=True); time.sleep(120)\n"
              "print('second run'); sys.exit(0)")
    code, out = _watched(script, stall_s=1.5)
    assert code == 0 and out.split() == [b"started", b"second", b"run"]


def test_stalling_every_time_gives_up():
    code, out = _watched("import time; print('x', flush=True); time.sleep(120)", stall_s=1.0,
                         max_restarts=1)
    assert code == 1 and out.split() == [b"x", b"x"]
    with pytest.raises(ValueError, match="stall_s"):
        _watched("pass", stall_s=0)
