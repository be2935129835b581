"""Stage saliency: when proposals.sources includes saliency, every training image's classic saliency map (RBD and
MBD+ on superpixels, no weights: pipeline/method/saliency.py) and, with saliency.rounds > 0, the maps refined by a
network trained on them (DeepUSPS: saliency_refine.py) -> maps/<name>.png (8-bit greyscale, what proposals reads),
cues/<cue>/<name>.png, classic/ (the fused classic maps, when refined), heat/ (the maps over the images). Otherwise
it writes only summary.json saying so."""
from functools import partial
from pathlib import Path

from tqdm import tqdm

from pipeline import io, parallel
from pipeline.backbone import factory as bb
from pipeline.config import load_params
from pipeline.method import propose, saliency, saliency_refine
from pipeline.train.models import build_model


def main() -> None:
    p = load_params()
    out, manifest = Path(p.paths.saliency), io.read_manifest(p.paths.prepare)
    if "saliency" not in propose.resolve_sources(p.proposals.sources, manifest):
        io.write_json(out / "summary.json", {"images": 0, "note": "proposals.sources does not include saliency"})
        return print("saliency: not among proposals.sources; nothing to do")
    names, size, rounds = manifest["names"], manifest["image_size"], p.saliency.rounds
    work = partial(saliency.write_classic, prepare=p.paths.prepare, out=out, cfg=p.saliency,
                   fused_to="classic" if rounds else "maps")
    list(tqdm(parallel.map_images(work, names, p.workers), total=len(names), desc="saliency", unit="img"))
    images = io.LazyImages(p.paths.prepare, names)
    if rounds:
        weights, device = Path(p.paths.pretrain) / "backbone.pth", bb.pick_device(p.train.device)
        build = lambda: build_model(p.train, 2, size, lambda: bb.from_stage(p.backbone, weights, size))  # noqa: E731
        classic = [saliency.from_png(io.read_label(out / "classic" / f"{n}.png")) for n in names]
        refined = saliency_refine.refine(images, classic, p.saliency, p.train, p.crf, build, p.seed, device,
                                         on_round=lambda r, _: print(f"saliency: refinement round {r + 1} done"))
        for n, m in zip(names, refined):
            io.write_gray(out / "maps" / f"{n}.png", saliency.to_png(m))
    for i, n in enumerate(names):
        sal = saliency.from_png(io.read_label(out / "maps" / f"{n}.png"))
        io.write_image(out / "heat" / f"{n}.jpg", saliency.heat(images[i], sal))
    io.write_json(out / "summary.json", {"images": len(names), "cues": p.saliency.cues, "rounds": rounds})
    print(f"saliency: {len(names)} maps ({'+'.join(p.saliency.cues)}, {rounds} refinement rounds) -> {out}")


if __name__ == "__main__":
    main()
