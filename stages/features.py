"""Stage features: the backbone's dense patch tokens and attention keys for every image, in float16 shards (ragged:
each image's (H/p, W/p, D) grid at its prepared size). The training split (manifest `names`) -> data/03_features,
the evaluation split (`eval_names`, used only by evaluate's feature baseline) -> data/03_features/eval."""
from pathlib import Path

from tqdm import tqdm

from pipeline import distributed, io
from pipeline.backbone import factory as bb
from pipeline.backbone import features
from pipeline.config import load_params


def main() -> None:
    p = load_params()
    device = distributed.launch("stages.features", p.processes, bb.pick_device(p.features.device))
    manifest = io.read_manifest(p.paths.prepare)
    splits = {"train": (manifest["names"], Path(p.paths.features)),
              "eval": (io.eval_names(manifest), Path(p.paths.features) / "eval")}
    model = bb.from_stage(p.backbone, Path(p.paths.pretrain) / "backbone.pth", manifest["image_size"])
    bar = tqdm(total=sum(len(n) for n, _ in splits.values()), desc="features", unit="img")
    for names, folder in splits.values():  # shards keep the manifest's order
        features.write_split(model, p.paths.prepare, names, folder, p.features, device, bar)
    bar.close()
    dtype = features.autocast_dtype(p.features.precision, device)
    print(f"features: {len(splits['train'][0])} training + {len(splits['eval'][0])} evaluation images on {device} "
          f"({'bf16 autocast' if dtype else 'fp32'}, features.precision {p.features.precision}) -> "
          f"{p.paths.features} (+ eval/)")
    if dtype is not None and device.type == "cpu" and not features.cpu_has_bf16():
        print("features: warning: this CPU has no bfloat16 instructions (avx512_bf16 / amx_bf16), so bf16 was "
              "emulated, usually slower than fp32: set features.precision: auto or fp32")


if __name__ == "__main__":
    main()
    distributed.finish()
