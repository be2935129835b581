"""Stage filter: score each mask's reliability without labels (filter.score: from the embeddings, the detector's
confidence, or both), keep the best filter.keep per class; dropped masks' pixels become ignore (255). With
cluster.mode dense there are no masks: the pseudo-labels pass on unchanged (filter.json says so)."""
from pathlib import Path

import numpy as np

from pipeline import distributed, io
from pipeline.config import load_params
from pipeline.method import filtering, labelmaps


def main() -> None:
    p = load_params()
    distributed.launch("stages.filter", p.processes, "cpu")
    out = Path(p.paths.filter)
    names = io.read_manifest(p.paths.prepare)["names"]
    if p.cluster.mode == "dense":
        labelmaps.pass_on(p.paths.pseudolabels, out, names, "filter", "cluster.mode dense has no masks to filter")
        if distributed.is_main():
            io.write_json(out / "filter.json", {"mode": "dense", "per_class": {}, "masks": []})
        return
    records = io.read_json(Path(p.paths.cluster) / "clusters.json")["masks"]
    arrays = io.read_npz(Path(p.paths.cluster) / "embeddings.npz")
    rel = filtering.reliability(arrays["embeddings"], arrays["labels"], arrays["distance"], p.filter, p.seed)
    detector = np.array([r.get("detector_score", np.nan) for r in records], np.float64)
    score = filtering.combined_score(rel["score"], detector, arrays["labels"], p.filter.score)
    keep = filtering.keep_mask(score, arrays["labels"], p.filter.keep)
    for r, k, s, c in zip(records, keep, score, rel["confidence"]):
        r.update(kept=bool(k), reliability=round(float(s), 4), confidence=None if np.isnan(c) else round(float(c), 4))
    classes = labelmaps.classes_by_image(records, [r["cluster"] + 1 if r["kept"] else io.IGNORE
                                                   for r in records])
    labelmaps.write_mask_labels(p.paths.prepare, p.paths.distill, out, names, classes, "filter", p.workers)
    per_class = {str(c + 1): {"masks": int((arrays["labels"] == c).sum()), "kept": int(keep[arrays["labels"] == c].sum())}
                 for c in range(io.cluster_k(p.paths.cluster))}
    if distributed.is_main():  # the scores above are computed alike in every process; each wrote its share of maps
        io.write_json(out / "filter.json", {"keep": p.filter.keep, "per_class": per_class, "masks": records})
    print(f"filter: kept {int(keep.sum())} of {len(keep)} masks -> {out}")


if __name__ == "__main__":
    main()
    distributed.finish()
