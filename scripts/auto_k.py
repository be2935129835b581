"""The k each cluster.k_rule chooses on cluster stages' embeddings, beside the true number of object classes.

    python -m scripts.auto_k default=data/06_cluster:4 horse=/tmp/abl/weizmann_horse/data/06_cluster:1

Each argument is NAME=CLUSTER_FOLDER:TRUE_K (the folder of a cluster stage run: its embeddings.npz; TRUE_K: the
dataset's object classes, ground truth's classes minus background). Rules and range from params.yaml's cluster
section (k_min, k_max, n_init) and seed; eigengap also from k 1. Prints a markdown table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import io
from pipeline.config import load_params
from pipeline.method import cluster

RULES = ("davies_bouldin", "silhouette", "eigengap")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+", help="NAME=CLUSTER_FOLDER:TRUE_K")
    args = ap.parse_args()
    p = load_params()
    print("| set | masks | true k | " + " | ".join(RULES) + " |")
    print("|---|---|---|" + "---|" * len(RULES))
    for spec in args.sets:
        name, rest = spec.split("=", 1)
        folder, true_k = rest.rsplit(":", 1)
        emb = io.read_npz(Path(folder) / "embeddings.npz")["embeddings"]
        chosen = []
        for rule in RULES:
            cfg = p.cluster.model_copy(update={"k": "auto", "k_rule": rule,
                                               "k_min": 1 if rule == "eigengap" else p.cluster.k_min})
            chosen.append(str(cluster.choose_k(emb, cfg, p.seed)[0]))
        print(f"| {name} | {len(emb)} | {true_k} | " + " | ".join(chosen) + " |")


if __name__ == "__main__":
    main()
