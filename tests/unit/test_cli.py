"""`unseg` (pipeline/cli.py): predict writes palette PNGs named like the images at their own size, lists what it
cannot read in skipped.csv and goes on, resumes an interrupted run; export and inspect sit beside it."""
import csv
import io as pyio
import subprocess
import sys
import tomllib

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, tiny_bundle
from pipeline import Segmenter, cli, io


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle")
    tiny_bundle(folder, image_size=32)
    return folder


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    small = np.random.default_rng(seed).integers(0, 256, (4, 6, 3)).astype(np.uint8)
    return np.array(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def exif_rotated_jpeg(rgb: np.ndarray) -> bytes:
    """A JPEG of `rgb` stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = pyio.BytesIO()
    Image.fromarray(np.rot90(rgb, 1)).save(buf, "JPEG", exif=exif, quality=95)  # stored rotated counter-clockwise
    return buf.getvalue()


def bad_inputs(folder) -> dict[str, tuple[int, int] | str]:
    """A folder of awkward files -> {file name: the (H, W) its map must have, or the reason it must be skipped}."""
    (folder / "sub" / "deeper").mkdir(parents=True)
    (folder / "garbage.png").write_bytes(b"not an image at all")
    (folder / "empty.jpg").write_bytes(b"")
    Image.fromarray((np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50)).save(folder / "deep16.png")
    Image.fromarray(photo(36, 52)).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(np.dstack([photo(33, 47), np.full((33, 47), 128, np.uint8)])).save(folder / "sub" / "rgba.png")
    (folder / "sub" / "deeper" / "rotated.jpg").write_bytes(exif_rotated_jpeg(photo(40, 64)))
    Image.fromarray(photo(1, 1)).save(folder / "one.png")
    (folder / "notes.txt").write_text("not listed: not an image suffix")
    return {"garbage.png": "not a readable image", "empty.jpg": "empty file (0 bytes)", "deep16.png": (30, 40),
            "cmyk.jpg": (36, 52), "sub/rgba.png": (33, 47), "sub/deeper/rotated.jpg": (40, 64), "one.png": (1, 1)}


def test_predict_writes_each_readable_image_at_its_size_and_lists_the_rest_with_reasons(model, tmp_path):
    expect = bad_inputs(tmp_path / "in")
    rc = cli.main(["predict", str(model), str(tmp_path / "in"), str(tmp_path / "out"), "--quiet"])
    assert rc == cli.SKIPPED
    seg = Segmenter.load(model, device="cpu")
    for name, want in expect.items():
        stem = name.rsplit(".", 1)[0]
        label = tmp_path / "out" / "labels" / f"{stem}.png"
        if isinstance(want, str):
            assert not label.exists()
            continue
        got = io.read_label(label)
        assert got.shape == want, name
        assert Image.open(label).mode == "P"  # a palette PNG
        assert np.array_equal(got, seg.predict(tmp_path / "in" / name)), name
        assert io.read_image(tmp_path / "out" / "overlays" / f"{stem}.jpg").shape[:2] == want
    with open(tmp_path / "out" / "skipped.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["file"] for r in rows) == [str(tmp_path / "in" / "empty.jpg"), str(tmp_path / "in" / "garbage.png")]
    for r in rows:
        assert expect[r["file"].rsplit("/", 1)[-1]] in r["reason"]


def test_an_interrupted_run_resumes_without_redoing_done_images(model, tmp_path, monkeypatch):
    for i in range(6):
        Image.fromarray(photo(32, 40, seed=i)).save(tmp_path / f"img{i}.png")
    args = ["predict", str(model), *[str(tmp_path / f"img{i}.png") for i in range(6)], str(tmp_path / "out"),
            "--quiet", "--no-overlays", "--batch-size", "2"]
    written = []
    real_write = io.write_label

    def write_then_stop(path, label):
        if len(written) == 4:
            raise KeyboardInterrupt  # the user's Ctrl-C after 4 images
        real_write(path, label)
        written.append(path.name)

    monkeypatch.setattr(io, "write_label", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        cli.main(args)
    assert sorted(p.name for p in (tmp_path / "out" / "labels").iterdir()) == sorted(written)
    first = set(written)
    monkeypatch.setattr(io, "write_label", lambda path, label: (real_write(path, label), written.append(path.name)))
    assert cli.main(args) == cli.DONE
    assert len(written) == 6 and set(written[4:]).isdisjoint(first)  # the second run wrote only the other two
    assert not (tmp_path / "out" / "overlays").exists()
    assert cli.main(args + ["--force"]) == cli.DONE and len(written) == 12  # --force predicts all six again


def test_names_yaml_names_the_classes_of_the_outputs(model, tmp_path):
    Image.fromarray(photo(32, 32)).save(tmp_path / "a.png")
    (tmp_path / "names.yaml").write_text("2: road\n")
    assert cli.main(["predict", str(model), str(tmp_path / "a.png"), str(tmp_path / "o"), "--quiet",
                     "--names", str(tmp_path / "names.yaml")]) == cli.DONE
    assert io.read_json(tmp_path / "o" / "classes.json") == {"0": "background", "1": "class_1", "2": "road"}


def test_predict_names_a_bad_model_and_a_bad_names_file_and_exits_2(model, tmp_path, capsys):
    Image.fromarray(photo(32, 32)).save(tmp_path / "a.png")
    assert cli.main(["predict", str(tmp_path / "nope"), str(tmp_path / "a.png"), str(tmp_path / "o")]) == cli.FAILED
    assert "config.json: not found" in capsys.readouterr().err
    (tmp_path / "names.yaml").write_text("9: sky\n")
    assert cli.main(["predict", str(model), str(tmp_path / "a.png"), str(tmp_path / "o"),
                     "--names", str(tmp_path / "names.yaml")]) == cli.FAILED
    assert "class id 9 is not one of 0..2" in capsys.readouterr().err


def test_two_files_of_one_name_keep_the_first_and_list_the_second(model, tmp_path):
    Image.fromarray(photo(32, 32)).save(tmp_path / "a.png")
    Image.fromarray(photo(32, 32)).save(tmp_path / "a.jpg")
    found, skipped = cli.image_files([str(tmp_path), str(tmp_path / "missing")])
    assert found == [(tmp_path / "a.jpg", "a")]
    assert [s[0] for s in skipped] == [str(tmp_path / "a.png"), str(tmp_path / "missing")]
    assert "no such file or folder" in skipped[1][1]


def test_the_console_script_is_the_cli_and_every_help_exits_0(capsys):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"unseg": "pipeline.cli:main"}
    says = {(): "{predict,export,inspect}", ("predict",): "--device {auto,cpu,cuda}",
            ("export",): "--format {onnx,torchscript}", ("inspect",): "IMAGE_NAME"}
    for args, choices in says.items():
        with pytest.raises(SystemExit) as stop:
            cli.main([*args, "--help"])
        out = capsys.readouterr().out
        assert stop.value.code == 0 and out.startswith("usage: unseg" + "".join(f" {a}" for a in args)), out
        assert choices in out
    out = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)  # python -m pipeline: the same command line
    assert out.returncode == 0 and out.stdout.startswith("usage: unseg [-h] {predict,export,inspect}"), out.stderr


def test_a_6000x4000_photo_is_predicted_at_its_own_size(model, tmp_path, capsys):
    """As a phone takes it. Measured once, `python -m pipeline predict` of this photo with this 3-class bundle in its
    own process (OMP_NUM_THREADS=1, AMD EPYC): peak RSS 2664 MB, against 973 MB for a 40x60 photo; the difference is
    the one image at its own size (decoded RGB, the upsampled logits and their softmax, the overlay), held one image
    at a time (docs/benchmarks.md: 3 such photos with the default's 5 classes, 2923 MB)."""
    big = np.array(Image.fromarray(photo(40, 60)).resize((6000, 4000), Image.BILINEAR))
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=90)
    assert cli.main(["predict", str(model), str(tmp_path / "big.jpg"), str(tmp_path / "out"), "--quiet"]) == cli.DONE
    assert "predict: 1 image(s) ->" in capsys.readouterr().err
    label = io.read_label(tmp_path / "out" / "labels" / "big.png")
    assert label.shape == (4000, 6000) and len(np.unique(label)) > 1
