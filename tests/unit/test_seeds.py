"""scripts/seeds.py's grouping of experiment records by their params other than `seed`: one record per seed, the
mean and sample standard deviation."""
from scripts import seeds


def test_groups_keep_one_record_per_seed_and_note_a_conflicting_duplicate():
    def rec(label, seed, k, miou, workspace=False):
        return {"label": label, "workspace": workspace, "params": {"seed": seed, "model.k": k},
                "metrics": {("m.json", "eval/network/miou"): miou}}

    recs = [rec("workspace", 1, 3, 0.9, workspace=True), rec("a", 0, 3, 0.1), rec("b", 1, 3, 0.2), rec("c", 1, 3, 0.2),
            {"label": "old", "workspace": False, "params": {"model.k": 3}, "metrics": {("m.json", "x"): 1.0}}]
    groups, notes = seeds.groups(recs)
    assert len(groups) == 1 and {s: r["label"] for s, r in groups[0]["runs"].items()} == {0: "a", 1: "b"}
    assert notes == ["records without a `seed` param, left out: old",
                     "workspace repeats the params of b (seed 1) with other metrics: b kept, workspace left out"]
    assert seeds.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)  # sample std, ddof=1 (population std would be 0.816)
    assert seeds.mean_std([4.0]) == (4.0, None)
