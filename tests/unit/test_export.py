"""Export (pipeline/train/export.py): ONNX (onnxruntime on the CPU) and TorchScript give the eager network's logits
within 1e-3 and its argmax on at least 99.9 % of pixels, on non-square images; a ViT at its one exported size, a CNN
at any size."""
import numpy as np
import pytest
import torch

from conftest import tiny_bundle
from pipeline import cli
from pipeline.backbone import factory as bb
from pipeline.train import export
from pipeline.train.models import SegNet

ort = pytest.importorskip("onnxruntime")


def runtimes(path_onnx, path_ts):
    session = ort.InferenceSession(str(path_onnx), providers=["CPUExecutionProvider"])
    script = torch.jit.load(str(path_ts))
    return {"onnx": lambda x: session.run(None, {"images": x.numpy()})[0],
            "torchscript": lambda x: script(x).detach().numpy()}


def assert_parity(model, run, x):
    with torch.no_grad():
        eager = model(bb.normalize(x)).numpy()
    got = run(x)
    assert got.shape == eager.shape
    assert np.abs(got - eager).max() <= 1e-3
    assert (got.argmax(1) == eager.argmax(1)).mean() >= 0.999


def test_a_vit_network_exports_at_a_non_square_size_with_the_eager_logits(tmp_path):
    model, cfg = tiny_bundle(tmp_path / "bundle", num_classes=4)
    assert export.fixed_size(model)
    for fmt in ("onnx", "torchscript"):  # through the command line, as a user exports it
        assert cli.main(["export", str(tmp_path / "bundle"), "--format", fmt, str(tmp_path / f"m.{fmt}"),
                         "--height", "40", "--width", "64"]) == cli.DONE
    x = torch.rand(3, 3, 40, 64, generator=torch.Generator().manual_seed(1))
    for name, run in runtimes(tmp_path / "m.onnx", tmp_path / "m.torchscript").items():
        assert_parity(model, run, x)
    assert model.backbone.patch_embed.grid_size == (4, 4)  # the bundle's network is left as it was


def test_a_cnn_network_exports_with_dynamic_height_and_width(tmp_path):
    torch.manual_seed(0)
    model = SegNet(bb.create_dense("resnet18", 32), 3, 8, "fused", 8, 4).eval()
    assert not export.fixed_size(model)
    export.export(model, "onnx", tmp_path / "m.onnx", 64, 96)
    export.export(model, "torchscript", tmp_path / "m.torchscript", 64, 96)
    for size in ((64, 96), (96, 160)):
        x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(2))
        for name, run in runtimes(tmp_path / "m.onnx", tmp_path / "m.torchscript").items():
            assert_parity(model, run, x)


def test_export_rejects_a_size_that_is_not_a_multiple_of_the_patch(tmp_path, capsys):
    tiny_bundle(tmp_path / "bundle")
    assert cli.main(["export", str(tmp_path / "bundle"), "--format", "onnx", str(tmp_path / "m.onnx"),
                     "--height", "36"]) == cli.FAILED
    assert "must be multiples of the patch size 8" in capsys.readouterr().err
