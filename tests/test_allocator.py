"""glibc's huge-page allocator applied by re-execution (issue 17): the decision logic, the
re-execution call (with a stand-in for ``os.execve``), which ``activa`` commands ask for it, and
one real re-execution of a tiny interpreter (no JAX)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from activa_ppl import allocator
from activa_ppl.allocator import HUGETLB_TUNABLE, OPT_OUT_VARIABLE, apply_hugetlb, hugetlb_environment
from activa_ppl.cli import _wants_hugetlb

LINUX = dict(system="Linux", libc=("glibc", "2.36"))


def test_adds_the_tunable_and_the_mark():
    env = hugetlb_environment({"PATH": "/bin"}, **LINUX)
    assert env["GLIBC_TUNABLES"] == HUGETLB_TUNABLE and env["PATH"] == "/bin"
    assert env[allocator._REEXEC_MARK] == "1"
    # other tunables are kept, ours appended
    env = hugetlb_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, **LINUX)
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{HUGETLB_TUNABLE}"


@pytest.mark.parametrize("environ, system, libc", [
    ({OPT_OUT_VARIABLE: "1"}, "Linux", ("glibc", "2.36")),              # opted out
    ({OPT_OUT_VARIABLE: "yes"}, "Linux", ("glibc", "2.36")),
    ({allocator._REEXEC_MARK: "1"}, "Linux", ("glibc", "2.36")),         # already re-executed
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "Linux", ("glibc", "2.36")),  # the user's choice
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, "Linux", ("glibc", "2.36")),
    ({}, "Linux", ("glibc", "2.31")),                                    # glibc without the tunable
    ({}, "Linux", ("musl", "1.2")),
    ({}, "Linux", ("", "")),
    ({}, "Darwin", ("", "")),
    ({}, "Windows", ("", "")),
])
def test_no_reexec(environ, system, libc):
    assert hugetlb_environment(environ, system=system, libc=libc) is None


@pytest.mark.parametrize("value", ["", "0"])
def test_opt_out_variable_empty_or_zero_does_not_opt_out(value):
    assert hugetlb_environment({OPT_OUT_VARIABLE: value}, **LINUX) is not None


def test_apply_execs_the_interpreter_command_line(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "hugetlb_environment", lambda environ: {**environ, "X": "1"})
    argv = [sys.executable, "-m", "activa_ppl.cli", "train", "--steps", "3"]
    assert apply_hugetlb(execve=lambda *a: calls.append(a), environ={"A": "b"}, argv=argv) is True
    (path, args, env), = calls
    assert path == sys.executable and args == argv and env == {"A": "b", "X": "1"}


def test_apply_does_nothing_when_not_needed_or_exec_fails(monkeypatch):
    def fail(*a):
        raise OSError("no exec here")

    def never(*a):
        raise AssertionError("must not re-execute")

    assert apply_hugetlb(execve=never, environ={OPT_OUT_VARIABLE: "1"}, argv=["python"]) is False
    monkeypatch.setattr(allocator, "hugetlb_environment", lambda environ: dict(environ))
    assert apply_hugetlb(execve=fail, environ={}, argv=["python", "x.py"]) is False  # runs on as is


@pytest.mark.parametrize("argv, wanted", [
    (["train", "--data", "d"], True), (["--quiet", "evaluate", "--dataset", "x"], True),
    (["demo"], True), (["predict", "--model", "m"], False), (["models"], False),
    (["simulate", "--out", "x"], False), ([], False), (["--help"], False),
])
def test_which_activa_commands_reexec(argv, wanted):
    assert _wants_hugetlb(argv) is wanted


@pytest.mark.skipif(hugetlb_environment({}) is None, reason="needs Linux with glibc >= 2.35")
def test_real_reexec_of_a_tiny_interpreter():
    code = ("from activa_ppl.allocator import apply_hugetlb; apply_hugetlb(); import os; "
            "print(os.environ.get('GLIBC_TUNABLES'), os.getpid())")
    env = {k: v for k, v in os.environ.items()
           if k not in ("GLIBC_TUNABLES", OPT_OUT_VARIABLE, allocator._REEXEC_MARK)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out[0] == HUGETLB_TUNABLE
    off = subprocess.run([sys.executable, "-c", code], env={**env, OPT_OUT_VARIABLE: "1"},
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert off[0] == "None"
    assert platform.system() == "Linux"
