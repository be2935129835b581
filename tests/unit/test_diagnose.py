"""The ceiling diagnostics' pure parts (scripts/diagnose.py); the commands themselves run in test_e2e on
the tiny project."""
import numpy as np

from scripts import diagnose


def test_class_mixture_is_each_patchs_share_of_valid_pixels():
    gt = np.array([[0, 0, 1, 1],
                   [0, 1, 1, 1],
                   [2, 255, 255, 255],
                   [2, 2, 255, 255]], np.uint8)
    mix = diagnose.class_mixture(gt, (2, 2), 3)
    assert mix.shape == (2, 2, 3) and mix.dtype == np.float32
    np.testing.assert_array_equal(mix[0, 0], [0.75, 0.25, 0])
    np.testing.assert_array_equal(mix[0, 1], [0, 1, 0])
    np.testing.assert_array_equal(mix[1, 0], [0, 0, 1])  # 3 class-2 pixels, 1 ignored
    np.testing.assert_array_equal(mix[1, 1], [0, 0, 0])  # every pixel ignored


def test_oracle_features_are_mixtures_of_unit_class_directions_plus_noise():
    d = diagnose.class_directions(3, 16, seed=0)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1, rtol=1e-6)
    mix = np.zeros((2, 2, 3), np.float32)
    mix[0, 0] = [1, 0, 0]
    mix[1, 1] = [0.5, 0.5, 0]
    clean = diagnose.oracle_features(mix, d, 0.0, np.random.default_rng(0))
    assert clean.shape == (2, 2, 16) and clean.dtype == np.float16
    np.testing.assert_allclose(clean[0, 0], d[0], atol=1e-3)
    np.testing.assert_allclose(clean[1, 1], (d[0] + d[1]) / 2, atol=1e-3)
    assert not clean[0, 1].any()
    noisy = diagnose.oracle_features(mix, d, 0.5, np.random.default_rng(0)).astype(np.float32)
    residual = noisy - clean.astype(np.float32)
    assert 0.4 < residual.std() < 0.6 and abs(residual.mean()) < 0.15


def test_table_lists_the_three_runs():
    ceil = {"eval": {"network": {"miou": 0.9}}}
    run = {"train": {"pseudolabels": {"miou": 0.5}, "merge": {"miou": 0.4}}, "eval": {"network": {"miou": 0.45}}}
    text = diagnose.table(ceil, run, {"eval": {"network": {"miou": 0.3}}}, 0.5).splitlines()
    assert text[2:] == ["| ceiling (network on ground truth) | eval | network | 0.900 |",
                        "| oracle features (noise 0.5) | train | pseudolabels | 0.500 |",
                        "| oracle features (noise 0.5) | train | merge | 0.400 |",
                        "| oracle features (noise 0.5) | eval | network | 0.450 |",
                        "| real features | eval | network | 0.300 |"]


def test_oracle_features_at_zero_noise_group_the_patches_exactly_as_the_ground_truth():
    """Every patch of one class gets its class's unit direction, exactly: grouping the features (here by
    equality) reproduces the ground-truth grouping of the pure patches, and their cosines are the directions'."""
    rng = np.random.default_rng(3)
    patch_classes = rng.integers(0, 4, (6, 5))
    gt = np.kron(patch_classes, np.ones((8, 8), np.int64)).astype(np.uint8)  # 6x5 patches of 8x8 pixels
    mix = diagnose.class_mixture(gt, (6, 5), 4)
    directions = diagnose.class_directions(4, 32, seed=0)
    feats = diagnose.oracle_features(mix, directions, 0.0, np.random.default_rng(0)).reshape(30, 32)
    _, groups = np.unique(feats, axis=0, return_inverse=True)
    _, truth = np.unique(patch_classes.reshape(30), return_inverse=True)
    contingency = np.zeros((groups.max() + 1, truth.max() + 1), int)
    np.add.at(contingency, (groups.reshape(-1), truth), 1)
    assert (np.count_nonzero(contingency, axis=0) == 1).all() and (np.count_nonzero(contingency, axis=1) == 1).all()
    gram = feats.astype(np.float32) @ feats.astype(np.float32).T
    cls = patch_classes.reshape(30)
    np.testing.assert_allclose(gram, (directions @ directions.T)[cls][:, cls], atol=2e-3)  # float16 storage
