import numpy as np

from pipeline.data import synth


def test_generation_is_reproducible_from_the_seed():
    a = synth.generate_dataset(3, 4, 64, 3)
    b = synth.generate_dataset(3, 4, 64, 3)
    c = synth.generate_dataset(4, 4, 64, 3)
    assert all(np.array_equal(x[1], y[1]) and np.array_equal(x[2], y[2]) for x, y in zip(a, b))
    assert not np.array_equal(a[0][1], c[0][1])


def test_every_image_has_objects_of_known_classes_only():
    for _, img, lab in synth.generate_dataset(0, 30, 96, 3):
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8
        assert set(np.unique(lab)) <= set(range(len(synth.CLASS_NAMES)))
        assert (lab > 0).sum() > 50 and (lab == 0).sum() > 96 * 96 * 0.3


def test_colour_alone_does_not_name_a_class():
    """Mean object hue of different classes overlaps: each class's hue range meets another's."""
    import cv2
    hues = {c: [] for c in range(1, 5)}
    for _, img, lab in synth.generate_dataset(1, 80, 96, 3):
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        for c in range(1, 5):
            if (lab == c).sum() > 100:
                bright = (lab == c) & (hsv[..., 2] > 150)
                if bright.sum() > 20:
                    hues[c].append(np.median(hsv[..., 0][bright]))
    lo = {c: np.percentile(h, 5) for c, h in hues.items()}
    hi = {c: np.percentile(h, 95) for c, h in hues.items()}
    overlaps = sum(1 for a in hues for b in hues if a < b and lo[a] < hi[b] and lo[b] < hi[a])
    assert overlaps >= 3


def test_iter_dataset_streams_the_same_scenes_one_at_a_time():
    it = synth.iter_dataset(3, 4, 64, 3)
    assert iter(it) is it  # a generator: nothing is held beyond the current scene
    for (n, img, lab), (m, img2, lab2) in zip(it, synth.generate_dataset(3, 4, 64, 3), strict=True):
        assert n == m and img.tobytes() == img2.tobytes() and lab.tobytes() == lab2.tobytes()
