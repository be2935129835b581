"""`merge.method: leopart`: Leopart's community detection, where the communities of parts are the classes.

Foreground patch features are standardised, PCA-reduced and scaled to unit length; spherical k-means cuts them into
parts; a part graph counts how often parts lie within 1-2 patches of each other in 8 directions; Infomap (or Louvain)
finds communities of parts, folded to cluster.k classes; each foreground patch takes its part's community's class.
Where we depart from Leopart (MkuuWaUjinga/leopart): fitted on the training split's foreground only, counted on the
patch grid with exact offsets, background no node, one Infomap with merge.trials trials, isolated parts communities of
their own, communities beyond cluster.k folded by similarity; parts fitted on a bounded sample (kmeans.TokenSample,
k-means by cluster.backend) and every image's patches assigned one image at a time. Step by step, with reasons:
docs/leopart.md."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import networkx as nx
import numpy as np
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from pipeline.config import MergeConfig
from pipeline.method import kmeans, merge
from pipeline.method.vectors import unit_rows

DIRECTIONS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))  # (dy, dx): the 8 king's moves
DISTANCES = (1, 2)  # Leopart's create_matrix(clusters, num_clusters, [1, 2])


def fit_projection(feats: np.ndarray, dim: int) -> Pipeline:
    """(P, D) features -> StandardScaler, PCA to min(dim, D) dimensions and unit length (Normalizer), fitted on
    them (Leopart's normalize_and_transform, then unit vectors for spherical k-means)."""
    pca = PCA(min(dim, feats.shape[1]), svd_solver="covariance_eigh")  # exact: eigenvectors of the covariance
    return make_pipeline(StandardScaler(), pca, Normalizer()).fit(feats.astype(np.float64))


def fit_spherical_kmeans(x: np.ndarray, parts: int, seed: int, backend: kmeans.Backend) -> np.ndarray:
    """(P, d) unit vectors -> (min(parts, P), d) float32 centres of k-means on them (`backend`, 100 iterations, 5
    seeded restarts, as Leopart's faiss call; `kmeans.assign` assigns further vectors)."""
    return kmeans.fit(x, min(parts, len(x)), 5, 100, seed, backend)


@dataclass(frozen=True)
class PartModel:
    """The projection and the spherical k-means parts fitted on a sample of foreground patches."""

    projection: Pipeline  # fit_projection's
    centres: np.ndarray  # (parts, d) float32: fit_spherical_kmeans's

    @property
    def n_parts(self) -> int:
        return len(self.centres)

    def __call__(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, D) features -> (n,) int64 nearest part and (n, d) float32 unit vectors."""
        if len(feats) == 0:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        x = self.projection.transform(feats.astype(np.float64)).astype(np.float32)
        return kmeans.assign(x, self.centres), x

    @property
    def dim(self) -> int:
        """d, the projection's output dimensions."""
        return int(self.projection[1].n_components_)


def fit_part_model(sample: np.ndarray, cfg: MergeConfig, seed: int, backend: kmeans.Backend) -> PartModel:
    """(S, D) foreground patch features (a seeded sample) -> the projection (cfg.pca_dim) and cfg.parts spherical
    k-means parts (by `backend`) fitted on them."""
    proj = fit_projection(sample, cfg.pca_dim)
    return PartModel(proj, fit_spherical_kmeans(proj.transform(sample.astype(np.float64)).astype(np.float32),
                                                cfg.parts, seed, backend))


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
    mean = unit_rows(mean)
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
    graph: nx.Graph  # the part graph
    part_community: np.ndarray  # (n_parts,) community found, 0 = the most patches
    community_kept: np.ndarray  # (communities_found,) the kept community (= class - 1) each community became
    community_patches: np.ndarray  # (communities_found,) foreground patches of each community
    part_sum: np.ndarray  # (n_parts, d) sum of each part's unit vectors

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


def communities_as_classes(sample: np.ndarray, feats_of_images: Iterable[np.ndarray], part_maps_of: list[np.ndarray],
                           cfg: MergeConfig, k: int, seed: int,
                           backend: kmeans.Backend) -> tuple[Communities, PartModel | None]:
    """Leopart end to end, in bounded memory. sample (S, D): a seeded sample of the foreground patch features
    (kmeans.TokenSample; all of them when they fit); feats_of_images: each image's foreground features (n_i, D), in
    the order of part_maps_of, from an iterable that reads them image by image; part_maps_of: per image an (h, w)
    int grid whose > 0 cells are those patches, in image then row-major order (the merge stage's mask grids)
    -> the projection and parts (cfg.pca_dim, cfg.parts, seeded) fitted on the sample, every patch projected and
    assigned to its nearest part, their co-occurrence graph (cfg.edge_threshold), communities (cfg.algorithm) folded
    to at most k classes; and the fitted PartModel. No foreground patch gives no parts, no communities and no
    model (None), not an error."""
    if len(sample) == 0:
        empty = np.zeros(0, np.int64)
        return Communities(0, empty, nx.Graph(), empty, empty, empty, np.zeros((0, 1))), None
    model = fit_part_model(sample, cfg, seed, backend)
    part_sum = np.zeros((model.n_parts, model.dim))
    chunks = [np.zeros(0, np.int64)]
    for feats in feats_of_images:
        parts, x = model(feats)
        np.add.at(part_sum, parts, x)
        chunks.append(parts)
    part_of_patch = np.concatenate(chunks)
    if len(part_of_patch) != sum(int((g > 0).sum()) for g in part_maps_of):
        raise ValueError(f"communities_as_classes: {len(part_of_patch)} foreground features for the "
                         f"{sum(int((g > 0).sum()) for g in part_maps_of)} foreground cells of part_maps_of")
    return _communities(part_of_patch, model.n_parts, part_sum, part_maps_of, cfg, k, seed), model


def _communities(part_of_patch: np.ndarray, n_parts: int, part_sum: np.ndarray, part_maps_of: list[np.ndarray],
                 cfg: MergeConfig, k: int, seed: int) -> Communities:
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
    return Communities(n_parts, part_of_patch, g, community, fold(community, part_sum, k), patches, part_sum)


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


def typical_patches(chunks: Iterable[tuple[np.ndarray, np.ndarray]], means: np.ndarray,
                             n: int) -> list[np.ndarray]:
    """Image by image: chunks yields each image's (n_i, d) unit vectors and (n_i,) classes 1..n_classes (images in
    order; patch indices count on across them); means (n_classes, d): each class's mean vector -> per class, up to
    n patch indices most similar (cosine) to its mean, at most one per image (its most similar; the first of equals),
    the most similar first (equals: the smaller index first)."""
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


def label_records(records: list[dict], res: Communities, mask_of_patch: np.ndarray, cfg: MergeConfig,
                  k: int) -> dict:
    """The filter stage's mask records ({"cluster", "kept", ...}), updated in place: each gets its merged_class
    (mask_classes), its community (class - 1) and the class's share of its foreground patches (None, None: no
    foreground patch) -> merge.json's summary: the parts, the graph, the communities found and kept, how they fold,
    the foreground patches per (k-means class, class) and the kept masks split."""
    kept = np.array([r["kept"] for r in records], bool)
    mask_cls, share, split, by_cluster = mask_classes(
        res.class_of_patch, mask_of_patch, np.array([r["cluster"] for r in records], np.int64), k)
    for r, c, s in zip(records, mask_cls, share):
        r["merged_class"] = int(c)
        r["community"], r["community_share"] = (int(c) - 1, round(float(s), 4)) if s > 0 else (None, None)
    return {
        "method": "leopart", "algorithm": cfg.algorithm, "parts": res.n_parts,
        "edges": res.graph.number_of_edges(), "communities_found": res.communities_found,
        "communities_kept": res.communities_kept,
        "folding": f"communities beyond the cluster.k = {k} largest (by foreground patches) join the kept one of most "
                   "similar mean feature: the classes stay cluster.k, + background",
        "community_patches": res.community_patches.tolist(), "community_kept": res.community_kept.tolist(),
        "community_class": list(range(1, res.communities_kept + 1)), "part_community": res.part_community.tolist(),
        "patches_by_cluster_and_class": by_cluster.tolist(), "masks_split": int((split & kept).sum())}
