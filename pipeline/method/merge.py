"""Leopart-style refinement: over-cluster foreground patches into parts, merge parts into communities
on a part graph (co-occurrence in masks + spatial adjacency, Louvain in networkx), relabel masks.

Bounded memory (merge.max_tokens_in_memory): the parts are fitted on a `kmeans.TokenSample` of the foreground tokens
(all of them when they fit) and every image's tokens are then assigned to them one image at a time (`refine`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import networkx as nx
import numpy as np
from pipeline.config import MergeConfig
from pipeline.method import kmeans
from pipeline.method.vectors import unit_rows


def fit_parts(sample: np.ndarray, parts: int, seed: int, backend: kmeans.Backend) -> np.ndarray:
    """(S, D) foreground patch features (a sample of them) -> (min(parts, S), D) float32 part centres of k-means
    (`backend`, 3 seeded starts, 100 iterations) on their unit vectors, for `predict_parts`."""
    return kmeans.fit(unit_rows(sample.astype(np.float32)), min(parts, len(sample)), 3, 100, seed, backend)


def predict_parts(centres: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """(n, D) foreground patch features (one image's) -> (n,) int64 id of each one's nearest part (unit vectors)."""
    return kmeans.assign(unit_rows(feats.astype(np.float32)), centres)


def mask_grid(frac: np.ndarray, mask_index: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """One image's mask coverage of its patches (m, h, w) float (proposals.patch_fractions), each mask's
    dataset-wide index (m,) int and whether it was kept (m,) bool -> (h, w) int64 grid: index + 1 where a
    kept mask covers at least half the patch and covers it most, else 0."""
    grid = np.zeros(frac.shape[1:], np.int64)
    if len(frac) == 0:
        return grid
    best = frac.argmax(0)
    half = frac.max(0) >= 0.5
    for m in range(len(frac)):
        if kept[m]:
            grid[(best == m) & half] = mask_index[m] + 1
    return grid


def part_grids(mask_grids: list[np.ndarray], parts: np.ndarray) -> list[np.ndarray]:
    """Per-image (h, w) int grids (> 0 = foreground patch) and the part id of every foreground patch, in image
    then row-major order (P,) -> per-image (h, w) int64 part maps (-1 = no part)."""
    out, start = [], 0
    for grid in mask_grids:
        pg = np.full(grid.shape, -1, np.int64)
        n = int((grid > 0).sum())
        pg[grid > 0] = parts[start:start + n]
        start += n
        out.append(pg)
    return out


def part_graph(part_maps: list[np.ndarray], mask_maps: list[np.ndarray], n_parts: int, cfg: MergeConfig) -> nx.Graph:
    """Per-image part maps (h, w) int (-1 = no part) and mask maps (h, w) int (0 = none) -> weighted graph.

    Edge weight = weight_cooccur * share of mask co-occurrences + weight_adjacent * share of
    4-neighbour adjacencies, each normalised to sum 1 over all pairs.
    """
    co = np.zeros((n_parts, n_parts))
    adj = np.zeros((n_parts, n_parts))
    for parts, masks in zip(part_maps, mask_maps):
        for m in np.unique(masks[masks > 0]):
            ids = np.unique(parts[(masks == m) & (parts >= 0)])
            co[np.ix_(ids, ids)] += 1
        for a, b in ((parts[:, :-1], parts[:, 1:]), (parts[:-1, :], parts[1:, :])):
            ok = (a >= 0) & (b >= 0) & (a != b)
            np.add.at(adj, (a[ok], b[ok]), 1)
            np.add.at(adj, (b[ok], a[ok]), 1)
    np.fill_diagonal(co, 0)
    w = cfg.weight_cooccur * co / max(co.sum(), 1) + cfg.weight_adjacent * adj / max(adj.sum(), 1)
    g = nx.Graph()
    g.add_nodes_from(range(n_parts))
    ii, jj = np.nonzero(np.triu(w, 1))
    g.add_weighted_edges_from((int(i), int(j), float(w[i, j])) for i, j in zip(ii, jj))
    return g


def communities(g: nx.Graph, resolution: float, seed: int) -> np.ndarray:
    """Part graph -> (n_parts,) community id per part (Louvain, seeded; largest community first)."""
    comms = nx.community.louvain_communities(g, weight="weight", resolution=resolution, seed=seed)
    comms = sorted(comms, key=lambda c: (-len(c), min(c)))
    out = np.zeros(g.number_of_nodes(), np.int64)
    for cid, nodes in enumerate(comms):
        out[list(nodes)] = cid
    return out


def community_classes(comm_of_patch: np.ndarray, class_of_patch: np.ndarray, n_comms: int) -> np.ndarray:
    """Per foreground patch: community (P,) and pseudo-label class (P,) -> (n_comms,) majority class per community."""
    out = np.zeros(n_comms, np.int64)
    for c in range(n_comms):
        cls = class_of_patch[comm_of_patch == c]
        out[c] = np.bincount(cls).argmax() if len(cls) else 0
    return out


def relabel_masks(mask_patch_classes: list[np.ndarray], current: np.ndarray, min_agreement: float) -> np.ndarray:
    """For each mask, the community classes of its patches (list of (p_i,) int) and its class (M,)
    -> (M,) new classes: the majority community class where its share >= min_agreement, else unchanged."""
    out = current.copy()
    for i, cls in enumerate(mask_patch_classes):
        if len(cls) == 0:
            continue
        counts = np.bincount(cls)
        top = counts.argmax()
        if counts[top] / len(cls) >= min_agreement:
            out[i] = top
    return out


def majority_share(mask_patch_values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """For each mask, a non-negative int per patch (list of (p_i,)) -> (M,) majority value (-1 for a mask
    without patches) and (M,) float its share of the mask's patches (0 where none)."""
    top = np.full(len(mask_patch_values), -1, np.int64)
    share = np.zeros(len(mask_patch_values), np.float64)
    for i, v in enumerate(mask_patch_values):
        if len(v):
            counts = np.bincount(v)
            top[i] = counts.argmax()
            share[i] = counts[top[i]] / len(v)
    return top, share


def per_mask(values: np.ndarray, mask_of_patch: np.ndarray, n_masks: int) -> list[np.ndarray]:
    """A value per foreground patch (P,) and its mask index (P,) in 0..n_masks-1 -> per mask, its patches'
    values (list of n_masks arrays, patch order kept)."""
    if n_masks == 0:
        return []
    order = np.argsort(mask_of_patch, kind="stable")
    return np.split(values[order], np.cumsum(np.bincount(mask_of_patch, minlength=n_masks))[:-1])


@dataclass
class Refined:
    """What `refine` computes: parts, their graph and communities, and each mask's new class."""

    n_parts: int
    part_grids: list[np.ndarray]  # per image (h, w) int64 part ids, -1 = no part
    graph: nx.Graph
    part_community: np.ndarray  # (n_parts,) community of each part
    community_class: np.ndarray  # (n_communities,) majority class of each community
    new_class: np.ndarray  # (M,) class of each mask after relabelling
    mask_community: np.ndarray  # (M,) majority community of each mask's patches (-1 = none)
    mask_community_share: np.ndarray  # (M,) that community's share of the mask's patches


def refine(sample: np.ndarray, feats_of_images: Iterable[np.ndarray], mask_grids: list[np.ndarray],
           mask_of_patch: np.ndarray, mask_class: np.ndarray, cfg: MergeConfig, seed: int,
           backend: kmeans.Backend) -> Refined:
    """Leopart's refinement end to end, in bounded memory.

    sample (S, D): a seeded sample of the foreground patch features (`kmeans.TokenSample`; all of them when they fit);
    feats_of_images: every image's foreground features (n_i, D), image by image in the order of mask_grids, from an
    iterable that reads them; mask_grids: per image (h, w) int (mask index + 1, 0 = background) whose > 0 cells are
    the P foreground patches, in image then row-major order; mask_of_patch (P,) mask index; mask_class (M,) current
    class of each mask -> cfg.parts parts fitted on the sample (k-means by `backend`), every patch assigned to its
    nearest part, the part graph, Louvain communities, community classes by majority vote, masks relabelled where
    cfg.min_agreement holds. No foreground patch (P = 0: no kept mask covers half a patch) gives one empty part and
    no relabelling."""
    parts = [np.zeros(0, np.int64)]
    if len(sample):
        centres = fit_parts(sample, cfg.parts, seed, backend)
        parts += [predict_parts(centres, f) for f in feats_of_images]
    parts = np.concatenate(parts)
    if len(parts) != len(mask_of_patch):
        raise ValueError(f"refine: {len(parts)} foreground features for {len(mask_of_patch)} patches")
    return refine_parts(parts, mask_grids, mask_of_patch, mask_class, cfg, seed)


def refine_parts(parts: np.ndarray, mask_grids: list[np.ndarray], mask_of_patch: np.ndarray, mask_class: np.ndarray,
                 cfg: MergeConfig, seed: int) -> Refined:
    """`refine` from the part id (P,) of every foreground patch on: graph, communities, classes, relabelled masks."""
    n_parts = int(parts.max()) + 1 if len(parts) else 1  # no foreground patch: one empty part, no relabelling
    grids = part_grids(mask_grids, parts)
    g = part_graph(grids, mask_grids, n_parts, cfg)
    comm = communities(g, cfg.resolution, seed)
    comm_of_patch = comm[parts]
    comm_cls = community_classes(comm_of_patch, mask_class[mask_of_patch], int(comm.max()) + 1)
    n_masks = len(mask_class)
    new_cls = relabel_masks(per_mask(comm_cls[comm_of_patch], mask_of_patch, n_masks), mask_class, cfg.min_agreement)
    mask_comm, share = majority_share(per_mask(comm_of_patch, mask_of_patch, n_masks))
    return Refined(n_parts, grids, g, comm, comm_cls, new_cls, mask_comm, share)


def label_records(records: list[dict], res: Refined) -> dict:
    """The filter stage's mask records ({"cluster", "kept", ...}, in `refine`'s mask order), updated in place: each
    gets its merged_class, its patches' majority community and that community's share of them (None, None: no
    foreground patch) -> merge.json's summary: parts, communities, each community's class, the kept masks whose
    class changed and each part's community."""
    changed = 0
    for r, c, mc, ms in zip(records, res.new_class, res.mask_community, res.mask_community_share):
        r["merged_class"] = int(c)
        r["community"], r["community_share"] = (int(mc), round(float(ms), 4)) if mc >= 0 else (None, None)
        changed += int(r["kept"] and c != r["cluster"] + 1)
    return {"parts": res.n_parts, "communities": int(res.part_community.max()) + 1,
            "community_class": res.community_class.tolist(), "masks_relabelled": changed,
            "part_community": res.part_community.tolist()}
