"""Stage cluster: embed every mask of the distill stage (cluster.embedding: its pooled patch tokens, or the backbone
on its box crop) and cluster the embeddings into cluster.k classes (auto: chosen by cluster.k_rule, written to
clusters.json as "k", which every later stage reads); each record keeps the mask's detector_score when
the distill stage gave one."""
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.config import load_params
from pipeline.method import cluster, embed


def main() -> None:
    p = load_params()
    out, c = Path(p.paths.cluster), p.cluster
    table = io.read_json(Path(p.paths.distill) / "proposals.json")
    k_given = c.k if c.k != "auto" else c.k_min + 1  # auto: k_min and one to compare
    cluster.check_enough_masks(sum(len(v) for v in table.values()), k_given)  # before any work
    records, emb = embed.token_embeddings(p.paths.features, p.paths.distill, table, c.embedding == "tokens")
    if c.embedding == "crop_cls":
        emb = embed.crop_embeddings(p.paths.prepare, p.paths.distill, Path(p.paths.pretrain) / "backbone.pth",
                                    p.backbone, c, records, p.seed)
    k, auto = c.k, {}
    if k == "auto":
        k, scores = cluster.choose_k(emb, c, p.seed)
        auto = {"k_auto": {"rule": c.k_rule, "chosen": k, "scores": {str(j): round(v, 5) for j, v in scores.items()}}}
        print(f"cluster: k auto ({c.k_rule}, {c.k_min}..{max(scores)}): {k}", flush=True)
    labels, centres, dist = cluster.cluster_embeddings(emb, c.model_copy(update={"k": k}), p.seed)
    for r, label, d in zip(records, labels, dist):
        r.update(cluster=int(label), distance=round(float(d), 5))
    io.write_npz(out / "embeddings.npz", embeddings=emb, labels=labels, centres=centres, distance=dist)
    sizes = np.bincount(labels, minlength=k).tolist()
    io.write_json(out / "clusters.json", {"k": k, **auto, "method": c.method, "sizes": sizes, "masks": records})
    io.write_image(out / "gallery.png", cluster.cluster_tiles(p.paths.prepare, p.paths.distill, records, labels, dist,
                                                              k, c.gallery_per_cluster))
    print(f"cluster: {len(records)} masks ({c.embedding}) -> {k} clusters of sizes {sizes} -> {out}")


if __name__ == "__main__":
    main()
