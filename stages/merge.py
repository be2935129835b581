"""Stage merge: over-cluster foreground patches into merge.parts parts, merge parts into communities
(Louvain on the part graph), relabel each kept mask by its patches' community classes."""
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.config import load_params
from pipeline.method import merge, proposals
from pipeline.report import labelmaps, viz


def main() -> None:
    p = load_params()
    out = Path(p.paths.merge)
    records = io.read_json(Path(p.paths.filter) / "filter.json")["masks"]
    by_image: dict[str, list[dict]] = {}
    for i, r in enumerate(records):
        r["index"] = i
        by_image.setdefault(r["image"], []).append(r)
    # Foreground patches: those a kept mask covers for at least half (and more than any other mask).
    names, mask_grids, feats, patch_mask = [], [], [], []
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
            feats.append(tok[grid > 0])
            patch_mask.append(grid[grid > 0] - 1)
    feats_all = np.concatenate(feats)
    mask_of_patch = np.concatenate(patch_mask)
    class_now = np.array([r["cluster"] + 1 for r in records], np.int64)
    res = merge.refine(feats_all, mask_grids, mask_of_patch, class_now, p.merge, p.seed)
    changed = 0
    for r, c, mc, ms in zip(records, res.new_class, res.mask_community, res.mask_community_share):
        r["merged_class"] = int(c)
        r["community"], r["community_share"] = (int(mc), round(float(ms), 4)) if mc >= 0 else (None, None)
        changed += int(r["kept"] and c != r["cluster"] + 1)
    classes = {name: {r["mask"]: r["merged_class"] if r["kept"] else io.IGNORE for r in recs}
               for name, recs in by_image.items()}
    labelmaps.write_mask_labels(p.paths.prepare, p.paths.distill, out, names, classes, "merge")
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


if __name__ == "__main__":
    main()
