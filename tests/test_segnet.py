import numpy as np
import torch

from pipeline import segnet
from pipeline.backbone import create_backbone
from pipeline.config import BackboneConfig, TrainConfig


def tiny_net(classes: int = 3) -> segnet.SegNet:
    torch.manual_seed(0)
    cfg = BackboneConfig(name="vit_tiny_patch16_224", source="random",
                         overrides={"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2})
    return segnet.SegNet(create_backbone(cfg, 32), classes, 16)


def test_logits_have_the_input_resolution():
    assert tiny_net()(torch.randn(2, 3, 32, 32)).shape == (2, 3, 32, 32)


def test_ignore_pixels_contribute_nothing_to_the_loss():
    logits = torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 4, 4))
    changed = target.clone()
    changed[0, :2] = 255
    other = logits.clone()
    other[0, :, :2] = torch.randn(3, 2, 4) * 10  # anything where the target is ignored
    assert torch.isclose(segnet.segmentation_loss(logits, changed), segnet.segmentation_loss(other, changed))
    assert segnet.segmentation_loss(logits, torch.full((1, 4, 4), 255)).item() == 0.0


def test_training_lowers_the_loss_on_a_tiny_batch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (4, 32, 32, 3)).astype(np.uint8)
    labels = np.zeros((4, 32, 32), np.uint8)
    labels[:, 8:24, 8:24] = 1
    images[:, 8:24, 8:24] = 250  # the class is visible
    hist = segnet.train(tiny_net(2), images, labels, TrainConfig(epochs=8, batch_size=4, lr=3e-3, crop_scale_min=1.0),
                        seed=0, device=torch.device("cpu"))
    assert hist[-1]["loss"] < hist[0]["loss"] * 0.7


def test_joint_augmentation_keeps_labels_integer_and_aligned():
    img = np.zeros((1, 32, 32, 3), np.uint8)
    img[0, :, :16] = 255
    lab = np.zeros((1, 32, 32), np.uint8)
    lab[0, :, :16] = 1
    torch.manual_seed(3)
    x, y = segnet.make_batch(img, lab, segnet.augment(32, 0.5))
    assert set(y.unique().tolist()) <= {0, 1}
    bright = x[0].mean(0) > 0.5  # normalised white vs black
    assert (bright == (y[0] == 1)).float().mean() > 0.9
