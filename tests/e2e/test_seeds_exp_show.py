"""scripts/seeds.py on the real `dvc exp show --json` of a tiny DVC project in a temporary git repository, whose one
stage writes nested metrics ({"eval": {"network": {"miou": ...}}}) from `seed` and `model.k`."""
import json
import sys

import pytest
import yaml

from conftest import DVC, ROOT, run
from scripts import seeds

pytestmark = pytest.mark.slow

STAGE = """import json, yaml
p = yaml.safe_load(open("params.yaml"))
miou = p["seed"] / 10 + p["model"]["k"] / 100
json.dump({"eval": {"network": {"miou": miou}}, "train": {"network": {"miou": 2 * miou}}, "note": "text"},
          open("metrics.json", "w"))
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    if DVC is None:
        pytest.skip("dvc is not installed (pip install -r requirements.txt)")
    d = tmp_path_factory.mktemp("seeds")
    (d / "params.yaml").write_text(yaml.safe_dump({"seed": 0, "model": {"k": 3}}))
    (d / "stage.py").write_text(STAGE)
    (d / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"run": {
        "cmd": "python stage.py", "deps": ["stage.py"], "params": ["seed", "model"],
        "metrics": [{"metrics.json": {"cache": False}}]}}}))
    run(["git", "init", "-q"], d)
    run(["dvc", "init", "-q"], d)
    run(["dvc", "repro", "-q"], d)
    run(["git", "add", "-A"], d)
    run(["git", "commit", "-qm", "seed 0, k 3"], d)
    for overrides in (["seed=1"], ["seed=2"], ["seed=1", "model.k=4"], ["seed=2", "model.k=4"], ["model.k=5"]):
        run(["dvc", "exp", "run", "-q", *[a for o in overrides for a in ("-S", o)]], d)
    run(["dvc", "exp", "run", "--queue", "-q", "-S", "seed=3"], d)  # queued, never started: params, no metrics
    return d


def test_reads_real_dvc_exp_show_and_prints_mean_and_sample_std_per_group(repo):
    """Records: workspace (a copy of the experiment applied last: seed 0, k 5), the commit (seed 0, k 3) and 5
    experiments. Groups: k 3 with seeds 0, 1, 2 (eval miou 0.03, 0.13, 0.23: mean 0.13, sample std 0.1);
    k 4 with seeds 1, 2 (0.14, 0.24: mean 0.19, sample std 0.1 / sqrt(2) = 0.0707); k 5 with seed 0 only (the
    workspace repeats it and is not counted twice) is left out. A queued experiment (seed 3, k 3) has no metrics
    yet and is no record."""
    tree = json.loads(run(["dvc", "exp", "show", "--json"], repo))
    assert '"seed": 3' in json.dumps(tree)  # dvc lists the queued experiment, with its params
    recs = seeds.records(tree)
    assert len(recs) == 7 and sum(r["workspace"] for r in recs) == 1
    commit = next(r for r in recs if r["params"] == {"seed": 0, "model.k": 3})
    assert commit["metrics"] == {("metrics.json", "eval/network/miou"): 0.03,
                                 ("metrics.json", "train/network/miou"): 0.06}  # nested, numbers only
    out = run([sys.executable, str(ROOT / "scripts" / "seeds.py")], repo)  # runs `dvc exp show --json` itself
    assert "sample standard deviation (ddof=1)" in out
    assert "### 1. model.k=3 (3 seeds: 0, 1, 2;" in out
    assert "| metrics.json | eval/network/miou | 0.1300 ± 0.1000 | 3 | 0, 1, 2 |" in out
    assert "| metrics.json | train/network/miou | 0.2600 ± 0.2000 | 3 | 0, 1, 2 |" in out
    assert "### 2. model.k=4 (2 seeds: 1, 2;" in out
    assert "| metrics.json | eval/network/miou | 0.1900 ± 0.0707 | 2 | 1, 2 |" in out
    assert "1 param set(s) with a single seed left out: model.k=5" in out
    assert "note" not in out.split("left out")[-1]  # the workspace copy has the same metrics: no note
    saved = repo / "exps.json"
    saved.write_text(json.dumps(tree))
    assert run([sys.executable, str(ROOT / "scripts" / "seeds.py"), "--json", str(saved)], repo) == out
