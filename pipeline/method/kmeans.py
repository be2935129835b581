"""K-means at scale, the one entry point of the cluster stage (mask embeddings, and every patch in dense mode) and of
merge's part over-clustering: `TokenSample` draws a bounded seeded sample of the rows, `fit` fits the centres on it
by scikit-learn or faiss (cluster.backend), and `assign` gives every row its nearest centre, chunk by chunk.

Both backends run `n_init` seeded starts from k-means++ centres (scikit-learn's greedy k-means++; the faiss starts
seeded seed, seed + 1, ...) and keep the start of the lowest inertia. Where they differ: scikit-learn stops a start
when its centres moved less than TOL x the mean feature variance; faiss has no such rule and runs exactly `max_iter`
Lloyd iterations (calling faiss once per iteration to add the rule made a 1M-row fit several times slower here),
and fills an empty cluster by splitting a large one. Where we depart from faiss's defaults: faiss starts from k rows
drawn at random (on well-separated blobs that merged two of six and split another in 5 starts: k-means++ does not),
and subsamples to 256 rows per centre, switched off here so that the sample is `TokenSample`'s, the same for both
backends. On well-separated data both give the same partition (tests/unit/test_kmeans.py); their fit times at 1M x 384: benchmarks/bench_kmeans.py.

Infomap crashes (segfault) in a process that loaded faiss after scikit-learn, so cluster.backend faiss with merge's
infomap is refused on load (pipeline/config/schemas.py)."""
from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus

Backend = Literal["sklearn", "faiss"]
TOL = 1e-4  # scikit-learn: a start has converged when its centres moved less than this x the mean feature variance
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
    """(N, D) rows (a sample) -> (k, D) float32 centres of the best of n_init seeded k-means starts, by `backend`
    (scikit-learn: each start stops at TOL or after max_iter Lloyd iterations; faiss: exactly max_iter)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if backend == "sklearn":
        km = KMeans(k, n_init=n_init, max_iter=max_iter, tol=TOL, random_state=seed).fit(x)
        return km.cluster_centers_.astype(np.float32)
    import faiss  # imported only when chosen: an optional accelerator beside scikit-learn
    best, best_obj = None, np.inf
    for start in range(n_init):
        init = kmeans_plusplus(x, k, random_state=seed + start)[0].astype(np.float32)
        km = faiss.Kmeans(x.shape[1], k, niter=max_iter, seed=seed + start, verbose=False,
                          max_points_per_centroid=len(x) // k + 1, min_points_per_centroid=1)
        km.train(x, init_centroids=init)
        if km.obj[-1] < best_obj:
            best, best_obj = np.asarray(km.centroids, np.float32).reshape(k, x.shape[1]), float(km.obj[-1])
    return best


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
