"""glibc's huge-page allocator for the command line and the ``inference/`` scripts.

XLA's CPU backend allocates its temporary buffers anew on every training step, and glibc's
``malloc`` hands large freed blocks back to the operating system, so a step pays page faults
for memory it just released: measured on a 2-core machine, about 30 % of training time.
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (glibc >= 2.35; nothing to install) makes those
blocks transparent huge pages and gave 10-25 % faster training steps. The tunable is read when
the process starts, so a program that wants it must re-execute itself with the variable set:
:func:`apply_hugetlb` does that once, at the very start of ``activa train`` / ``evaluate`` /
``demo`` and of the ``inference/`` scripts, before JAX is imported.

It changes where memory comes from, never a result. Set ``ACTIVA_NO_HUGETLB=1`` to opt out;
an existing ``GLIBC_TUNABLES`` that already sets ``glibc.malloc.hugetlb`` is left alone (other
tunables in it are kept). See the "Scaling" page of the documentation.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Callable, Mapping

__all__ = ["OPT_OUT_VARIABLE", "HUGETLB_TUNABLE", "hugetlb_environment", "apply_hugetlb"]

#: Set to anything but ``""``/``"0"`` to run without the huge-page allocator.
OPT_OUT_VARIABLE = "ACTIVA_NO_HUGETLB"
#: The glibc tunable that is added to ``GLIBC_TUNABLES``.
HUGETLB_TUNABLE = "glibc.malloc.hugetlb=1"
#: Set in the re-executed process, so that it never re-executes again.
_REEXEC_MARK = "ACTIVA_HUGETLB_REEXEC"
#: The first glibc that knows the tunable (older ones ignore it).
_MIN_GLIBC = (2, 35)


def _glibc_version(libc: tuple[str, str]) -> tuple[int, ...] | None:
    name, version = libc
    if name != "glibc":
        return None
    try:
        return tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return None


def hugetlb_environment(environ: Mapping[str, str], *, system: str | None = None,
                        libc: tuple[str, str] | None = None) -> dict[str, str] | None:
    """The environment to re-execute with, or ``None`` when the process should run as it is.

    ``None`` when: not Linux with glibc >= 2.35 (``system``/``libc`` default to this machine's
    ``platform.system()``/``platform.libc_ver()``), the opt-out variable
    :data:`OPT_OUT_VARIABLE` is set, this process is already the re-executed one, or
    ``GLIBC_TUNABLES`` already sets ``glibc.malloc.hugetlb``. Otherwise a copy of ``environ``
    with :data:`HUGETLB_TUNABLE` appended to ``GLIBC_TUNABLES`` (``:``-separated) and the
    re-execution mark set.
    """
    system = platform.system() if system is None else system
    version = _glibc_version(platform.libc_ver() if libc is None else libc)
    if system != "Linux" or version is None or version < _MIN_GLIBC:
        return None
    if environ.get(OPT_OUT_VARIABLE, "") not in ("", "0") or environ.get(_REEXEC_MARK):
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" in tunables:
        return None
    new = dict(environ)
    new["GLIBC_TUNABLES"] = f"{tunables}:{HUGETLB_TUNABLE}" if tunables else HUGETLB_TUNABLE
    new[_REEXEC_MARK] = "1"
    return new


def apply_hugetlb(*, execve: Callable | None = None, environ: Mapping[str, str] | None = None,
                  argv: list[str] | None = None) -> bool:
    """Re-execute this program once with the huge-page allocator, if :func:`hugetlb_environment`
    says so; call it first thing in a ``main`` (the re-executed process reaches the same call,
    finds its mark and goes on).

    ``execve`` (default ``os.execve``, which does not return), ``environ`` (default
    ``os.environ``) and ``argv`` (default ``sys.orig_argv``: the interpreter's own command line,
    ``-m`` and script path included) are for tests. Returns ``False`` when nothing was done or
    the re-execution failed (the program then simply runs with the default allocator), ``True``
    only from a test's ``execve`` that returns.
    """
    env = hugetlb_environment(os.environ if environ is None else environ)
    if env is None:
        return False
    args = list(sys.orig_argv if argv is None else argv)
    if not args or not sys.executable:
        return False
    try:
        (execve or os.execve)(sys.executable, args, env)
    except OSError:
        return False
    return True
