"""The train/valid/test split of simulated SCMs, shared by every simulator."""

from __future__ import annotations

import numpy as np

__all__ = ["split_codes"]


def split_codes(num_scms: int, fractions: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """``(S,)`` int8 split codes (0 train, 1 valid, 2 test): ``round(f_train S)`` train,
    ``round(f_valid S)`` valid, the rest test, assigned by a permutation drawn from ``rng``."""
    num_train = int(round(fractions[0] * num_scms))
    num_valid = min(int(round(fractions[1] * num_scms)), num_scms - num_train)
    split = np.full(num_scms, 2, dtype=np.int8)
    order = rng.permutation(num_scms)
    split[order[:num_train]] = 0
    split[order[num_train:num_train + num_valid]] = 1
    return split
