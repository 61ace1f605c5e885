"""Multi-host data-parallel training: start JAX's distributed runtime before anything else.

Call :func:`initialize` once per process, before the first JAX computation, then train with
``TrainConfig(data_parallel=True)``: ``jax.devices()`` then lists the devices of every host and
:func:`activa_ppl.training.train` shards each minibatch over all of them. Every host must hold
the full dataset (the same file, or the same simulation seed): the training arrays are
replicated on every device and each host supplies its own copy. Only process 0 writes the
checkpoint and ``metrics.jsonl``; every process reads the checkpoint on resume, so ``--workdir``
must be on a file system all hosts share.
"""

from __future__ import annotations

from typing import Any

import jax

__all__ = ["initialize", "is_main_process"]


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: list[int] | None = None) -> dict[str, Any]:
    """Connect this process to the others with ``jax.distributed.initialize``.

    With no arguments JAX detects the cluster from its environment (SLURM, Open MPI, MPICH,
    Cloud TPU, Kubernetes); otherwise pass all of ``coordinator_address`` (``"host:port"`` of
    process 0), ``num_processes`` and ``process_id``. Calling it again in the same process is a
    no-op.

    Args:
        coordinator_address: ``"host:port"`` reachable from every process, served by process 0.
        num_processes: number of processes (usually one per host).
        process_id: this process's rank, ``0 .. num_processes - 1``.
        local_device_ids: the local devices this process drives (default: all visible ones).

    Returns:
        ``{"process_index", "process_count", "local_device_count", "device_count"}``.

    Raises:
        ValueError: only some of ``coordinator_address``, ``num_processes``, ``process_id``
            are given.
    """
    explicit = [coordinator_address, num_processes, process_id]
    if any(v is not None for v in explicit) and any(v is None for v in explicit):
        raise ValueError("pass all of coordinator_address, num_processes and process_id, or none of "
                         "them (auto-detection from the cluster environment)")
    if not jax.distributed.is_initialized():
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id, local_device_ids=local_device_ids)
    return {"process_index": jax.process_index(), "process_count": jax.process_count(),
            "local_device_count": jax.local_device_count(), "device_count": jax.device_count()}


def is_main_process() -> bool:
    """Whether this is process 0, the one that writes files (always true on a single host)."""
    return jax.process_index() == 0
