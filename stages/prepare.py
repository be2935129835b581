"""Stage prepare: materialise both splits of the dataset as images/<name>.png (short side data.image_size, aspect
kept, sides multiples of the backbone's patch size), ground truth apart in gt/ at the ORIGINAL size, and a manifest:
`names` (the training split, all the label-free stages read), `eval_names` (the held-out evaluation split), `sizes`
({name: [H, W]} original), `has_labels` / `eval_has_labels` and `labelled` (the names with a usable gt/<name>.png).
Files left out (bad images under data.on_bad_image: skip, non-image files) and labels left out of evaluation (the
image is still used) are listed in skipped.csv."""
import sys
from pathlib import Path

from pipeline import io
from pipeline.backbone import vit_name
from pipeline.config import check_backbone_name, load_params
from pipeline.data import datasets, prepare


def main() -> None:
    p = load_params()
    check_backbone_name(p.backbone.name)  # the first stage: a typo in backbone.name fails before any work
    out = Path(p.paths.prepare)
    skipped: list[tuple[str, str]] = []
    patch = vit_name.patch_size(p.backbone.name, p.backbone.overrides) or 1
    parts = prepare.load_splits(p.data, p.video, p.seed, p.evaluate.split, skipped, patch)
    try:
        written = prepare.write_splits(parts, out, p.workers)
    finally:  # the report is written even when a bad file stops the stage
        io.write_csv(out / "skipped.csv", ["file", "reason"], skipped)
    if not written.names["train"]:
        raise io.InputError(f"prepare: every image was left out; see {out / 'skipped.csv'} for why")
    if p.data.name == "coco":
        io.write_json(out / prepare.GT_INSTANCES, datasets.coco_instances(p.data))
    io.write_json(out / "manifest.json", prepare.manifest(p.data, written, len(skipped)))
    if skipped:
        print(f"prepare: left out {len(skipped)} files or labels, listed with the reason in {out / 'skipped.csv'}; "
              "e.g.\n  " + "\n  ".join(f"{f}: {r}" for f, r in skipped[:3]), file=sys.stderr)
    print(f"prepare: {len(written.names['train'])} training + {len(written.names['eval'])} evaluation images -> {out}")


if __name__ == "__main__":
    main()
