"""Segmenter (pipeline/train/segmenter.py): any image in, a class map at its own size out, through the one
prediction path; every accepted form of an image gives the same map."""
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_bundle
from pipeline import Segmenter, io
from pipeline.data.datasets import resize_image
from pipeline.train import predict


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle")
    tiny_bundle(folder, image_size=32)
    return Segmenter.load(folder, device="cpu")


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random image: blocks of colour (the tiny network's classes then differ across it)."""
    small = np.random.default_rng(seed).integers(0, 256, (4, 6, 3)).astype(np.uint8)
    return np.array(Image.fromarray(small).resize((w, h), Image.BILINEAR))


def test_predict_is_the_prediction_path_on_the_prepare_stages_resize_at_the_images_own_size(seg):
    img = photo(90, 130)
    got = seg.predict(img)
    x = resize_image(img, 32, 8)
    assert x.shape == (32, 48, 3)  # short side 32, 130 * 32 / 90 = 46.2 -> 48, a multiple of the patch 8
    with torch.no_grad():
        logits = seg.model(predict.bb.normalize(predict.bb.to_tensor(x[None])))
        up = torch.nn.functional.interpolate(logits, size=(90, 130), mode="bilinear", align_corners=False)
    assert got.shape == (90, 130) and got.dtype == np.uint8
    assert np.array_equal(got, up[0].argmax(0).numpy().astype(np.uint8))
    assert len(np.unique(got)) > 1


def test_arrays_pil_images_and_files_give_the_same_map(seg, tmp_path):
    img = photo(40, 56)
    Image.fromarray(img).save(tmp_path / "a.png")
    want = seg.predict(img)
    assert np.array_equal(seg.predict(Image.fromarray(img)), want)
    assert np.array_equal(seg.predict(tmp_path / "a.png"), want)
    assert np.array_equal(seg.predict(str(tmp_path / "a.png")), want)
    assert np.array_equal(seg.predict(np.dstack([img, np.full(img.shape[:2], 7, np.uint8)])), want)  # RGBA
    grey = img[:, :, 0]
    assert np.array_equal(seg.predict(grey), seg.predict(np.dstack([grey] * 3)))


def test_bad_arrays_are_input_errors_naming_the_problem(seg):
    with pytest.raises(io.InputError, match="must be uint8"):
        seg.predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(io.InputError, match=r"got shape \(8, 8, 2\)"):
        seg.predict(np.zeros((8, 8, 2), np.uint8))


def test_predict_proba_is_a_distribution_whose_argmax_is_predict(seg):
    img = photo(36, 50, seed=1)
    p = seg.predict_proba(img)
    assert p.shape == (3, 36, 50) and p.dtype == np.float32
    assert np.allclose(p.sum(0), 1, atol=1e-5)
    assert np.array_equal(p.argmax(0).astype(np.uint8), seg.predict(img))


def test_predict_many_streams_every_image_and_names_the_unreadable_ones(seg, tmp_path):
    imgs = [photo(32 + 8 * (i % 3), 48, seed=i) for i in range(11)]
    paths = []
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    paths.insert(5, tmp_path / "missing.png")
    read = []

    def lazily():  # the generator is drawn as the chunks need it, not all at once
        for p in paths:
            read.append(p)
            yield p

    results = seg.predict_many(lazily(), batch_size=2)
    first = next(results)
    assert len(read) <= 2 * 8 + 1  # at most one chunk (CHUNK_BATCHES batches) read ahead
    results = [first, *results]
    assert sorted(map(str, (r.item for r in results))) == sorted(map(str, paths))
    bad = [r for r in results if r.error]
    assert [r.item for r in bad] == [tmp_path / "missing.png"] and "image file not found" in bad[0].error
    for r in results:
        if not r.error:
            assert np.array_equal(r.classes, seg.predict(r.item))


def test_the_crf_refines_the_network_softmax_and_keeps_the_size(seg):
    pytest.importorskip("pydensecrf.densecrf")
    img = photo(40, 60, seed=3)
    refined = seg.predict(img, crf=True)
    assert refined.shape == (40, 60)
    many = [r.classes for r in seg.predict_many([img, img], crf=True)]
    assert all(np.array_equal(m, refined) for m in many)
