"""Rebuild the shipped backbone models/vit_tiny_p8_synth_multitask.pth with the project's own pretrain stage.

    python scripts/rebuild_backbone.py [--epochs 80] [--threads 0] [--method multitask] [--max-minutes 0]

Runs the prepare and pretrain stages in a scratch folder with backbone.source=pretrain (params.yaml's
pretrain section: multitask for 80 epochs by default, on the synthetic default generated from params.yaml's
seed), then stores the trained backbone as float16. The shipped file came from this command on the CPU with
`--threads 6` (6.0 minutes on 6 cores of the lent GPU machine; `--device cpu` where a GPU is present); on its
H200 (`pretrain.device: auto` picks CUDA) the same recipe took 30 s.
--method / --max-minutes / --stop-after-epochs override pretrain.*, e.g.
`--method jigsaw --max-minutes 3 --stop-after-epochs 0 --out /tmp/jigsaw.pth` for a budgeted comparison.
`--method dino --device cuda` trains DINO on a GPU.
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=None, help="override pretrain.epochs (default: params.yaml's)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all)")
    ap.add_argument("--method", default=None, help="override pretrain.method (dino, deepcluster, context, jigsaw, "
                    "colorization, inpainting, multitask)")
    ap.add_argument("--max-minutes", type=float, default=None, help="override pretrain.max_minutes (wall-time budget)")
    ap.add_argument("--stop-after-epochs", type=int, default=None, help="override pretrain.stop_after_epochs (0 = off)")
    ap.add_argument("--device", default=None, help="override pretrain.device (auto, cpu, cuda)")
    ap.add_argument("--seed", type=int, default=None, help="override seed (the generated images and every random choice)")
    ap.add_argument("--out", default=None, help="where to write (default: params.yaml's backbone.weights)")
    args = ap.parse_args()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    target = Path(args.out or params["backbone"]["weights"])
    params["backbone"]["source"] = "pretrain"
    params["pretrain"]["threads"] = args.threads
    if args.epochs:
        params["pretrain"]["epochs"] = args.epochs
    for key, value in (("method", args.method), ("max_minutes", args.max_minutes),
                       ("stop_after_epochs", args.stop_after_epochs), ("device", args.device)):
        if value is not None:
            params["pretrain"][key] = value
    if args.seed is not None:
        params["seed"] = args.seed
    with tempfile.TemporaryDirectory(prefix="unseg-rebuild-") as tmp:
        work = Path(tmp)
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        for name in ("pipeline", "stages"):
            (work / name).symlink_to(ROOT / name)
        for stage in ("prepare", "pretrain"):
            subprocess.run([sys.executable, f"stages/{stage}.py"], cwd=work, check=True)
        state = torch.load(work / "data/02_pretrain/backbone.pth", map_location="cpu")
        target = target if target.is_absolute() else ROOT / target
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, target)
        shutil.copy(work / "data/02_pretrain/history.json", target.with_suffix(".history.json"))
    print(f"rebuilt {target}")


if __name__ == "__main__":
    main()
