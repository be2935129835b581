"""The README and docs/ stay true: the results table is the committed metrics.json's, every relative link
resolves, and the two setup commands are the ones CI and newcomers run."""
import re

import pytest

from conftest import ROOT
from scripts import results_table as script

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
SETUP = ["pip install -r requirements.txt && dvc repro", "python -m pytest -q tests"]


def prose(text: str) -> str:
    """Markdown without fenced code blocks and inline code: what a renderer turns into links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def links(text: str) -> list[str]:
    """Targets of inline links and images `[x](target)` / `![x](target)` and of reference definitions `[x]: target`."""
    text = prose(text)
    found = re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    return found + re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", text, flags=re.M)


def anchors(text: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped (hyphens and underscores kept), spaces -> '-'."""
    ids = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M), flags=re.M):
        ids.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return ids


def test_results_blocks_are_the_committed_per_seed_metrics():
    fix = "run `python scripts/results_table.py --readme`"
    assert script.readme_block(README.read_text()) == script.summary_table(), f"README.md's results differ; {fix}"
    details = script.readme_block((ROOT / "docs" / "results.md").read_text())
    assert details == script.results_table(), f"docs/results.md's results differ; {fix}"
    assert "| eval | network |" in details and "| default | " in script.summary_table()


def test_the_summary_has_one_line_per_set_with_the_eval_rows(tmp_path):
    """Two recorded seeds of one set -> its line: eval network, network + CRF and the two baselines, mean ± std."""
    import json
    folder = tmp_path / "default"
    folder.mkdir()
    names = ("network", "network + CRF", "baseline_colour_kmeans", "baseline_feature_kmeans")
    for seed, base in ((0, 0.2), (1, 0.4)):
        metrics = {"eval": {n: {"miou": base + i / 10} for i, n in enumerate(names)}, "train": {"network": {"miou": 0.9}}}
        (folder / f"seed_{seed}.json").write_text(json.dumps({"seed": seed, "data": {}, "metrics": metrics}))
    line = script.summary_table(tmp_path).splitlines()[2]
    assert line == "| default | 0.300 ± 0.141 | 0.400 ± 0.141 | 0.500 ± 0.141 | 0.600 ± 0.141 | 0, 1 |"


def _run(tmp_path, metrics: dict, seed: int, md5: str | None = None):
    """A fake run: metrics.json and the dvc.lock entries record() reads."""
    import hashlib
    import json

    import yaml
    m = tmp_path / f"metrics_{seed}.json"
    m.write_text(json.dumps(metrics))
    data = {"name": "synthetic", "synth_images": 300, "synth_eval_images": 100, "image_size": 128, "num_classes": 5}
    lock = {"stages": {"prepare": {"params": {"params.yaml": {"data": data}}},
                       "evaluate": {"params": {"params.yaml": {"seed": seed, "cluster.k": 4, "evaluate": {"match": "iou"}}},
                                    "outs": [{"path": "data/11_evaluate/metrics.json",
                                              "md5": md5 or hashlib.md5(m.read_bytes()).hexdigest()}]}}}
    lk = tmp_path / f"lock_{seed}.yaml"
    lk.write_text(yaml.safe_dump(lock))
    return lk, m


def test_recorded_seeds_give_mean_and_sample_std_per_split_and_row(tmp_path):
    for seed, net in ((0, 0.30), (1, 0.40), (2, 0.50)):
        lk, m = _run(tmp_path, {"eval": {"network": {"miou": net}}, "train": {"merge": {"miou": 0.2}}}, seed)
        script.record("default", lk, m, tmp_path / "results")
    table = script.results_table(tmp_path / "results")
    assert "| eval | network | 0.400 ± 0.100 | 3 |" in table  # sample std (ddof=1) of 0.3, 0.4, 0.5
    assert "| train | merge | 0.200 ± 0.000 | 3 |" in table and "seeds 0, 1, 2" in table
    lk, m = _run(tmp_path, {"eval": {}}, 3, md5="0" * 32)
    with pytest.raises(ValueError, match="is not the metrics.json dvc.lock records"):
        script.record("default", lk, m, tmp_path / "results")


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc):
    broken = []
    for target in links(doc.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(f"{target} (no {file})")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            broken.append(f"{target} (no heading #{anchor} in {file.name})")
    assert not broken, f"{doc.name}: broken links: {broken}"


def test_every_doc_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links(README.read_text())}
    missing = [d.name for d in DOCS if d.resolve() not in linked]
    assert DOCS and not missing, f"docs/ files not linked from README.md: {missing}"


def test_setup_commands_verbatim():
    text = README.read_text()
    block = re.search(r"^## Setup.*?^```bash\n(.*?)^```", text, flags=re.S | re.M)
    assert block, "README.md: no ```bash block under a '## Setup' heading"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == SETUP


def test_link_checker_sees_a_broken_link(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("# A title\n[ok](x.md#a-title) [bad](missing.md) [anchor](x.md#nope) `[code](ignored.md)`\n"
                   "![img](y.png) [web](https://example.org)\n```\n[fenced](ignored.md)\n```\n")
    assert links(doc.read_text()) == ["x.md#a-title", "missing.md", "x.md#nope", "y.png", "https://example.org"]
    assert "a-title" in anchors(doc.read_text())


def test_documented_presets_are_valid_params():
    """Every `dvc exp run -S ...` command in docs/training.md, applied to params.yaml, validates (a renamed key or a
    bad value in a documented preset fails here, not on the user's GPU machine)."""
    import shlex

    import yaml

    from pipeline.config import apply_sets, parse_params

    text = (ROOT / "docs" / "training.md").read_text()
    commands = [c for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
                for c in block.replace("\\\n", " ").splitlines() if c.startswith("dvc exp run")]
    assert len(commands) >= 2
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for command in commands:
        words = shlex.split(command)
        sets = [words[i + 1] for i, w in enumerate(words) if w == "-S"]
        assert len(sets) >= 10
        p = parse_params(apply_sets(raw, sets))
        assert p.data.name == "voc2012" and p.cluster.k == 20 and p.backbone.overrides == {}


def test_the_readme_is_a_product_page():
    """At most 120 lines, and nothing that reads like a lab notebook: no issue numbers, no "today"."""
    text = README.read_text()
    assert len(text.splitlines()) <= 120
    assert not re.search(r"\bissues? ?#?\d+|\btoday\b|\bformer\b", text, flags=re.I)
