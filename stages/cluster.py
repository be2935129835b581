"""Stage cluster: embed every mask of the distill stage (cluster.embedding: its pooled patch tokens, or the backbone
on its box crop) and cluster the embeddings into cluster.k classes (auto: chosen by cluster.k_rule, written to
clusters.json as "k", which every later stage reads); each record keeps the mask's detector_score when
the distill stage gave one. cluster.mode dense: every training patch instead (pipeline/method/dense.py) -> the
(k, h, w) class probabilities of each image in dense/ shards, clusters.json with no masks, a gallery per class."""
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.config import ClusterConfig, Params, load_params
from pipeline.method import cluster, dense, embed
from pipeline.report import viz


def main() -> None:
    p = load_params()
    out, c = Path(p.paths.cluster), p.cluster
    if c.mode == "dense":
        return dense_main(p, out, c)
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


def dense_main(p: Params, out: Path, c: ClusterConfig) -> None:
    res = dense.cluster_dense(p.paths.features, p.paths.prepare, out, c, c.k, p.seed, c.gallery_per_cluster)
    io.write_json(out / "clusters.json", {"k": c.k, "mode": "dense", "features": c.dense_features,
                                          "sizes": res.sizes, "masks": []})
    io.write_npz(out / "embeddings.npz", centres=res.centres)
    if res.losses:
        viz.save_curve(out / "stego_loss.png", res.losses, "STEGO correspondence loss", "step")
    io.write_image(out / "gallery.png", dense.class_gallery(p.paths.prepare, out, res.top_images,
                                                            c.gallery_per_cluster))
    print(f"cluster (dense, {c.dense_features}): every training patch -> {c.k} classes of sizes {res.sizes} -> {out}")


if __name__ == "__main__":
    main()
