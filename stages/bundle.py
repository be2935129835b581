"""Stage bundle: the trained network as the folder to use and share, data/11_bundle/: the train stage's bundle
(model.safetensors, config.json) with the classes named by names.yaml (classes.json) and its model card (README.md,
classes/<id>.png: card.py) holding the held-out metrics the evaluate stage measured on this network."""
from pathlib import Path

from pipeline import io
from pipeline.config import load_params
from pipeline.train import bundle, card


def main() -> None:
    p = load_params()
    model, cfg, _ = bundle.load(Path(p.paths.train) / "model")
    names = io.class_names(io.NAMES, cfg.num_classes)
    manifest = io.read_manifest(p.paths.prepare)
    images = io.LazyImages(p.paths.prepare, manifest["names"])
    labels = io.LazyLabels(Path(p.paths.merge) / "labels", manifest["names"])
    n_eval = len(set(io.eval_names(manifest)) & set(manifest["labelled"]))
    held_out = card.held_out_text(io.read_json(Path(p.paths.evaluate) / "metrics.json"), p.evaluate.match, n_eval)
    card.write_bundle(p.paths.bundle, model, cfg, names, p.data, images, labels, held_out)
    print(f"bundle: {cfg.num_classes} classes ({', '.join(names.values())}) -> {p.paths.bundle}")


if __name__ == "__main__":
    main()
