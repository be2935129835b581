"""K-means at scale, the one entry point of the cluster stage (mask embeddings, and every patch in dense mode) and of
merge's part over-clustering: `TokenSample` draws a bounded seeded sample of the rows, `fit` fits the centres on it
by scikit-learn or faiss (cluster.backend), and `assign` gives every row its nearest centre, chunk by chunk.

Both backends run `n_init` seeded starts from k-means++ centres (scikit-learn's greedy k-means++; the faiss starts
seeded seed, seed + 1, ...), stop a start by scikit-learn's rule (centres moved less than TOL x the mean feature
variance, or `max_iter` iterations) and keep the start of the lowest inertia; faiss fills an empty cluster by
splitting a large one. Where we depart from faiss's defaults: faiss starts from k rows drawn at random (on
well-separated blobs that merged two of six and split another in 5 starts: k-means++ does not), always runs its
`niter` iterations, and subsamples to 256 rows per centre, switched off here so that the sample is `TokenSample`'s,
the same for both backends. On well-separated data both
give the same partition (tests/unit/test_kmeans.py); their fit times at 1M x 384: benchmarks/bench_kmeans.py.

Infomap crashes (segfault) in a process that loaded faiss after scikit-learn, so cluster.backend faiss with merge's
infomap is refused on load (pipeline/config/schemas.py)."""
from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus

Backend = Literal["sklearn", "faiss"]
TOL = 1e-4  # a start has converged when its centres moved less than this x the mean feature variance (scikit-learn's)
MAX_ITER = 300  # Lloyd iterations of each start of the cluster stage's k-means (scikit-learn's default)
ASSIGN_CHUNK = 65536  # rows per distance block in `assign`: 65536 x k float32 at a time


class TokenSample:
    """A seeded uniform sample, without replacement, of at most `size` rows of a stream of (n_i, D) arrays (the
    foreground tokens of image after image, or the mask embeddings): every row draws a random key from
    default_rng(seed), in stream order, and the `size` rows of the smallest keys are kept (pruned whenever 2 * size
    are held), so memory holds at most about 2 * size rows, never the stream. When the stream has at most `size`
    rows, `complete` is True and `rows()` is their concatenation, exactly."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.total = size, 0
        self.rng = np.random.default_rng(seed)
        self.parts: list[np.ndarray] = []
        self.keys: list[np.ndarray] = []
        self.positions: list[np.ndarray] = []
        self.held = 0

    def add(self, rows: np.ndarray) -> None:
        """The next (n, D) rows of the stream."""
        self.parts.append(rows)
        self.keys.append(self.rng.random(len(rows)))
        self.positions.append(np.arange(self.total, self.total + len(rows)))
        self.total += len(rows)
        self.held += len(rows)
        if self.held > 2 * self.size:
            self._prune()

    def _prune(self) -> None:
        rows, keys, pos = np.concatenate(self.parts), np.concatenate(self.keys), np.concatenate(self.positions)
        keep = np.sort(np.argsort(keys, kind="stable")[:self.size])  # the smallest keys, in stream order
        self.parts, self.keys, self.positions = [rows[keep]], [keys[keep]], [pos[keep]]
        self.held = len(keep)

    @property
    def complete(self) -> bool:
        """Whether the sample is the whole stream (at most `size` rows came)."""
        return self.total <= self.size

    def rows(self) -> np.ndarray:
        """(min(size, total), D): the sample, in stream order (the whole stream, concatenated, when `complete`)."""
        if not self.parts:
            return np.zeros((0, 0), np.float32)
        if self.held > self.size:
            self._prune()
        return np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]

    def positions_kept(self) -> np.ndarray:
        """(min(size, total),) the stream positions of the sampled rows, ascending."""
        if self.held > self.size:
            self._prune()
        return np.concatenate(self.positions) if self.positions else np.zeros(0, np.int64)


def sample_rows(x: np.ndarray, size: int, seed: int) -> np.ndarray:
    """(N, D) rows held in memory -> the `TokenSample` of at most `size` of them (x itself when N <= size)."""
    sample = TokenSample(size, seed)
    sample.add(x)
    return sample.rows()


def fit(x: np.ndarray, k: int, n_init: int, max_iter: int, seed: int, backend: Backend) -> np.ndarray:
    """(N, D) rows (a sample) -> (k, D) float32 centres of the best of n_init seeded k-means starts, by `backend`;
    each start stops after max_iter Lloyd iterations or when its centres moved less than TOL (`faiss_start`)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if backend == "sklearn":
        km = KMeans(k, n_init=n_init, max_iter=max_iter, tol=TOL, random_state=seed).fit(x)
        return km.cluster_centers_.astype(np.float32)
    import faiss  # imported only when chosen: an optional accelerator beside scikit-learn
    tol = TOL * float(np.var(x, axis=0).mean())  # scikit-learn's rule: TOL x the mean variance of the features
    best, best_obj = None, np.inf
    for start in range(n_init):
        centres, obj = faiss_start(faiss, x, k, max_iter, tol, seed + start)
        if obj < best_obj:
            best, best_obj = centres, obj
    return best


def faiss_start(faiss, x: np.ndarray, k: int, max_iter: int, tol: float, seed: int) -> tuple[np.ndarray, float]:
    """One faiss k-means start: (N, D) float32 rows -> ((k, D) float32 centres, inertia of the last assignment).
    From k-means++ centres (seeded), one faiss Lloyd iteration at a time until the summed squared move of the
    centres is at most `tol` or max_iter iterations ran: scikit-learn's stopping rule (faiss itself has none)."""
    centres = kmeans_plusplus(x, k, random_state=seed)[0].astype(np.float32)
    obj = np.inf
    for _ in range(max_iter):
        km = faiss.Kmeans(x.shape[1], k, niter=1, seed=seed, verbose=False,
                          max_points_per_centroid=len(x) // k + 1, min_points_per_centroid=1)
        km.train(x, init_centroids=centres)
        new = np.asarray(km.centroids, np.float32).reshape(k, x.shape[1])
        moved, centres, obj = float(((new - centres) ** 2).sum()), new, float(km.obj[-1])
        if moved <= tol:
            break
    return centres, obj


def assign(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(N, D) rows, (k, D) centres -> (N,) int64 index of each row's nearest centre (squared Euclidean; the lowest
    index on a tie), ASSIGN_CHUNK rows at a time."""
    c = np.asarray(centres, np.float32)
    half_sq = 0.5 * np.einsum("kd,kd->k", c, c)
    out = np.empty(len(x), np.int64)
    for i in range(0, len(x), ASSIGN_CHUNK):
        block = np.asarray(x[i:i + ASSIGN_CHUNK], np.float32)
        out[i:i + ASSIGN_CHUNK] = np.argmin(half_sq - block @ c.T, axis=1)  # |x - c|^2 / 2 less the |x|^2 / 2
    return out
