"""Memory bounds (activa_ppl.memory): a small input that asks for a huge prediction, CSV or
simulation is refused with its estimate and the limit before anything large is allocated."""

from __future__ import annotations

import numpy as np
import pytest

from activa_ppl.csv_input import read_csv
from activa_ppl.memory import check_memory, memory_limit, predict_bytes, simulate_bytes


def test_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv("ACTIVA_MEMORY_LIMIT", "1.5G")
    assert memory_limit() == int(1.5 * 2**30)
    monkeypatch.setenv("ACTIVA_MEMORY_LIMIT", "500MiB")
    assert memory_limit() == 500 * 2**20
    for bad in ("lots", "-1G", "0"):
        monkeypatch.setenv("ACTIVA_MEMORY_LIMIT", bad)
        with pytest.raises(ValueError, match="ACTIVA_MEMORY_LIMIT"):
            memory_limit()
    monkeypatch.delenv("ACTIVA_MEMORY_LIMIT")
    assert 0 < memory_limit()


def test_estimates_grow_with_every_axis():
    config = {"embed_dim": 64, "hidden_dim": 256, "num_heads": 4, "decoder_components": 2, "covariance_rank": 64}
    base = predict_bytes(config, 1, 64, 3, 10)
    assert base < 64 * 2**20  # an ordinary query: tens of MB at most
    for args in ((2, 64, 3, 10), (1, 128, 3, 10), (1, 64, 6, 10), (1, 64, 3, 20)):
        assert predict_bytes(config, *args) > base
    assert predict_bytes(config, 1, 10_240, 2, 10) > 4 * 2**30  # the 10,000 rows: GBs
    assert predict_bytes(config, 1, 16, 10_000, 10) > 4 * 2**30  # and 10,000 columns
    assert simulate_bytes(10**9, 100, 2) > 2**40
    with pytest.raises(ValueError, match=r"would need about .* more than the limit of"):
        check_memory(2**70, "this")


@pytest.mark.parametrize("shape, latents", [((10_000, 2), None), ((7, 3_000), None), ((20, 2), 10**7)])
def test_prediction_refused_with_its_estimate(tiny_fitted, monkeypatch, shape, latents):
    """10,000 rows, 3,000 columns or 10**7 latents: refused, naming N, d and num_latents, before
    the compiled call allocates."""
    monkeypatch.setenv("ACTIVA_MEMORY_LIMIT", "1G")
    obs = np.random.default_rng(0).normal(size=shape)
    with pytest.raises(ValueError, match=r"num_latents = .* would need about .* limit of 1 GiB"):
        tiny_fitted.predict(obs, target=0, num_latents=latents)


def test_num_predictive_latents_from_a_config_is_bounded_too(tiny_fitted, monkeypatch):
    import dataclasses

    import activa_ppl as ap

    monkeypatch.setenv("ACTIVA_MEMORY_LIMIT", "1G")
    big = ap.FittedActiva(ap.Activa(dataclasses.replace(tiny_fitted.config, num_predictive_latents=10**7)),
                          tiny_fitted.params, {})
    with pytest.raises(ValueError, match="num_latents = 10000000"):
        big.predict_batch(np.zeros((1, 20, 2)), np.array([[1.0, 0.0]]), np.array([0]))


def test_csv_cells_bounded_before_parsing(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("a,b\n" + "1,2\n" * 1000)
    assert read_csv(path).shape == (1000, 2)
    with pytest.raises(ValueError, match="more than the 1,000 cells read at most"):
        read_csv(path, max_cells=1000)
    with pytest.raises(ValueError, match="bytes, more than a CSV of 10 cells"):
        read_csv(path, max_cells=10)


@pytest.mark.slow
def test_large_csv_parsed_in_memory_proportional_to_its_size(tmp_path):
    """A 60 MB CSV (5 million cells) parses with a peak far below the 20x of a list-of-strings
    parser."""
    import resource

    path = tmp_path / "big.csv"
    row = ",".join(["1.234567"] * 10) + "\n"
    path.write_text("," .join(f"v{j}" for j in range(10)) + "\n" + row * 500_000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    frame = read_csv(path)
    assert frame.shape == (500_000, 10)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 6 * path.stat().st_size / 2**20
