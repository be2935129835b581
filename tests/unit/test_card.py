"""The model card (pipeline/train/card.py): README.md and a gallery per class from the pseudo-labels."""
import numpy as np

from conftest import section, tiny_bundle
from pipeline import io
from pipeline.train import bundle, card


def test_the_card_shows_each_class_on_the_images_holding_most_of_it(tmp_path):
    model, cfg = tiny_bundle(tmp_path / "src", num_classes=3)
    images = [np.full((32, 48, 3), 10 * i, np.uint8) for i in range(6)]
    labels = [np.zeros((32, 48), np.uint8) for _ in range(6)]
    for i in range(6):
        labels[i][:, : 8 * i] = 1  # image i: 8 * i columns of class 1, the most in image 5
    labels[2][:4] = 255  # ignored pixels are in no class
    shares = card.class_shares(labels, 3)
    assert shares[5, 1] == 40 / 48 and shares[2, 0] == (28 * 32) / (32 * 48) and shares[:, 2].sum() == 0
    card.write_bundle(tmp_path / "b", model, cfg, section("data"), images, labels)
    gallery = io.read_image(tmp_path / "b" / "classes" / "1.png")
    assert gallery.shape == (card.TILE, card.GALLERY_IMAGES * 144, 3)  # 4 images of 32x48 at 96 px high
    assert not (tmp_path / "b" / "classes" / "2.png").exists()  # class 2 holds no pixel
    text = (tmp_path / "b" / "README.md").read_text()
    assert text.startswith("---\nlibrary_name: unseg\n")
    assert "| 1 | class_1 | ![class 1](classes/1.png) |" in text and "| 2 | class_2 | (no pixels) |" in text
    assert "6 training images" in text.replace("\n", " ")
    assert bundle.load(tmp_path / "b")[1] == cfg
