"""Stage proposals: object masks per image from the sources in proposals.sources (auto: by the dataset) ->
masks/<name>.png (0 none, i = proposal i), overlays, scores. ncut: normalized cut on patch features; saliency: the
salient regions of the saliency stage's maps; motion (video datasets): what moves against the camera between
neighbouring frames (residual pictures in motion/)."""
from functools import partial
from pathlib import Path

from tqdm import tqdm

from pipeline import distributed, io
from pipeline.config import load_params
from pipeline.method import propose


def main() -> None:
    p = load_params()
    distributed.launch("stages.proposals", p.processes, "cpu")
    out = Path(p.paths.proposals)
    manifest = io.read_manifest(p.paths.prepare)
    sources = propose.resolve_sources(p.proposals.sources, manifest)
    near = propose.neighbours(manifest, sources)  # before any work
    key = "keys" if p.proposals.affinity == "keys" else "tokens"
    items = ((name, f) for names, feats in io.iter_shards(p.paths.features, key) for name, f in zip(names, feats))
    work = partial(propose.propose_image, out=out, prepare=p.paths.prepare, cfg=p.proposals, motion_cfg=p.motion,
                   saliency_cfg=p.saliency, sources=sources, near=near,
                   saliency_maps=Path(p.paths.saliency) / "maps")
    table = dict(tqdm(distributed.map_images(work, items, p.workers), total=len(manifest["names"]), desc="proposals",
                      unit="img"))
    summary = propose.summary(table, sources)
    if distributed.is_main():  # every process holds the whole table; its share of the masks is written
        io.write_json(out / "proposals.json", table)
        io.write_json(out / "summary.json", summary)
        print(f"proposals: {summary['proposals']} masks ({summary['by_source']}) on {len(table)} images "
              f"({summary['images_without_proposal']} without any) -> {out}")


if __name__ == "__main__":
    main()
    distributed.finish()
