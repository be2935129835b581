"""Stage merge: over-cluster foreground patches into merge.parts parts, merge parts into communities
(Louvain on the part graph), relabel each kept mask by its patches' community classes (merge.method majority);
or, merge.method leopart, the communities of parts are the classes, patch by patch (pipeline/method/leopart.py).

Memory: the foreground tokens are gathered in a seeded sample of at most merge.max_tokens_in_memory
(merge.TokenSample). When every token fits, all of them are clustered in memory, as before; otherwise the parts
(leopart: and the PCA) are fitted on the sample and every image's tokens are assigned shard by shard, so memory
holds the sample, a shard and a few integers per foreground patch, not the tokens of the dataset."""
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline import io
from pipeline.config import load_params
from pipeline.method import leopart, merge, proposals
from pipeline.report import labelmaps, viz


def main() -> None:
    p = load_params()
    out = Path(p.paths.merge)
    records = io.read_json(Path(p.paths.filter) / "filter.json")["masks"]
    by_image: dict[str, list[dict]] = {}
    for i, r in enumerate(records):
        r["index"] = i
        by_image.setdefault(r["image"], []).append(r)
    names, mask_grids, mask_of_patch, sample = foreground(p, by_image)
    if not sample.complete:
        print(f"merge: {sample.total} foreground tokens > merge.max_tokens_in_memory = {p.merge.max_tokens_in_memory}: "
              "parts fitted on a seeded sample of that many, every token assigned shard by shard", flush=True)
    if p.merge.method == "leopart":
        return write_leopart(p, out, records, by_image, names, mask_grids, sample, mask_of_patch)
    class_now = np.array([r["cluster"] + 1 for r in records], np.int64)
    if sample.complete:  # every foreground token in memory: as before
        res = merge.refine(sample.rows(), mask_grids, mask_of_patch, class_now, p.merge, p.seed)
    else:
        res = merge.refine_streamed(sample.rows(), foreground_tokens(p, mask_grids), mask_grids, mask_of_patch,
                                    class_now, p.merge, p.seed)
    changed = 0
    for r, c, mc, ms in zip(records, res.new_class, res.mask_community, res.mask_community_share):
        r["merged_class"] = int(c)
        r["community"], r["community_share"] = (int(mc), round(float(ms), 4)) if mc >= 0 else (None, None)
        changed += int(r["kept"] and c != r["cluster"] + 1)
    classes = {name: {r["mask"]: r["merged_class"] if r["kept"] else io.IGNORE for r in recs}
               for name, recs in by_image.items()}
    labelmaps.write_mask_labels(p.paths.prepare, p.paths.distill, out, names, classes, "merge", p.workers)
    comm, comm_cls, n_comms = res.part_community, res.community_class, int(res.part_community.max()) + 1
    # parts.npz: every image's (h, w) part map (-1 = no part), raveled and concatenated, with their shapes
    # (grids differ between images of different sizes): io.unpack_ragged(parts, shapes) gives them back.
    flat, shapes = io.pack_ragged([g.astype(np.int16) for g in res.part_grids])
    io.write_npz(out / "parts.npz", names=np.array(names), parts=flat, shapes=shapes)
    viz.save_graph(out / "graph.png", res.graph, comm_cls[comm] - 1,
                   f"{res.n_parts} parts, {n_comms} communities (colour: class)", p.seed)
    io.write_json(out / "merge.json", {"parts": res.n_parts, "communities": n_comms,
                                       "community_class": comm_cls.tolist(), "masks_relabelled": changed,
                                       "part_community": comm.tolist(),
                                       "masks": records})
    print(f"merge: {res.n_parts} parts -> {n_comms} communities; {changed} masks relabelled -> {out}")


def foreground(p, by_image: dict[str, list[dict]]) -> tuple[list[str], list[np.ndarray], np.ndarray,
                                                             merge.TokenSample]:
    """Foreground patches: those a kept mask covers for at least half (and more than any other mask), read shard by
    shard -> every image's name and (h, w) mask grid (merge.mask_grid), the mask index of every foreground patch
    (P,) and the foreground tokens in a TokenSample of merge.max_tokens_in_memory (all of them when they fit)."""
    names, mask_grids, patch_mask = [], [], []
    sample = merge.TokenSample(p.merge.max_tokens_in_memory, p.seed)
    for shard_names, tokens in io.iter_shards(p.paths.features, "tokens"):
        for name, tok in zip(shard_names, tokens):
            recs = by_image.get(name, [])
            mask_map = io.read_label(Path(p.paths.distill) / "masks" / f"{name}.png")
            frac = proposals.patch_fractions(mask_map, len(recs), tok.shape[:2])  # (m, h, w), mask id m + 1
            order = sorted(recs, key=lambda r: r["mask"])
            grid = merge.mask_grid(frac, np.array([r["index"] for r in order], np.int64),
                                   np.array([r["kept"] for r in order], bool))
            names.append(name)
            mask_grids.append(grid)
            sample.add(tok[grid > 0])
            patch_mask.append(grid[grid > 0] - 1)
        tokens = tok = None  # one shard in memory at a time
    return names, mask_grids, np.concatenate(patch_mask), sample


def foreground_tokens(p, mask_grids: list[np.ndarray]) -> Iterator[np.ndarray]:
    """Every image's foreground tokens (n_i, D) again, shard by shard, in the order the stage first read them
    (mask_grids: each image's grid, > 0 = foreground patch)."""
    i = 0
    for _, tokens in io.iter_shards(p.paths.features, "tokens"):
        for tok in tokens:
            yield tok[mask_grids[i] > 0]
            i += 1
        tokens = tok = None  # one shard in memory at a time


