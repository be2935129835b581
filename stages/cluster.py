"""Stage cluster: embed every mask of the distill stage (cluster.embedding: its pooled patch tokens, or the backbone
on its box crop) and cluster the embeddings into cluster.k classes (auto: chosen by cluster.k_rule, written to
clusters.json as "k", which every later stage reads); each record keeps the mask's detector_score when
the distill stage gave one."""
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.backbone import factory as bb
from pipeline.config import Params, load_params
from pipeline.method import cluster, embed, proposals
from pipeline.report import viz


def crop_embeddings(p: Params, records: list[dict]) -> np.ndarray:
    """cluster.embedding crop_cls: the stage's backbone (as the features stage loads it) on every record's mask
    crop, in record order -> (M, d) whitened, unit-norm embeddings (pipeline/method/embed.py)."""
    c = p.cluster
    size = io.read_manifest(p.paths.prepare)["image_size"]
    model = bb.from_stage(p.backbone, Path(p.paths.pretrain) / "backbone.pth", size)
    embed.check_crop_size(model, c.crop_size)
    by_image: dict[str, list[int]] = {}
    for r in records:
        by_image.setdefault(r["image"], []).append(r["mask"])
    crops = (crop for name, ids in by_image.items()
             for crop in embed.mask_crops(io.read_image(Path(p.paths.prepare) / "images" / f"{name}.png"),
                                          io.read_label(Path(p.paths.distill) / "masks" / f"{name}.png"),
                                          ids, c.crop_size, c.crop_margin, c.crop_background))
    feats = embed.crop_features(model, crops, c.crop_batch_size, bb.pick_device(c.device), c.crop_token)
    return embed.l2_normalize(embed.whiten(feats, c.whiten_dim, p.seed))


def main() -> None:
    p = load_params()
    out = Path(p.paths.cluster)
    table = io.read_json(Path(p.paths.distill) / "proposals.json")
    k_given = p.cluster.k if p.cluster.k != "auto" else p.cluster.k_min + 1  # auto: k_min and one to compare
    cluster.check_enough_masks(sum(len(v) for v in table.values()), k_given)  # before any work
    records, embs = [], []
    for names, tokens in io.iter_shards(p.paths.features, "tokens"):
        for name, tok in zip(names, tokens):
            if not table[name]:
                continue
            if p.cluster.embedding == "tokens":
                mask_map = io.read_label(Path(p.paths.distill) / "masks" / f"{name}.png")
                frac = proposals.patch_fractions(mask_map, len(table[name]), tok.shape[:2])
                embs.append(cluster.mask_embeddings(tok, frac))
            for m in table[name]:
                rec = {"image": name, "mask": m["id"]}
                if m.get("detector_score") is not None:  # distill.method maskrcnn; none: as before
                    rec["detector_score"] = m["detector_score"]
                records.append(rec)
    emb = np.concatenate(embs) if p.cluster.embedding == "tokens" else crop_embeddings(p, records)
    k, auto = p.cluster.k, {}
    if k == "auto":
        k, scores = cluster.choose_k(emb, p.cluster, p.seed)
        auto = {"k_auto": {"rule": p.cluster.k_rule, "chosen": k, "scores": {str(j): round(v, 5) for j, v in scores.items()}}}
        print(f"cluster: k auto ({p.cluster.k_rule}, {p.cluster.k_min}..{max(scores)}): {k}", flush=True)
    labels, centres, dist = cluster.cluster_embeddings(emb, p.cluster.model_copy(update={"k": k}), p.seed)
    for r, c, d in zip(records, labels, dist):
        r.update(cluster=int(c), distance=round(float(d), 5))
    io.write_npz(out / "embeddings.npz", embeddings=emb, labels=labels, centres=centres, distance=dist)
    sizes = np.bincount(labels, minlength=k).tolist()
    io.write_json(out / "clusters.json", {"k": k, **auto, "method": p.cluster.method, "sizes": sizes, "masks": records})
    tiles = []
    for c in range(k):  # one gallery row per cluster: its masks closest to the centre
        members = [i for i in np.argsort(dist) if labels[i] == c][:p.cluster.gallery_per_cluster]
        row = []
        for i in members:
            r = records[i]
            image = io.read_image(Path(p.paths.prepare) / "images" / f"{r['image']}.png")
            masks = io.read_label(Path(p.paths.distill) / "masks" / f"{r['image']}.png")
            row.append(viz.mask_tile(image, masks == r["mask"], io.palette()[c + 1], 64))
        tiles += row + [np.full((64, 64, 3), 255, np.uint8)] * (p.cluster.gallery_per_cluster - len(row))
    io.write_image(out / "gallery.png", viz.grid(tiles, p.cluster.gallery_per_cluster))
    print(f"cluster: {len(records)} masks ({p.cluster.embedding}) -> {k} clusters of sizes {sizes} -> {out}")


if __name__ == "__main__":
    main()
