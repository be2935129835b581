"""scripts/ablation.py's stage-by-stage timing on a real two-stage DVC project in a temporary git repository."""
import pytest

from conftest import DVC, ENV, run
from scripts import ablation

pytestmark = pytest.mark.slow


@pytest.mark.skipif(DVC is None, reason="dvc not installed")
def test_repro_timed_times_only_the_stages_that_ran(tmp_path):
    (tmp_path / "params.yaml").write_text("a: 1\nb: 1\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  one:\n    cmd: python -c \"import yaml; open('one.txt','w').write(str(yaml.safe_load(open('params.yaml'))['a']))\"\n"
        "    params: [a]\n    outs: [one.txt]\n"
        "  two:\n    cmd: python -c \"import yaml; open('two.txt','w').write(open('one.txt').read() + "
        "str(yaml.safe_load(open('params.yaml'))['b']))\"\n    deps: [one.txt]\n    params: [b]\n    outs: [two.txt]\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        run(cmd, tmp_path)
    first = ablation.repro_timed(tmp_path, env=ENV)
    assert all(isinstance(first[s], float) for s in ("one", "two"))
    (tmp_path / "params.yaml").write_text("a: 1\nb: 2\n")
    second = ablation.repro_timed(tmp_path, env=ENV)
    assert second["one"] == "skipped" and isinstance(second["two"], float)
    assert (tmp_path / "two.txt").read_text() == "12"
    (tmp_path / "params.yaml").write_text("a: 1\nb: 1\n")  # seen before: restored from the run cache
    assert ablation.repro_timed(tmp_path, env=ENV)["two"] == "restored"