def write_leopart(p, out: Path, records: list[dict], by_image: dict[str, list[dict]], names: list[str],
                  mask_grids: list[np.ndarray], sample: merge.TokenSample, mask_of_patch: np.ndarray) -> None:
    """merge.method leopart: the communities of parts are the classes (leopart.communities_as_classes). Label maps
    per patch, not per mask, which is what lets a mask be split as in Leopart: a kept mask's pixel in one of the
    mask's foreground patches takes that patch's class; its other pixels (in patches it covers less than half, or
    less than another mask) take the mask's class (leopart.mask_classes); background 0, dropped masks 255.
    sample: every foreground token when it is complete (all in memory, as before), else the sample the projection
    and parts are fitted on (then the tokens are read again, shard by shard, to assign them and for the gallery)."""
    k = io.cluster_k(p.paths.cluster)
    if sample.complete:
        res, model = leopart.communities_as_classes(sample.rows(), mask_grids, p.merge, k, p.seed), None
    else:
        res, model = leopart.communities_as_classes_streamed(sample.rows(), foreground_tokens(p, mask_grids),
                                                             mask_grids, p.merge, k, p.seed)
    patch_cls = res.class_of_patch
    kept = np.array([r["kept"] for r in records], bool)
    mask_cls, share, split, by_cluster = leopart.mask_classes(
        patch_cls, mask_of_patch, np.array([r["cluster"] for r in records], np.int64), k)
    for r, c, s in zip(records, mask_cls, share):
        r["merged_class"] = int(c)
        r["community"], r["community_share"] = (int(c) - 1, round(float(s), 4)) if s > 0 else (None, None)
    local = np.array([0] + [r["mask"] for r in records], np.int64)  # global mask index + 1 -> mask id in its image
    owners = {n: local[g] for n, g in zip(names, mask_grids)}
    classes = dict(zip(names, merge.part_grids(mask_grids, patch_cls)))

    def mask_class(name: str) -> np.ndarray:
        recs = sorted(by_image.get(name, []), key=lambda r: r["mask"])
        return np.array([r["merged_class"] if r["kept"] else io.IGNORE for r in recs], np.uint8)

    items = ((name, (owners[name], classes[name], mask_class(name))) for name in names)
    labelmaps.write_rendered_labels(p.paths.prepare, p.paths.distill, out, items, leopart.pixel_labels, "merge",
                                    p.workers, total=len(names))
    flat, shapes = io.pack_ragged([g.astype(np.int16) for g in merge.part_grids(mask_grids, res.part_of_patch)])
    io.write_npz(out / "parts.npz", names=np.array(names), parts=flat, shapes=shapes)
    # communities.png: the part graph coloured by class, and per class the patches most like its mean
    counts = [int((g > 0).sum()) for g in mask_grids]
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if model is None:
        image_of_patch = np.repeat(np.arange(len(names)), counts)
        typical = leopart.typical_patches(res.vectors, patch_cls, image_of_patch, k, p.merge.gallery_per_community)
    else:  # the class means from the parts' sums; each image's vectors projected again, one image at a time
        chunks = ((model(f)[1], patch_cls[starts[i]:starts[i + 1]])
                  for i, f in enumerate(foreground_tokens(p, mask_grids)))
        typical = leopart.typical_patches_streamed(chunks, res.class_means(), p.merge.gallery_per_community)
    rows = []
    for c, idx in enumerate(typical, start=1):
        if len(idx):
            comms = np.flatnonzero(res.community_kept == c - 1).tolist()
            folded = f"\n+ folded: {', '.join(map(str, comms[1:]))}" if len(comms) > 1 else ""
            image_of = np.searchsorted(starts, idx, side="right") - 1
            cells = [np.argwhere(mask_grids[m] > 0)[i - starts[m]] for m, i in zip(image_of, idx)]
            images = [io.read_image(Path(p.paths.prepare) / "images" / f"{names[m]}.png") for m in image_of]
            rows.append((f"class {c}: community {comms[0]}{folded}\n{int((patch_cls == c).sum())} patches",
                         [viz.patch_tile(im, mask_grids[m].shape, tuple(cell), io.palette()[c], 48)
                          for im, m, cell in zip(images, image_of, cells)]))
    viz.save_communities(out / "communities.png", res.graph, res.community_kept[res.part_community], rows,
                         f"{res.n_parts} parts, {res.graph.number_of_edges()} edges, {p.merge.algorithm}: "
                         f"{res.communities_found} communities, {res.communities_kept} kept (colour: class)", p.seed)
    io.write_json(out / "merge.json", {
        "method": "leopart", "algorithm": p.merge.algorithm, "parts": res.n_parts,
        "edges": res.graph.number_of_edges(), "communities_found": res.communities_found,
        "communities_kept": res.communities_kept,
        "folding": f"communities beyond the cluster.k = {k} largest (by foreground patches) join the kept one of most "
                   "similar mean feature: the classes stay cluster.k, + background",
        "community_patches": res.community_patches.tolist(), "community_kept": res.community_kept.tolist(),
        "community_class": list(range(1, res.communities_kept + 1)), "part_community": res.part_community.tolist(),
        "patches_by_cluster_and_class": by_cluster.tolist(), "masks_split": int((split & kept).sum()),
        "masks": records})
    print(f"merge (leopart, {p.merge.algorithm}): {res.n_parts} parts -> {res.communities_found} communities, "
          f"{res.communities_kept} kept as classes; {int((split & kept).sum())} kept masks split -> {out}")


if __name__ == "__main__":
    main()
