"""Stage pseudolabels: dense label maps from clustered masks (background 0, a mask -> its cluster + 1); with
cluster.mode dense the cluster stage's patch probabilities upsampled to the image, refined by the dense CRF
(cluster.dense_crf, the crf section), their argmax as classes 1..k."""
from pathlib import Path

from pipeline import distributed, io
from pipeline.config import load_params
from pipeline.method import dense, labelmaps


def main() -> None:
    p = load_params()
    distributed.launch("stages.pseudolabels", p.processes, "cpu")
    names = io.read_manifest(p.paths.prepare)["names"]
    if p.cluster.mode == "dense":
        dense.write_labels(p.paths.prepare, p.paths.cluster, p.paths.pseudolabels, names,
                           p.crf if p.cluster.dense_crf else None, p.workers)
        print(f"pseudolabels (dense{', CRF' if p.cluster.dense_crf else ''}): {len(names)} label maps -> "
              f"{p.paths.pseudolabels}")
        return
    masks = io.read_json(Path(p.paths.cluster) / "clusters.json")["masks"]
    classes = labelmaps.classes_by_image(masks, [r["cluster"] + 1 for r in masks])
    labelmaps.write_mask_labels(p.paths.prepare, p.paths.distill, p.paths.pseudolabels, names, classes, "pseudolabels",
                                p.workers)
    print(f"pseudolabels: {len(names)} label maps -> {p.paths.pseudolabels}")


if __name__ == "__main__":
    main()
    distributed.finish()
