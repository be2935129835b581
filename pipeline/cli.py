"""The command line, `unseg` (or `python -m pipeline`): predict with a trained bundle, export it, inspect a run.

    unseg predict MODEL IMAGES... OUT   class maps of any images (folders, nested folders or files)
    unseg export MODEL --format onnx|torchscript OUT
    unseg inspect IMAGE_NAME            an image's journey through the stages of the run in this folder

Exit status: 0 done; 1 predict finished but skipped files (OUT/skipped.csv says why); 2 nothing could run (a bad
model, names file or argument: the message says which).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from pipeline import io
from pipeline.config import ConfigError
from pipeline.train.bundle import BundleError

DONE, SKIPPED, FAILED = 0, 1, 2


def image_files(inputs: Iterable[str]) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """Folders (searched recursively for IMAGE_EXTS files, sorted) and files -> ([(file, name)], [(input, reason)]):
    a file's name is its path under the folder given, without the suffix (its stem for a file given), and its
    outputs are OUT/labels/<name>.png and OUT/overlays/<name>.jpg; a missing input or a second file of one name
    (a.jpg beside a.png) is left out with its reason."""
    found, skipped, seen = [], [], {}
    for given in map(Path, inputs):
        if given.is_dir():
            files = sorted(p for p in given.rglob("*") if p.is_file() and p.suffix.lower() in io.IMAGE_EXTS)
            pairs = [(p, p.relative_to(given).with_suffix("").as_posix()) for p in files]
        elif given.is_file():
            pairs = [(given, given.stem)]
        else:
            skipped.append((str(given), f"{given}: no such file or folder"))
            continue
        for path, name in pairs:
            if name in seen:
                skipped.append((str(path), f"{path}: its output name {name!r} is {seen[name]}'s already (rename one)"))
                continue
            seen[name] = path
            found.append((path, name))
    return found, skipped


def done(out: Path, name: str, overlays: bool) -> bool:
    """True when an earlier run wrote this image's outputs (writes are atomic: a file present is complete)."""
    return (out / "labels" / f"{name}.png").is_file() and (not overlays or (out / "overlays" / f"{name}.jpg").is_file())


def predict_cmd(args: argparse.Namespace) -> int:
    """unseg predict: see `parser`."""
    from pipeline.train.segmenter import Segmenter

    seg = Segmenter.load(args.model, device=args.device, names=args.names)
    out = Path(args.out)
    io.write_json(out / "classes.json", {str(i): n for i, n in sorted(seg.names.items())})  # what each id is
    todo, skipped = image_files(args.images)
    kept = 0 if args.force else sum(done(out, n, args.overlays) for _, n in todo)
    if not args.force:
        todo = [(p, n) for p, n in todo if not done(out, n, args.overlays)]
    pending: dict[Path, str] = {}

    def items() -> Iterator[Path]:  # names of the files read but not yet written: a chunk's worth
        for path, name in todo:
            pending[path] = name
            yield path

    bar, written = tqdm(total=len(todo), unit="image", desc="predict", disable=args.quiet), 0
    try:
        for r in seg.predict_many(items(), batch_size=args.batch_size, crf=args.crf):
            name = pending.pop(r.item)
            if r.error is not None:
                skipped.append((str(r.item), r.error))
            elif args.overlays:
                io.write_maps(out, [name], [r.classes], [r.image])
            else:
                io.write_label(out / "labels" / f"{name}.png", r.classes)
            written += r.error is None
            bar.update()
    finally:  # also when interrupted: what was written stays, a rerun goes on from there
        bar.close()
        io.write_csv(out / "skipped.csv", ["file", "reason"], skipped)
    print(f"predict: {written} image(s) -> {out / 'labels'}, {kept} kept from an earlier run, "
          f"{len(skipped)} skipped" + (f" (see {out / 'skipped.csv'})" if skipped else ""), file=sys.stderr)
    return SKIPPED if skipped else DONE


def export_cmd(args: argparse.Namespace) -> int:
    """unseg export: see `parser`."""
    from pipeline.train import bundle, export

    model, cfg, _ = bundle.load(args.model)
    h, w = args.height or cfg.image_size, args.width or cfg.image_size
    if h % cfg.patch_size or w % cfg.patch_size:
        raise BundleError(f"--height {h} / --width {w}: must be multiples of the patch size {cfg.patch_size}")
    path = export.export(model, args.format, args.out, h, w)
    sizes = f"{h}x{w} inputs" if export.fixed_size(model) else "any input size"
    print(f"export: {args.format} for (B, 3, H, W) RGB in [0, 1] ({sizes}) -> {path}", file=sys.stderr)
    return DONE


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="unseg", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    sub = ap.add_subparsers(dest="command", required=True, metavar="{predict,export,inspect}")
    p = sub.add_parser("predict", help="class maps of images with a trained bundle",
                       description="Class maps of images: palette PNGs named like the images, at each image's own "
                                   "size, in OUT/labels/, overlays in OUT/overlays/; unreadable files are listed in "
                                   "OUT/skipped.csv with the reason and the run goes on (exit status 1). Images "
                                   "already predicted in OUT are kept (a rerun resumes) unless --force.")
    p.add_argument("model", metavar="MODEL", help="a bundle folder (the bundle stage's data/11_bundle)")
    p.add_argument("images", nargs="+", metavar="IMAGES",
                   help=f"image folders (searched recursively) or files; suffixes {' '.join(io.IMAGE_EXTS)}")
    p.add_argument("out", metavar="OUT", help="output folder")
    p.add_argument("--crf", action="store_true", help="refine with the dense CRF (the bundle's crf settings; needs "
                                                       "pydensecrf2)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto (CUDA when present, bf16 autocast there), cpu or cuda; default auto")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="images of one prepared size per forward pass (default: the train stage's)")
    p.add_argument("--overlays", action=argparse.BooleanOptionalAction, default=True,
                   help="also draw each map on its image in OUT/overlays/ (default on)")
    p.add_argument("--names", default=None, metavar="names.yaml",
                   help="class names, one 'id: name' a line (any subset of the ids), over the bundle's classes.json; "
                        "OUT/classes.json lists the names used")
    p.add_argument("--force", action="store_true", help="predict again images whose outputs exist")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=predict_cmd)
    e = sub.add_parser("export", help="the network as ONNX or TorchScript",
                       description="The network as one file: input (B, 3, H, W) RGB in [0, 1] at the network's "
                                   "input size, output logits (B, C, H, W). A ViT network is exported for one size "
                                   "(--height x --width; resize the images to it), a CNN for any size.")
    e.add_argument("model", metavar="MODEL", help="a bundle folder")
    e.add_argument("--format", choices=["onnx", "torchscript"], required=True,
                   help="onnx (opset 17, onnxruntime and others) or torchscript (torch.jit.load)")
    e.add_argument("out", metavar="OUT", help="the file to write, e.g. model.onnx")
    e.add_argument("--height", type=int, default=0, help="input height, a multiple of the patch size (default: the "
                                                         "bundle's image_size)")
    e.add_argument("--width", type=int, default=0, help="input width (default: the bundle's image_size)")
    e.set_defaults(run=export_cmd)
    sub.add_parser("inspect", add_help=False, help="an image's journey through the stages (unseg inspect --help)")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["inspect"]:
        from pipeline.report import inspect
        return inspect.main(argv[1:], prog="unseg inspect")
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except (BundleError, ConfigError, io.InputError, ImportError) as e:
        print(f"unseg {args.command}: {e}", file=sys.stderr)
        return FAILED
