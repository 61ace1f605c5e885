"""Shared parts of the benchmark scripts in ``benchmarks/`` (imported as ``bench_lib`` when a
script runs as ``python benchmarks/<script>.py``, whose folder is then first on ``sys.path``).

* :mod:`bench_lib.machine`: machine details, the float32 matmul peak, timing helpers, and
  workers run in fresh processes of their own;
* :mod:`bench_lib.cells`: the dataset shapes of a cell, their simulated data, parameter counts;
* :mod:`bench_lib.train_timing`: timing a compiled training chunk of the library (ACTIVA's and
  MACE-TNP's alike) with XLA's FLOP count;
* :mod:`bench_lib.activa_worker`, :mod:`bench_lib.mace_worker`: one cell's measurements of
  ACTIVA and of the MACE-TNP baseline;
* :mod:`bench_lib.dowhy_baseline`: DoWhy's per-dataset rate;
* :mod:`bench_lib.report`: goals and the text report of ``bench_core.py``.
"""
