"""The dense CRF (pipeline/train/crf.py): snapping to colour edges, the unary-only case against its formula, worker
counts, a missing pydensecrf2, and the crf section's checks."""
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import raw_params, section
from pipeline.config import ConfigError, parse_params
from pipeline.train import crf

CFG = section("crf")  # MaskDistill's: 10 iterations, Gaussian 3 / 1, bilateral 4 / 67 / 3


def two_regions(noise: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 12x16 image, blue left of column 8 and yellow from it on, and noisy two-class probabilities whose boundary
    is at column 5 (class 1 at 0.7 from there on, 0.3 before, plus uniform noise of +-noise that flips scattered
    pixels): (image (12, 16, 3) uint8, probabilities (2, 12, 16) float32)."""
    h, w = 12, 16
    image = np.zeros((h, w, 3), np.uint8)
    image[:] = (40, 90, 200)
    image[:, 8:] = (220, 180, 30)
    p1 = np.where(np.arange(w) >= 5, 0.7, 0.3)[None].repeat(h, 0)
    p1 = np.clip(p1 + np.random.default_rng(seed).uniform(-noise, noise, (h, w)), 0.01, 0.99)
    return image, np.stack([1 - p1, p1]).astype(np.float32)


def test_the_crf_snaps_a_noisy_label_boundary_to_the_colour_edge():
    image, probs = two_regions()
    noisy = probs.argmax(0)
    want = np.zeros((12, 16), np.int64)
    want[:, 8:] = 1  # the colour edge
    assert (noisy[:, 5:8] == 1).mean() > 0.8 and (noisy != want).sum() > 40  # boundary off by 3 columns, speckled
    q = crf.dense_crf(image, probs, CFG)
    assert q.shape == probs.shape and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1, atol=1e-5)
    np.testing.assert_array_equal(q.argmax(0), want)


def test_with_both_pairwise_weights_zero_the_crf_is_the_softmax_of_the_unary():
    """No kernel: mean field returns exp(-U) normalised, U = -log(clip(p, 1e-5, 1)): p clipped and renormalised,
    whose argmax is p's."""
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4) * 0.5, (9, 11)).transpose(2, 0, 1).astype(np.float32)
    probs[0, 0, :3] = 0.0  # clipped to 1e-5
    image = rng.integers(0, 255, (9, 11, 3)).astype(np.uint8)
    q = crf.dense_crf(image, probs, section("crf", gaussian_weight=0.0, bilateral_weight=0.0))
    clipped = np.clip(probs, 1e-5, 1)
    np.testing.assert_allclose(q, clipped / clipped.sum(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(q.argmax(0), probs.argmax(0))


def test_one_and_two_workers_give_identical_bytes_in_the_input_order():
    """refine_all over images of three sizes, chunks of 2 (several pool batches): the same keys in the same order
    and byte-identical refinements with 1 and 2 worker processes, each the dense_crf of its own pair."""
    items = []
    for i in range(7):
        image, probs = two_regions(noise=0.3, seed=i)
        if i % 3 == 1:
            image, probs = image[:10], probs[:, :10]
        elif i % 3 == 2:
            image, probs = image[:, :13], probs[:, :, :13]
        items.append((f"im{i}", image, np.ascontiguousarray(probs)))
    one = list(crf.refine_all(iter(items), CFG, workers=1))
    two = list(crf.refine_all((it for it in items), CFG, workers=2, chunk=2))
    assert [k for k, _ in one] == [k for k, _ in two] == [k for k, _, _ in items]
    for (_, a), (_, b), (_, image, probs) in zip(one, two, items):
        assert a.tobytes() == b.tobytes()
        assert a.tobytes() == crf.dense_crf(image, probs, CFG).tobytes()
    assert crf.resolve_workers(0) >= 1 and crf.resolve_workers(3) == 3 and crf.resolve_workers(3, 2) == 1


def test_argmax_at_the_original_size_upsamples_the_probabilities_bilinearly():
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(3), (8, 12)).transpose(2, 0, 1).astype(np.float32)
    got = crf.argmax_at(q, (21, 30))
    want = F.interpolate(torch.from_numpy(q)[None], size=(21, 30), mode="bilinear", align_corners=False)[0].argmax(0)
    assert got.dtype == np.uint8 and got.shape == (21, 30)
    np.testing.assert_array_equal(got, want.numpy())
    np.testing.assert_array_equal(crf.argmax_at(q, (8, 12)), q.argmax(0))


def test_a_missing_pydensecrf_names_the_package_and_how_to_turn_the_crf_off(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)  # import fails as if not installed
    image, probs = two_regions()
    pattern = r"pip install pydensecrf2.*crf\.predictions: false and train\.crf_rounds: 0"
    with pytest.raises(ImportError, match=pattern):
        crf.dense_crf(image, probs, CFG)
    with pytest.raises(ImportError, match=pattern):
        crf.check_available()


@pytest.mark.parametrize("path,value,pattern", [
    ("crf.iterations", 0, r"'crf\.iterations' is 0; must be >= 1"),
    ("crf.gaussian_weight", -1.0, r"'crf\.gaussian_weight' is -1\.0; must be >= 0"),
    ("crf.bilateral_sxy", 0.0, r"'crf\.bilateral_sxy' is 0\.0; must be > 0"),
    ("crf.bilateral_srgb", "3", r"'crf\.bilateral_srgb' is '3' \(str\); must be a number > 0"),
    ("crf.predictions", "yes", r"'crf\.predictions' is 'yes' \(str\); must be true or false"),
    ("crf.workers", -1, r"'crf\.workers' is -1; must be >= 0"),
    ("train.crf_rounds", -1, r"'train\.crf_rounds' is -1; must be >= 0"),
    ("train.crf_rounds", True, r"'train\.crf_rounds' is True \(bool\); must be an integer >= 0"),
])
def test_bad_crf_settings_name_the_key_and_what_is_allowed(path, value, pattern):
    raw = raw_params()
    part, key = path.split(".")
    raw[part][key] = value
    with pytest.raises(ConfigError, match=pattern):
        parse_params(raw)
