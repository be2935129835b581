"""Row vectors scaled to unit length: the one L2 normalisation of the method and the baselines."""
from __future__ import annotations

import numpy as np

TINY = 1e-12  # a row shorter than this is divided by it instead: a zero row stays zero


def unit_rows(x: np.ndarray) -> np.ndarray:
    """(N, D) float -> (N, D) of the same dtype, each row divided by its L2 norm (a zero row stays zero).

    sklearn.preprocessing.normalize(x) up to the last bit: its row norms sum the squares by einsum, numpy's norm
    below by pairwise addition, and the artifacts are written with numpy's (on the shipped features the two norms
    differ in the last bit for about half the patches)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), TINY)
