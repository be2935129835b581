"""`merge.method: leopart`: Leopart's community detection, where the communities of parts are the classes.

Foreground patch features are over-clustered into parts; a part graph is built from how often parts lie next to each
other in an image; Infomap (or Louvain) finds communities of parts; each foreground patch takes its part's community
as its class, so a k-means class can be split and two can be joined, unlike `merge.method: majority`.

Read from MkuuWaUjinga/leopart: experiments/fully_unsup_seg/fully_unsup_seg.py (`start_unsup_seg`, `create_matrix`)
and experiments/utils.py (`normalize_and_transform`, `cluster`). What Leopart does, step by step, and where we depart:

1. Features: StandardScaler, then PCA (faiss PCAMatrix) to `pca_dim` = 50, fitted on every patch (foreground and
   background) of VOC train + val. Here: the same two steps, fitted on the foreground patches of the training split
   only (the only patches clustered; nothing is fitted on the evaluation split).
2. Parts: faiss k-means (100 iterations, 5 restarts) of the foreground patches into `k_community` parts (tuned in
   99-249 with Optuna against ground truth), with `spherical=False` in this step (only Leopart's foreground-extraction
   clustering is spherical). Here: spherical k-means as issue 18 asks, i.e. k-means (sklearn, 100 iterations, 5
   restarts, seeded) on the L2-normalised PCA vectors, into `merge.parts` parts.
   Leopart clusters the embeddings upsampled (nearest) to 100x100 and counts co-occurrence on those 100x100 maps;
   here the part map is the patch grid itself (h, w), so distances 1 and 2 are one and two patches: at Leopart's
   448 px / patch 16 -> 28 patches -> 100 px, distance 2 stays inside the neighbouring patch, here it reaches one
   patch further.
3. Co-occurrence (`create_matrix`): skimage `greycomatrix(distances=[1, 2], 8 angles)` per image, summed over
   distances and angles; the diagonal (a part next to itself) zeroed; each row divided by its sum; the per-image
   matrices summed over images; each row divided by the number of images in which that part had a non-zero row.
   The same here, in that order (`cooccurrence`). Departures: (a) the offsets are exactly d * (dy, dx) for the
   8 king's moves; greycomatrix rounds d * (sin, cos), so Leopart's distance-2 diagonals land on (1, 1) (the
   distance-1 diagonal counted twice), and its angle list has 4 pi / 3 where 5 pi / 4 is meant ((-1, -1) at d = 1,
   (-2, -1) at d = 2). (b) Background: Leopart's background pixels are one more cluster id (`k_community`), a node
   of the matrix and of the graph like any part, so parts can join the background's community and become background.
   Here foreground and background are the kept masks' (filter stage): pairs with a background or ignored patch are
   not counted, background stays label 0 and ignored stays 255.
4. Graph: undirected, edge (i, j) kept where a_ij >= threshold and a_ji >= threshold, weight min(a_ij, a_ji). Same.
5. Infomap(directed=False, two_level=True, seed=i, markov_time, preferred_number_of_modules=20, the number of VOC
   object classes), run for 10 seeds, each run scored against ground truth (their mean reported). Here one Infomap
   with `num_trials = merge.trials` (Infomap keeps the trial of the shortest code length), `seed`, and
   preferred_number_of_modules = cluster.k (the number of classes, given by the user as Leopart's 20). Louvain
   (networkx, `merge.resolution`) is the alternative: `merge.trials` seeded runs, the highest modularity kept.
   Parts without an edge: Leopart leaves them out of Infomap, so they all share label 0; here each is a community
   of its own (then folded, step 6).
6. Communities -> classes: Leopart's label map is the Infomap module id of each pixel's part, scored by Hungarian
   matching against the 21 classes, the modules left unmatched counting as background. Without ground truth we keep
   the DAG's number of classes fixed instead (`fold`): communities ordered by foreground patches, largest first;
   the cluster.k largest become classes 1..k; every further community joins the kept community whose mean unit
   feature is most similar (cosine). Train and evaluate keep reading cluster.k + 1 classes.
Leopart tunes the edge threshold (0.01-0.1), the Markov time (0.1-2) and the number of parts against train ground
truth; here the defaults come from reasoning and label-free statistics of development data (docs/stages.md).

Bounded memory (merge.max_tokens_in_memory; Leopart holds every patch in memory, as faiss needs): with more foreground
patches than that, the projection and the parts are fitted on a seeded sample of them (`fit_part_model`) and every
image's patches are then projected and assigned one image at a time (`communities_as_classes_streamed`); the
gallery's typical patches too (`typical_patches_streamed`). With fewer, everything runs on all of them as before.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import networkx as nx
import numpy as np
from sklearn.cluster import KMeans

from pipeline.config import MergeConfig
from pipeline.method import merge

DIRECTIONS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))  # (dy, dx): the 8 king's moves
DISTANCES = (1, 2)  # Leopart's create_matrix(clusters, num_clusters, [1, 2])


@dataclass(frozen=True)
class Projection:
    """Standardise, PCA, L2-normalise (Leopart's normalize_and_transform, then unit length for spherical k-means)."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,) standard deviation, 1 where it is 0 (as sklearn's StandardScaler)
    components: np.ndarray  # (D, d) the top-d principal axes

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        """(N, D) features -> (N, d) float32 unit vectors."""
        z = ((feats.astype(np.float64) - self.mean) / self.scale) @ self.components
        return (z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def fit_projection(feats: np.ndarray, dim: int) -> Projection:
    """(P, D) features -> the Projection to min(dim, D) dimensions fitted on them (exact: eigenvectors of the
    covariance of the standardised features, largest first)."""
    x = feats.astype(np.float64)
    mean, std = x.mean(0), x.std(0)
    scale = np.where(std > 0, std, 1.0)
    z = (x - mean) / scale
    _, vecs = np.linalg.eigh(z.T @ z / max(len(z), 1))
    return Projection(mean, scale, vecs[:, ::-1][:, :min(dim, x.shape[1])])


def spherical_kmeans(x: np.ndarray, parts: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(P, d) unit vectors -> (P,) int64 part ids in 0..min(parts, P)-1 and (n_parts, d) centres (k-means on the
    unit vectors: 100 iterations, 5 seeded restarts, as Leopart's faiss call)."""
    km = fit_spherical_kmeans(x, parts, seed)
    return km.labels_.astype(np.int64), km.cluster_centers_.astype(np.float32)


def fit_spherical_kmeans(x: np.ndarray, parts: int, seed: int) -> KMeans:
    """(P, d) unit vectors -> the fitted k-means of `spherical_kmeans` (its `predict` assigns further vectors)."""
    return KMeans(min(parts, len(x)), n_init=5, max_iter=100, random_state=seed).fit(x)


@dataclass(frozen=True)
class PartModel:
    """The projection and the spherical k-means parts fitted on a sample of foreground patches."""

    projection: Projection
    kmeans: KMeans

    @property
    def n_parts(self) -> int:
        return int(self.kmeans.n_clusters)

    def __call__(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, D) features -> (n,) int64 nearest part and (n, d) float32 unit vectors."""
        x = self.projection(feats)
        return (self.kmeans.predict(x).astype(np.int64) if len(x) else np.zeros(0, np.int64)), x


def fit_part_model(sample: np.ndarray, cfg: MergeConfig, seed: int) -> PartModel:
    """(S, D) foreground patch features (a seeded sample) -> the projection (cfg.pca_dim) and cfg.parts spherical
    k-means parts fitted on them, as `communities_as_classes` fits them on all patches."""
    proj = fit_projection(sample, cfg.pca_dim)
    return PartModel(proj, fit_spherical_kmeans(proj(sample), cfg.parts, seed))


def image_cooccurrence(part_map: np.ndarray, n_parts: int, distances: tuple[int, ...] = DISTANCES) -> np.ndarray:
    """One image's (h, w) int part map (-1 = no part) -> (n_parts, n_parts) int64 counts: [a, b] = number of
    (cell of part a, cell d * (dy, dx) away of part b) over d in distances and the 8 DIRECTIONS; pairs with a cell
    of no part are not counted; the diagonal (a part next to itself) is 0, as Leopart's fill_diagonal."""
    h, w = part_map.shape
    counts = np.zeros(n_parts * n_parts, np.int64)
    for d in distances:
        for dy, dx in DIRECTIONS:
            oy, ox = d * dy, d * dx
            y0, y1, x0, x1 = max(0, -oy), min(h, h - oy), max(0, -ox), min(w, w - ox)
            if y1 <= y0 or x1 <= x0:
                continue
            a, b = part_map[y0:y1, x0:x1], part_map[y0 + oy:y1 + oy, x0 + ox:x1 + ox]
            ok = (a >= 0) & (b >= 0)
            counts += np.bincount(a[ok] * n_parts + b[ok], minlength=n_parts * n_parts)
    counts = counts.reshape(n_parts, n_parts)
    np.fill_diagonal(counts, 0)
    return counts


def cooccurrence(part_maps: Iterable[np.ndarray], n_parts: int,
                 distances: tuple[int, ...] = DISTANCES) -> np.ndarray:
    """Per-image (h, w) part maps -> (n_parts, n_parts) float64, in Leopart's order: each image's counts
    (image_cooccurrence) row-normalised, summed over images, each row divided by the number of images in which the
    part had any counted neighbour. Rows of parts never counted are 0 (Leopart asserts every part appears)."""
    total, seen = np.zeros((n_parts, n_parts)), np.zeros(n_parts)
    for part_map in part_maps:
        c = image_cooccurrence(part_map, n_parts, distances).astype(np.float64)
        rows = c.sum(1, keepdims=True)
        total += np.divide(c, rows, out=np.zeros_like(c), where=rows > 0)
        seen += rows[:, 0] > 0
    return np.divide(total, seen[:, None], out=np.zeros_like(total), where=seen[:, None] > 0)


def part_graph(a: np.ndarray, threshold: float) -> nx.Graph:
    """(n, n) co-occurrence -> undirected graph on nodes 0..n-1: edge (i, j), i < j, where a[i, j] and a[j, i] are
    both >= threshold (and > 0), weight min(a[i, j], a[j, i]), as Leopart."""
    low = np.minimum(a, a.T)
    keep = np.triu((a >= threshold) & (a.T >= threshold) & (low > 0), 1)
    g = nx.Graph()
    g.add_nodes_from(range(len(a)))
    g.add_weighted_edges_from((int(i), int(j), float(low[i, j])) for i, j in zip(*np.nonzero(keep)))
    return g


def infomap_modules(g: nx.Graph, markov_time: float, trials: int, seed: int, preferred: int | None) -> np.ndarray:
    """Graph -> (n,) module id per node (two-level, undirected Infomap from the `infomap` package, `trials` seeded
    trials, the shortest code length kept; preferred: Infomap's preferred_number_of_modules; Infomap's seed is
    seed + 1, as it must be >= 1); -1 for a node without an edge (left out of Infomap, as Leopart does)."""
    from infomap import Infomap

    out = np.full(g.number_of_nodes(), -1, np.int64)
    if g.number_of_edges() == 0:
        return out
    # As Leopart's Infomap(directed=False, two_level=True, seed, markov_time, preferred_number_of_modules), written
    # as Infomap's command-line flags, which every 2.x release reads the same way
    flags = f"--two-level --flow-model undirected --seed {seed + 1} --markov-time {markov_time!r} --num-trials {trials}"
    im = Infomap(flags + " --silent" + (f" --preferred-number-of-modules {preferred}" if preferred else ""))
    for i, j, w in g.edges(data="weight"):
        im.add_link(int(i), int(j), float(w))
    result = im.run()
    modules = result.modules() if result is not None else im.get_modules()  # infomap >= 2.9 returns a Result
    for node, module in dict(modules).items():
        out[node] = module
    return out


def louvain_modules(g: nx.Graph, resolution: float, trials: int, seed: int) -> np.ndarray:
    """Graph -> (n,) community id per node: networkx Louvain for seeds seed..seed+trials-1, the highest modularity
    kept (first of equals); -1 for a node without an edge."""
    out = np.full(g.number_of_nodes(), -1, np.int64)
    if g.number_of_edges() == 0:
        return out
    best, best_q = None, -np.inf
    for t in range(trials):
        comms = nx.community.louvain_communities(g, weight="weight", resolution=resolution, seed=seed + t)
        q = nx.community.modularity(g, comms, weight="weight", resolution=resolution)
        if q > best_q:
            best, best_q = comms, q
    for cid, nodes in enumerate(best):
        out[list(nodes)] = cid
    out[[n for n in g.nodes if g.degree(n) == 0]] = -1
    return out


def order_communities(modules: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(n,) module id per node (-1: none, each such node becomes a community of its own) and (n,) size of each
    node -> (n,) community ids 0.. ordered by total size, largest first (ties: the community holding the smallest
    node first)."""
    n = len(modules)
    raw = np.where(modules >= 0, modules, modules.max(initial=-1) + 1 + np.arange(n))
    ids = np.unique(raw)
    total = np.array([size[raw == m].sum() for m in ids])
    first = np.array([np.flatnonzero(raw == m).min() for m in ids])
    order = np.lexsort((first, -total))
    rank = np.empty(len(ids), np.int64)
    rank[order] = np.arange(len(ids))
    return rank[np.searchsorted(ids, raw)]


def fold(community: np.ndarray, part_sum: np.ndarray, k: int) -> np.ndarray:
    """(n_parts,) community of each part (ordered largest first, `order_communities`), (n_parts, d) sum of each
    part's unit patch vectors, k classes -> (n_communities,) the kept community (0..k-1) each community becomes:
    the k largest are kept as they are; every further one joins the kept community whose mean vector is most
    similar (cosine)."""
    n_comm = int(community.max()) + 1
    out = np.arange(n_comm)
    if n_comm <= k:
        return out
    mean = np.zeros((n_comm, part_sum.shape[1]))
    np.add.at(mean, community, part_sum)
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    out[k:] = (mean[k:] @ mean[:k].T).argmax(1)
    return out


def find_communities(g: nx.Graph, cfg: MergeConfig, k: int, seed: int) -> np.ndarray:
    """Part graph -> (n,) raw community per part (-1: no edge) by cfg.algorithm."""
    if cfg.algorithm == "infomap":
        return infomap_modules(g, cfg.markov_time, cfg.trials, seed, k)
    return louvain_modules(g, cfg.resolution, cfg.trials, seed)


@dataclass
class Communities:
    """What `communities_as_classes` computes. P: foreground patches, in image then row-major order."""

    n_parts: int
    part_of_patch: np.ndarray  # (P,) part id
    vectors: np.ndarray | None  # (P, d) unit vectors the parts were clustered on (None: streamed, not held)
    graph: nx.Graph  # the part graph
    part_community: np.ndarray  # (n_parts,) community found, 0 = the most patches
    community_kept: np.ndarray  # (communities_found,) the kept community (= class - 1) each community became
    community_patches: np.ndarray  # (communities_found,) foreground patches of each community
    part_sum: np.ndarray | None = None  # (n_parts, d) sum of each part's unit vectors

    def class_means(self) -> np.ndarray:
        """(communities_kept, d) each class's mean unit vector, from the parts' sums (no patch needed)."""
        d = self.part_sum.shape[1]
        total, count = np.zeros((self.communities_kept, d)), np.zeros(self.communities_kept)
        cls = self.community_kept[self.part_community]
        np.add.at(total, cls, self.part_sum)
        np.add.at(count, cls, np.bincount(self.part_of_patch, minlength=self.n_parts))
        return (total / np.maximum(count, 1)[:, None]).astype(np.float32)

    @property
    def class_of_patch(self) -> np.ndarray:
        """(P,) class 1..k of every foreground patch: its part's community after folding, + 1."""
        return self.community_kept[self.part_community[self.part_of_patch]] + 1 if self.n_parts else \
            np.zeros(0, np.int64)

    @property
    def communities_found(self) -> int:
        return len(self.community_kept)

    @property
    def communities_kept(self) -> int:
        return int(self.community_kept.max()) + 1 if len(self.community_kept) else 0


def communities_as_classes(feats: np.ndarray, part_maps_of: list[np.ndarray], cfg: MergeConfig, k: int,
                           seed: int) -> Communities:
    """Leopart end to end. feats (P, D): the foreground patch features in image then row-major order;
    part_maps_of: per image an (h, w) int grid whose > 0 cells are those P patches (the merge stage's mask grids)
    -> parts (cfg.parts, seeded), their co-occurrence graph (cfg.edge_threshold), communities (cfg.algorithm) folded
    to at most k classes. No foreground patch gives no parts and no communities, not an error."""
    if len(feats) == 0:
        empty = np.zeros(0, np.int64)
        return Communities(0, empty, np.zeros((0, 1), np.float32), nx.Graph(), empty, empty, empty)
    x = fit_projection(feats, cfg.pca_dim)(feats)
    part_of_patch, _ = spherical_kmeans(x, cfg.parts, seed)
    n_parts = int(part_of_patch.max()) + 1
    part_sum = np.zeros((n_parts, x.shape[1]))
    np.add.at(part_sum, part_of_patch, x)
    return _communities(part_of_patch, n_parts, part_sum, x, part_maps_of, cfg, k, seed)


def communities_as_classes_streamed(sample: np.ndarray, feats_of_images: Iterable[np.ndarray],
                                    part_maps_of: list[np.ndarray], cfg: MergeConfig, k: int,
                                    seed: int) -> tuple[Communities, PartModel | None]:
    """`communities_as_classes` with bounded memory: the projection and parts fitted on `sample` (S, D), a seeded
    sample of the foreground patch features (merge.TokenSample); then each image's foreground features ((n_i, D),
    in the order of part_maps_of, from an iterable that reads them image by image) projected and assigned to their
    nearest part. -> the Communities (`vectors` None: never held) and the fitted PartModel (None: no patch)."""
    if len(sample) == 0:
        return communities_as_classes(np.zeros((0, 1), np.float32), part_maps_of, cfg, k, seed), None
    model = fit_part_model(sample, cfg, seed)
    part_sum = np.zeros((model.n_parts, model.projection.components.shape[1]))
    chunks = []
    for feats in feats_of_images:
        parts, x = model(feats)
        np.add.at(part_sum, parts, x)
        chunks.append(parts)
    part_of_patch = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
    if len(part_of_patch) != sum(int((g > 0).sum()) for g in part_maps_of):
        raise ValueError(f"communities_as_classes_streamed: {len(part_of_patch)} foreground features for the "
                         f"{sum(int((g > 0).sum()) for g in part_maps_of)} foreground cells of part_maps_of")
    return _communities(part_of_patch, model.n_parts, part_sum, None, part_maps_of, cfg, k, seed), model


def _communities(part_of_patch: np.ndarray, n_parts: int, part_sum: np.ndarray, x: np.ndarray | None,
                 part_maps_of: list[np.ndarray], cfg: MergeConfig, k: int, seed: int) -> Communities:
    """From the part (P,) of every foreground patch and each part's sum of unit vectors (n_parts, d) on: the
    co-occurrence graph, its communities and their folding to k classes."""
    def maps():  # each image's (h, w) part map, one at a time
        start = 0
        for grid in part_maps_of:
            m = np.full(grid.shape, -1, np.int64)
            n = int((grid > 0).sum())
            m[grid > 0] = part_of_patch[start:start + n]
            start += n
            yield m

    g = part_graph(cooccurrence(maps(), n_parts), cfg.edge_threshold)
    part_size = np.bincount(part_of_patch, minlength=n_parts)
    community = order_communities(find_communities(g, cfg, k, seed), part_size)
    patches = np.bincount(community, weights=part_size).astype(np.int64)
    return Communities(n_parts, part_of_patch, x, g, community, fold(community, part_sum, k), patches, part_sum)


def pixel_labels(mask_map: np.ndarray, owner: np.ndarray, patch_class: np.ndarray,
                 mask_class: np.ndarray) -> np.ndarray:
    """One image: (H, W) mask map (0 = none, i = mask i), (h, w) owner grid (the mask i whose foreground patch a
    cell is, 0 = none), (h, w) class of each foreground patch, (m,) class of each mask (255 = ignored) -> (H, W)
    uint8 label map: background 0; a pixel of mask i lying in a foreground patch of mask i takes that patch's class
    (the patch grid upsampled nearest: pixel y -> row y * h // H); any other pixel of mask i takes mask_class[i]."""
    H, W = mask_map.shape
    h, w = owner.shape
    rows, cols = (np.arange(H) * h) // H, (np.arange(W) * w) // W
    lut = np.zeros(max(256, len(mask_class) + 1), np.uint8)
    lut[1:len(mask_class) + 1] = mask_class
    lab = lut[mask_map]
    own = mask_map > 0
    own &= owner[rows][:, cols] == mask_map
    lab[own] = patch_class[rows][:, cols][own]
    return lab


def typical_patches(x: np.ndarray, cls: np.ndarray, image: np.ndarray, n_classes: int, n: int) -> list[np.ndarray]:
    """(P, d) unit vectors, (P,) class 1..n_classes and (P,) image index of each patch -> per class, up to n patch
    indices most similar (cosine) to the class's mean vector, at most one per image."""
    out = []
    for c in range(1, n_classes + 1):
        idx = np.flatnonzero(cls == c)
        if len(idx) == 0:
            out.append(idx)
            continue
        mean = x[idx].mean(0)
        idx = idx[np.argsort(-(x[idx] @ mean), kind="stable")]
        _, first = np.unique(image[idx], return_index=True)
        out.append(idx[np.sort(first)][:n])
    return out


def typical_patches_streamed(chunks: Iterable[tuple[np.ndarray, np.ndarray]], means: np.ndarray,
                             n: int) -> list[np.ndarray]:
    """`typical_patches` image by image: chunks yields each image's (n_i, d) unit vectors and (n_i,) classes
    1..n_classes (images in order; patch indices count on across them); means (n_classes, d): each class's mean
    vector -> per class, up to n patch indices most similar to its mean, at most one per image. The same indices
    as `typical_patches` when `means` are its class means."""
    best: list[list[tuple[float, int]]] = [[] for _ in range(len(means))]  # per class: (-score, index), one per image
    offset = 0
    for x, cls in chunks:
        for c in np.unique(cls):
            idx = np.flatnonzero(cls == c)
            scores = x[idx] @ means[c - 1]
            j = int(np.argmax(scores))  # the first of the highest: typical_patches' stable order
            best[c - 1].append((-float(scores[j]), offset + int(idx[j])))
        offset += len(cls)
    return [np.array([i for _, i in sorted(b)[:n]], np.int64) for b in best]


def mask_classes(patch_cls: np.ndarray, mask_of_patch: np.ndarray, mask_cluster: np.ndarray,
                 k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Class 1..k (P,) and mask index (P,) of every foreground patch, k-means class 0..k-1 of every mask (M,) ->
    (M,) class of each mask: the majority class of its foreground patches, or, for a mask without one, the class
    holding most foreground patches of its k-means class; (M,) the majority's share of the mask's patches (0: none);
    (M,) bool: its patches hold more than one class (Leopart splits the mask); (k, k) foreground patches per
    (k-means class, class)."""
    by_cluster = np.zeros((k, k), np.int64)
    np.add.at(by_cluster, (mask_cluster[mask_of_patch], patch_cls - 1), 1)
    groups = merge.per_mask(patch_cls, mask_of_patch, len(mask_cluster))
    top, share = merge.majority_share(groups)
    split = np.array([len(np.unique(v)) > 1 for v in groups], bool)
    cls = np.where(top > 0, top, by_cluster.argmax(1)[mask_cluster] + 1)
    return cls, share, split, by_cluster
