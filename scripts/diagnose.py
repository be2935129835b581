"""Ceiling diagnostics: how much the network and the method stages could give, read off ground truth.

An experiment runner (it starts stages as subprocesses), not part of the DAG: its numbers never feed the DAG's
outputs. Run it in a project whose `dvc repro` has run (at least prepare, pretrain and features; the real rows need
evaluate too):

    python -m scripts.diagnose ceiling                      # the network trained on the ground truth
    python -m scripts.diagnose oracle --noise 0.1           # the method stages on ground-truth features
    python -m scripts.diagnose all --noise 0.1 --out diag.json
    python -m scripts.diagnose ceiling -S train.decoder=fused -S train.epochs=40 -S seed=1

- `ceiling`: the train stage's network and recipe (params.yaml's `train` and `backbone`, the pretrain stage's
  weights, the same crops and schedule: `loop.train`) trained on the training split's ground truth (resized nearest
  to the prepared size; 255 stays ignored), scored on the held-out split at the original size. The most this
  backbone and recipe can give.
- `oracle`: a scratch copy of the project (code, params, data/01_prepare, data/02_pretrain) whose features are
  built from the ground truth: each patch's class mixture (share of each class among its non-ignored pixels) times
  fixed random unit directions, one per class, plus Gaussian noise of std `noise` per dimension (the same array
  for tokens and keys; a patch with no valid pixel gets noise only). The stages from proposals to evaluate then run
  there as they do in the DAG (`python -m stages.<name>`). The most the method stages can give with perfect
  features, and what the network makes of the label maps they produce.
One table: the ceiling, the oracle rows (training split: pseudolabels, filter, merge, network; held-out: network)
and the real rows of data/11_evaluate/metrics.json.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from pipeline import io
from pipeline.config import Params, apply_sets, load_params, parse_params
from pipeline.evaluate import metrics

ROWS = [("train", "pseudolabels"), ("train", "filter"), ("train", "merge"), ("train", "network"), ("eval", "network")]


def class_mixture(gt: np.ndarray, grid: tuple[int, int], n_classes: int) -> np.ndarray:
    """Ground truth at the prepared size (H, W) uint8 (255 ignore), the feature grid (h, w) with H = h * p and
    W = w * p -> (h, w, n_classes) float32: each patch's share of every class among its non-ignored pixels (all 0
    where every pixel is ignored)."""
    h, w = grid
    p = gt.shape[0] // h
    cells = gt.reshape(h, p, w, p).transpose(0, 2, 1, 3).reshape(h, w, p * p)
    counts = np.stack([(cells == c).sum(-1) for c in range(n_classes)], -1).astype(np.float32)
    total = counts.sum(-1, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)


def oracle_features(mixture: np.ndarray, directions: np.ndarray, noise: float, rng: np.random.Generator
                    ) -> np.ndarray:
    """(h, w, C) class mixture, (C, D) class directions -> (h, w, D) float16 features: mixture @ directions plus
    N(0, noise^2) per dimension."""
    feats = mixture @ directions
    return (feats + noise * rng.standard_normal(feats.shape)).astype(np.float16)


def class_directions(n_classes: int, dim: int, seed: int) -> np.ndarray:
    """(n_classes, dim) float32 random unit vectors (seeded): one direction per ground-truth class."""
    d = np.random.default_rng(seed).standard_normal((n_classes, dim)).astype(np.float32)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def prepared_gt(prep: Path, name: str, shape: tuple[int, int]) -> np.ndarray:
    """An image's ground truth (original size) resized nearest to its prepared (H, W)."""
    return metrics.to_size(io.read_label(prep / "gt" / f"{name}.png"), shape)


def ceiling(p: Params, device: str = "auto") -> dict:
    """Train the train stage's network on the training split's ground truth, score the held-out split ->
    {'eval': {'network': {'miou', 'pixel_acc'}}, 'train_images': N, 'eval_images': M}."""
    from pipeline.backbone import factory as bb
    from pipeline.train import loop, predict
    from pipeline.train.models import build_model

    prep = Path(p.paths.prepare)
    manifest = io.read_manifest(prep)
    labelled = set(manifest["labelled"])
    names = [n for n in manifest["names"] if n in labelled]
    held = [n for n in io.eval_names(manifest) if n in labelled]
    if not names or not held:
        raise io.InputError("ceiling needs ground truth on both splits (labels/ and an evaluation split: "
                            "data.eval_fraction, data.eval_root or data.synth_eval_images)")
    images = io.read_image_list(prep, names)
    gts = [prepared_gt(prep, n, im.shape[:2]) for n, im in zip(names, images)]
    n_gt = manifest["num_classes"]
    if p.train.threads:  # as the train stage
        torch.set_num_threads(p.train.threads)
    torch.manual_seed(p.seed)
    model = build_model(p.train, n_gt, manifest["image_size"],
                        lambda: bb.from_stage(p.backbone, Path(p.paths.pretrain) / "backbone.pth",
                                              manifest["image_size"]))
    dev = bb.pick_device(device)
    history = loop.train(model, images, gts, p.train, p.seed, dev, crop_size=manifest["image_size"])
    conf = metrics.Confusion(n_gt, n_gt)
    held_images = io.read_image_list(prep, held)
    sizes = io.original_sizes(prep, manifest, held)
    for pr in predict.predictions(model, held_images, p.train.batch_size, dev, p.train.amp,
                                  sizes=[sizes[n] for n in held]):
        conf.add(pr.classes, io.read_label(prep / "gt" / f"{held[pr.index]}.png"))
    r = conf.result(p.evaluate.match)
    return {"eval": {"network": {"miou": round(r["miou"], 4), "pixel_acc": round(r["pixel_acc"], 4)}},
            "final_loss": round(history[-1]["loss"], 4) if history else None,
            "train_images": len(names), "eval_images": len(held)}


