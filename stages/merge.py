"""Stage merge: foreground patches over-clustered into merge.parts parts (fitted on a sample of merge.max_tokens_in_memory)
and communities of parts; leopart: the communities are the classes, patch by patch (pipeline/method/leopart.py);
majority: each kept mask takes its patches' communities' vote (merge.py); none: the filter's labels pass on."""
from pathlib import Path

import numpy as np

from pipeline import distributed, io
from pipeline.config import load_params
from pipeline.method import foreground, gallery, labelmaps, leopart, merge
from pipeline.report import viz


def main() -> None:
    p = load_params()
    distributed.launch("stages.merge", p.processes, "cpu")  # every process: the same fit, its share of maps
    out, c = Path(p.paths.merge), p.merge
    records = io.read_json(Path(p.paths.filter) / "filter.json")["masks"]
    if c.method == "none":
        labelmaps.pass_on(p.paths.filter, out, io.read_manifest(p.paths.prepare)["names"], "merge", "merge.method none")
        if distributed.is_main():
            io.write_json(out / "merge.json", {"method": "none", "masks": records})
        return
    fg = foreground.select(p.paths.features, p.paths.distill, records, c.max_tokens_in_memory, p.seed)
    if c.method == "leopart":
        k = io.cluster_k(p.paths.cluster)
        res, model = leopart.communities_as_classes(fg.sample.rows(), fg.tokens(), fg.mask_grids, c, k, p.seed,
                                                    p.cluster.backend)
        summary = leopart.label_records(records, res, fg.mask_of_patch, c, k)
        mask_cls = np.array([r["merged_class"] if r["kept"] else io.IGNORE for r in records], np.int64)
        labelmaps.write_rendered_labels(p.paths.prepare, p.paths.distill, out,
                                        fg.label_items(records, res.class_of_patch, mask_cls), leopart.pixel_labels,
                                        "merge", p.workers, total=len(fg.names))
        part_grids = merge.part_grids(fg.mask_grids, res.part_of_patch)
        if distributed.is_main():
            gallery.save_communities(out / "communities.png", p.paths.prepare, fg, res, model,
                                     c.gallery_per_community, c.algorithm, p.seed)
        line = (f"merge (leopart, {c.algorithm}): {res.n_parts} parts -> {res.communities_found} communities, "
                f"{res.communities_kept} kept as classes; {summary['masks_split']} kept masks split")
    else:
        class_now = np.array([r["cluster"] + 1 for r in records], np.int64)
        res = merge.refine(fg.sample.rows(), fg.tokens(), fg.mask_grids, fg.mask_of_patch, class_now, c, p.seed,
                           p.cluster.backend)
        summary = merge.label_records(records, res)
        labelmaps.write_mask_labels(p.paths.prepare, p.paths.distill, out, fg.names, labelmaps.classes_by_image(
            records, [r["merged_class"] if r["kept"] else io.IGNORE for r in records]), "merge", p.workers)
        part_grids, comm_cls = res.part_grids, res.community_class[res.part_community]
        if distributed.is_main():
            viz.save_graph(out / "graph.png", res.graph, comm_cls - 1,
                           f"{res.n_parts} parts, {summary['communities']} communities (colour: class)", p.seed)
        line = (f"merge: {res.n_parts} parts -> {summary['communities']} communities; "
                f"{summary['masks_relabelled']} masks relabelled")
    if distributed.is_main():  # parts.npz: every image's (h, w) part map (-1 = no part), raveled, with their shapes
        flat, shapes = io.pack_ragged([g.astype(np.int16) for g in part_grids])  # io.unpack_ragged(parts, shapes)
        io.write_npz(out / "parts.npz", names=np.array(fg.names), parts=flat, shapes=shapes)
        io.write_json(out / "merge.json", {**summary, "masks": records})
    print(f"{line} -> {out}")


if __name__ == "__main__":
    main()
    distributed.finish()
