"""Stage proposals: normalized-cut object masks per image -> masks/<name>.png (0 none, i = proposal i), scores."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from pipeline import io, proposals, viz  # noqa: E402
from pipeline.config import load_params  # noqa: E402


def main() -> None:
    p = load_params()
    out = Path(p.paths.proposals)
    manifest = io.read_manifest(p.paths.prepare)
    key = "keys" if p.proposals.affinity == "keys" else "tokens"
    table, count = {}, 0
    bar = tqdm(total=len(manifest["names"]), desc="proposals", unit="img")
    for names, feats in io.iter_shards(p.paths.features, key):
        for name, f in zip(names, feats):
            image = io.read_image(Path(p.paths.prepare) / "images" / f"{name}.png")
            patch = image.shape[0] // f.shape[0]
            cands = proposals.patch_proposals(f, p.proposals)
            mask_map, kept = proposals.pixel_masks(image, cands, patch, p.proposals)
            io.write_label(out / "masks" / f"{name}.png", mask_map)
            io.write_image(out / "overlays" / f"{name}.jpg", viz.overlay(image, mask_map))
            table[name] = [{"id": i + 1, "score": round(k.score, 4), "eigenvector": k.eig,
                            "pixels": int((mask_map == i + 1).sum())} for i, k in enumerate(kept)]
            count += len(kept)
            bar.update(1)
    bar.close()
    io.write_json(out / "proposals.json", table)
    empty = sum(1 for v in table.values() if not v)
    io.write_json(out / "summary.json", {"images": len(table), "proposals": count, "images_without_proposal": empty})
    print(f"proposals: {count} masks on {len(table)} images ({empty} without any) -> {out}")


if __name__ == "__main__":
    main()
