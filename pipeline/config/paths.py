"""Where each stage writes: the structure of the DAG, the folders of dvc.yaml's outs (tests/test_config.py checks
that they agree); not a tuning knob, so not in params.yaml."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Paths:
    """One folder per stage, under data/ in the DAG's order."""
    prepare: str = "data/01_prepare"; pretrain: str = "data/02_pretrain"; features: str = "data/03_features"
    saliency: str = "data/03_saliency"  # beside features: both read the prepared images, both feed proposals
    proposals: str = "data/04_proposals"; distill: str = "data/05_distill"; cluster: str = "data/06_cluster"
    pseudolabels: str = "data/07_pseudolabels"
    filter: str = "data/08_filter"; merge: str = "data/09_merge"; train: str = "data/10_train"
    evaluate: str = "data/11_evaluate"
    bundle: str = "data/11_bundle"  # beside evaluate: the trained network with its held-out metrics, to use and share
    report: str = "data/12_report"
