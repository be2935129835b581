"""Stage merge: over-cluster foreground patches into merge.parts parts, merge parts into communities
(Louvain on the part graph), relabel each kept mask by its patches' community classes."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from pipeline import cluster, io, merge, proposals, viz  # noqa: E402
from pipeline.config import load_params  # noqa: E402


def main() -> None:
    p = load_params()
    out = Path(p.paths.merge)
    records = io.read_json(Path(p.paths.filter) / "filter.json")["masks"]
    by_image: dict[str, list[dict]] = {}
    for i, r in enumerate(records):
        r["index"] = i
        by_image.setdefault(r["image"], []).append(r)
    # Foreground patches: those a kept mask covers for at least half.
    names, mask_grids, feats, patch_mask = [], [], [], []
    for shard_names, tokens in io.iter_shards(p.paths.features, "tokens"):
        for name, tok in zip(shard_names, tokens):
            recs = by_image.get(name, [])
            mask_map = io.read_label(Path(p.paths.proposals) / "masks" / f"{name}.png")
            grid = np.zeros(tok.shape[:2], np.int64)  # global mask index + 1, 0 = none
            if recs:
                frac = proposals.patch_fractions(mask_map, len(recs), tok.shape[:2])
                best = frac.argmax(0)
                for r in recs:
                    sel = (best == r["mask"] - 1) & (frac.max(0) >= 0.5)
                    grid[sel] = r["index"] + 1 if r["kept"] else 0
            names.append(name)
            mask_grids.append(grid)
            feats.append(tok[grid > 0])
            patch_mask.append(grid[grid > 0] - 1)
    feats_all = np.concatenate(feats)
    mask_of_patch = np.concatenate(patch_mask)
    class_now = np.array([r["cluster"] + 1 for r in records], np.int64)
    parts = merge.overcluster(feats_all, p.merge.parts, p.seed)
    n_parts = int(parts.max()) + 1 if len(parts) else 1  # no foreground patch: one empty part, no relabelling
    part_grids = merge.part_grids(mask_grids, parts)
    g = merge.part_graph(part_grids, mask_grids, n_parts, p.merge)
    comm = merge.communities(g, p.merge.resolution, p.seed)
    comm_cls = merge.community_classes(comm[parts], class_now[mask_of_patch], int(comm.max()) + 1)
    patch_cls = comm_cls[comm[parts]]
    per_mask = [patch_cls[mask_of_patch == i] for i in range(len(records))]
    new_cls = merge.relabel_masks(per_mask, class_now, p.merge.min_agreement)
    comm_of_patch = comm[parts]  # the report's community galleries: each mask's majority community
    mask_comm, mask_share = merge.majority_share([comm_of_patch[mask_of_patch == i] for i in range(len(records))])
    changed = 0
    for r, c, mc, ms in zip(records, new_cls, mask_comm, mask_share):
        r["merged_class"] = int(c)
        r["community"], r["community_share"] = (int(mc), round(float(ms), 4)) if mc >= 0 else (None, None)
        changed += int(r["kept"] and c != r["cluster"] + 1)
    for name in tqdm(names, desc="merge", unit="img"):
        mask_map = io.read_label(Path(p.paths.proposals) / "masks" / f"{name}.png")
        recs = sorted(by_image.get(name, []), key=lambda r: r["mask"])
        lab = cluster.render_labels(mask_map, np.array([r["merged_class"] if r["kept"] else io.IGNORE for r in recs], np.uint8))
        image = io.read_image(Path(p.paths.prepare) / "images" / f"{name}.png")
        viz.write_maps(out, [name], lab[None], image[None])
    io.write_npz(out / "parts.npz", names=np.array(names), parts=np.stack(part_grids).astype(np.int16))
    viz.save_graph(out / "graph.png", g, comm_cls[comm] - 1,
                   f"{n_parts} parts, {int(comm.max()) + 1} communities (colour: class)", p.seed)
    io.write_json(out / "merge.json", {"parts": n_parts, "communities": int(comm.max()) + 1,
                                       "community_class": comm_cls.tolist(), "masks_relabelled": changed,
                                       "part_community": comm.tolist(),
                                       "masks": records})
    print(f"merge: {n_parts} parts -> {int(comm.max()) + 1} communities; {changed} masks relabelled -> {out}")


if __name__ == "__main__":
    main()