def write_oracle_features(project: Path, noise: float, seed: int, shard_size: int) -> None:
    """`project`'s data/03_features (+ eval/) rewritten with ground-truth features (`oracle_features`): same names,
    grids, dims and shard files as the real ones; images without ground truth get noise only."""
    prep = project / "data" / "01_prepare"
    manifest = io.read_manifest(prep)
    labelled, n_gt = set(manifest["labelled"]), manifest["num_classes"]
    feats = project / "data" / "03_features"
    rng = np.random.default_rng(seed + 1)
    for folder, names in ((feats, manifest["names"]), (feats / "eval", io.eval_names(manifest))):
        real_names, grids = io.read_shards(folder, "tokens")
        grid_of = dict(zip(real_names, grids))
        dim = grids[0].shape[-1] if grids else 1
        directions = class_directions(n_gt, dim, seed)
        writer = io.ShardWriter(folder, shard_size)
        for name in names:
            h, w = grid_of[name].shape[:2]
            if name in labelled:
                image_shape = io.read_image(prep / "images" / f"{name}.png").shape[:2]
                mix = class_mixture(prepared_gt(prep, name, image_shape), (h, w), n_gt)
            else:
                mix = np.zeros((h, w, n_gt), np.float32)
            f = oracle_features(mix, directions, noise, rng)
            writer.add(name, {"tokens": f, "keys": f})
        writer.close()


def stages_between(dvc_yaml: Path, first: str, last: str) -> list[str]:
    """dvc.yaml's stage names from `first` to `last` inclusive, in file order."""
    order = list(yaml.safe_load(dvc_yaml.read_text())["stages"])
    return order[order.index(first):order.index(last) + 1]


def oracle(root: Path, workdir: Path, noise: float, seed: int, shard_size: int) -> dict:
    """Copy `root`'s code, params and prepare/pretrain outputs into `workdir`, write oracle features there and run
    proposals .. evaluate (python -m stages.<name>) -> that run's metrics.json."""
    if workdir.exists():
        shutil.rmtree(workdir)
    for name in ("pipeline", "stages", "models"):
        if (root / name).exists():
            shutil.copytree(root / name, workdir / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(root / name, workdir / name)
    for name in ("01_prepare", "02_pretrain", "03_features", "03_saliency"):  # saliency reads images, not features
        shutil.copytree(root / "data" / name, workdir / "data" / name)
    write_oracle_features(workdir, noise, seed, shard_size)
    for stage in stages_between(workdir / "dvc.yaml", "proposals", "evaluate"):
        out = subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=workdir, capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"oracle: stage {stage} failed in {workdir}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return io.read_json(workdir / "data" / "11_evaluate" / "metrics.json")


def table(ceil: dict | None, orc: dict | None, real: dict | None, noise: float | None) -> str:
    """The three runs -> one markdown table of mIoU per (run, split, label map)."""
    lines = ["| run | split | label map | mIoU |", "|---|---|---|---|"]
    if ceil is not None:
        lines.append(f"| ceiling (network on ground truth) | eval | network | {ceil['eval']['network']['miou']:.3f} |")
    for what, m in ((f"oracle features (noise {noise})", orc), ("real features", real)):
        for split, row in ROWS if m else []:
            v = m.get(split, {}).get(row, {}).get("miou")
            if v is not None:
                lines.append(f"| {what} | {split} | {row} | {v:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["ceiling", "oracle", "all"])
    ap.add_argument("--noise", type=float, default=0.1, help="oracle: feature noise std per dimension (class "
                    "directions have unit norm, so two patches of one class have a cosine of about 1 / (1 + noise^2 "
                    "D) in D dimensions: 0.34 at 0.1 and D = 192, above the proposals' tau of 0.2, so TokenCut's "
                    "graph keeps its edges; at 0.5 it is 0.02, the graph has almost none and the proposals fail "
                    "(measured on the default: mask fg IoU 0.04))")
    ap.add_argument("--workdir", type=Path, default=Path("data") / "diagnose" / "oracle",
                    help="oracle: scratch copy of the project (replaced)")
    ap.add_argument("--device", default="auto", help="ceiling: auto | cpu | cuda")
    ap.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    ap.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                    help="ceiling: params.yaml with this change (e.g. -S train.epochs=40 -S seed=1), as dvc exp run -S; "
                         "the file is not changed")
    args = ap.parse_args(argv)
    p = parse_params(apply_sets(yaml.safe_load(Path("params.yaml").read_text()), args.set)) if args.set \
        else load_params()
    root = Path.cwd()
    ceil = ceiling(p, args.device) if args.which in ("ceiling", "all") else None
    orc = oracle(root, args.workdir.resolve(), args.noise, p.seed, p.features.shard_size) \
        if args.which in ("oracle", "all") else None
    real_path = Path(p.paths.evaluate) / "metrics.json"
    real = io.read_json(real_path) if real_path.exists() else None
    print(table(ceil, orc, real, args.noise if orc else None))
    if args.out:
        io.write_json(args.out, {"ceiling": ceil, "oracle": orc, "oracle_noise": args.noise if orc else None,
                                 "real": real})


if __name__ == "__main__":
    main()
