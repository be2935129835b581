"""docs/using.md's examples run as written: the Python API on a bundle in data/11_bundle, and the ONNX
wrapper on an exported model."""
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, tiny_bundle
from pipeline import cli

DOC = (ROOT / "docs" / "using.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", DOC, flags=re.S | re.M)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder with a bundle at data/11_bundle and a photo.jpg, as the examples expect."""
    tiny_bundle(tmp_path / "data" / "11_bundle", image_size=32)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (45, 70, 3)).astype(np.uint8)).save(tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_python_example_runs(project, capsys):
    exec(compile(python_blocks()[0], "docs/using.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("(45, 70) ")
    assert sorted(out[1:]) == ["missing.jpg missing.jpg: image file not found", "photo.jpg (45, 70)"]


def test_the_onnx_wrapper_runs_on_an_exported_model(project):
    pytest.importorskip("onnxruntime")
    assert cli.main(["export", "data/11_bundle", "--format", "onnx", "model.onnx"]) == cli.DONE
    scope: dict = {}
    exec(compile(python_blocks()[1], "docs/using.md", "exec"), scope)
    assert tuple(scope["labels"].shape) == (45, 70)
