"""scripts/ablation.py: param merging, row folders, and the table printed from records (mean ± sample std over
seeds)."""
import json

import numpy as np

from scripts import ablation


def test_merge_updates_nested_keys_without_touching_inputs():
    base = {"seed": 0, "train": {"epochs": 12, "lr": 0.001}, "sources": ["saliency"]}
    over = {"train": {"crf_rounds": 1, "lr": 0.01}, "sources": ["motion"]}
    out = ablation.merge(base, over)
    assert out == {"seed": 0, "train": {"epochs": 12, "lr": 0.01, "crf_rounds": 1}, "sources": ["motion"]}
    assert base == {"seed": 0, "train": {"epochs": 12, "lr": 0.001}, "sources": ["saliency"]}


def test_slug_names_row_folders():
    assert ablation.slug("+ CRF round") == "crf_round"
    assert ablation.slug("all together") == "all_together"
    assert len({ablation.slug(r) for r in ablation.ABLATIONS["issue17"]}) == len(ablation.ABLATIONS["issue17"])


def test_set_overrides_give_the_shared_root_relative_to_the_clone(tmp_path, monkeypatch):
    shared = tmp_path / "shared" / "data" / "weizmann_horse"
    monkeypatch.setitem(ablation.SETS, "weizmann_horse", {"data": {"root": str(shared), "num_classes": 2}})
    over = ablation.set_overrides("weizmann_horse", tmp_path / "weizmann_horse")
    assert over == {"data": {"root": "../shared/data/weizmann_horse", "num_classes": 2}}
    assert ablation.SETS["weizmann_horse"]["data"]["root"] == str(shared)  # the table itself is untouched
    assert ablation.set_overrides("weizmann_horse", tmp_path / "abl" / "x")["data"]["root"] == \
        "../../shared/data/weizmann_horse"
    assert ablation.set_overrides("default", tmp_path) == {}


def test_table_gives_mean_and_sample_std_per_row(tmp_path, monkeypatch):
    monkeypatch.setattr(ablation, "OUT", tmp_path)
    nets = {"today": [0.30, 0.40, 0.50], "+ distill": [0.6, 0.7]}
    for row, values in nets.items():
        over = ablation.ABLATIONS["issue17"][row][0]
        for seed, v in enumerate(values):
            rec = {"row": row, "seed": seed, "overrides": over,
                   "stage_seconds": {"proposals": 10.0 + seed, "distill": 30.0},
                   "metrics": {"eval": {"network": {"miou": v}, "network + CRF": {"miou": v + 0.01}},
                               "train": {"pseudolabels": {"miou": v / 2}},
                               "proposals_fg_iou": 0.8, "proposals_mask_ap50": 0.25, "distill_mask_ap50": 0.5}}
            f = tmp_path / "issue17" / "default" / ablation.slug(row) / f"seed_{seed}.json"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(rec))
    text = ablation.table("issue17")
    today = next(line for line in text.splitlines() if line.startswith("| today |"))
    std = np.std([0.3, 0.4, 0.5], ddof=1)
    assert today == f"| today | 0.400 ± {std:.3f} | 0.200 ± {std / 2:.3f} | 0.800 ± 0.000 | 0.250 ± 0.000 | " \
                    f"11 ± 1 (proposals) | 0, 1, 2 |"
    distill = next(line for line in text.splitlines() if line.startswith("| + distill |"))
    assert distill == "| + distill | 0.650 ± 0.071 | 0.325 ± 0.035 | – | 0.500 ± 0.000 | 30 ± 0 (distill) | 0, 1 |"


def test_a_table_of_k_auto_rows_gives_each_seeds_k(tmp_path, monkeypatch):
    monkeypatch.setattr(ablation, "OUT", tmp_path)
    for seed, (v, k) in enumerate([(0.4, 3), (0.5, 5)]):
        rec = {"row": "k auto", "seed": seed, "overrides": {"cluster": {"k": "auto"}},
               "stage_seconds": {"cluster": 4.0}, "metrics": {"eval": {"network": {"miou": v}}, "cluster_k": k}}
        f = tmp_path / "issue18" / "default" / "k_auto" / f"seed_{seed}.json"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(rec))
    text = ablation.table("issue18")
    assert "| changed stages' time (s) | k | seeds |" in text
    line = next(line for line in text.splitlines() if line.startswith("| k auto |"))
    assert line == "| k auto | 0.450 ± 0.071 | – | – | – | 4 ± 0 (cluster) | 3, 5 | 0, 1 |"
