"""Stage train: the segmentation network on the merged pseudo-labels (255 ignored) of the training split
(manifest `names`, prepared size; crops of data.image_size), train.rounds self-training rounds (relabelling the
training split), then predict every image of both splits (`names` + `eval_names`): logits upsampled bilinearly
to the image's ORIGINAL size (manifest `sizes`), argmax -> predictions/labels/<name>.png and overlays at that
size (rounds > 1: also predictions/round_<r>/). train.crf_rounds: after those rounds, retrain from the initial
weights on the training split relabelled by the dense CRF (pipeline/train/crf.py) of the last network's predictions,
once per CRF round (its predictions are rounds too). crf.predictions: the final network's predictions refined by the
dense CRF on the prepared image, upsampled to the original size -> predictions/crf/ ("network + CRF" in evaluate).
Resumes from data/10_train/checkpoints/ when a run was interrupted.

Streaming: images and labels are read from disk by the training Dataset (train.workers DataLoader workers), each
round's relabelled maps go to data/10_train/checkpoints/rounds/ (removed with the checkpoint at the end), and the
predictions are written batch by batch: memory does not grow with the number of images.

With train.gpus > 1 (or auto and several GPUs) the stage re-launches itself under torchrun, one process per
GPU; started by torchrun itself (several nodes) it joins the given process group. Rank 0 alone writes, but the
predictions, which every process writes for its share of the images.
"""
import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from pipeline import io
from pipeline.backbone import factory as bb
from pipeline.config import load_params
from pipeline.train import checkpoint, crf, segnet


def processes(gpus: int | str) -> int:
    """train.gpus -> how many processes to run (auto: one per visible GPU, at least one)."""
    return max(torch.cuda.device_count(), 1) if gpus == "auto" else int(gpus)


def main() -> None:
    p = load_params()
    if p.crf.predictions or p.train.crf_rounds:
        crf.check_available()  # before any training: pydensecrf2 installed, or a clear error
    n = processes(p.train.gpus)
    if n > 1 and "LOCAL_RANK" not in os.environ:  # not yet under torchrun: start it, one process per GPU
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", "stages.train"]
        print("train:", " ".join(cmd), flush=True)
        sys.exit(subprocess.call(cmd))
    device = bb.pick_device(p.train.device)
    if "LOCAL_RANK" in os.environ:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world_size = segnet.world()
    main_rank = rank == 0
    out = Path(p.paths.train)
    if p.train.threads:
        torch.set_num_threads(p.train.threads)
    manifest = io.read_manifest(p.paths.prepare)
    names = manifest["names"]
    images = io.LazyImages(p.paths.prepare, names)  # read on access; the prepared size may differ between images
    labels = io.LazyLabels(Path(p.paths.merge) / "labels", names)
    classes = io.cluster_k(p.paths.cluster) + 1  # the cluster stage's k (cluster.k, or the one chosen by auto)
    torch.manual_seed(p.seed)
    model = segnet.build_model(p.train, classes, manifest["image_size"],
                               lambda: bb.from_stage(p.backbone, Path(p.paths.pretrain) / "backbone.pth",
                                                     manifest["image_size"]))
    # Settings that change speed but not the result may differ between a run and its resumption.
    result_cfg = {k: v for k, v in p.train.model_dump().items()
                  if k not in ("device", "threads", "gpus", "workers", "checkpoint_every")}
    crf_cfg = {k: v for k, v in p.crf.model_dump().items() if k not in ("predictions", "workers")}
    key = checkpoint.fingerprint({"train": result_cfg, "seed": p.seed, "classes": classes,
                                  "round_maps": "on disk",  # not a checkpoint holding the maps (older layout)
                                  **({"crf": crf_cfg} if p.train.crf_rounds else {})}, [images, labels], model)
    ckpt = out / "checkpoints" / "last.pt"
    maps_dir = out / "checkpoints" / "rounds"  # the rounds' relabelled maps, kept with the checkpoint
    resume, why = checkpoint.load(ckpt, key)
    if resume and resume["rounds"] and not segnet.maps_complete(maps_dir, len(resume["rounds"]), len(names)):
        resume, why = None, f"checkpoint {ckpt} without its rounds' maps in {maps_dir}"
    steps_per_round = [len(rd["images"]) // min(p.train.batch_size, len(rd["images"])) * rd["epochs"]
                       for rd in segnet.round_plan(p.train, labels)]
    offset = sum(steps_per_round[:resume["round"]]) + resume["fit"]["step"] if resume else 0
    if main_rank:
        print(f"train: {why}" + (f" at round {resume['round'] + 1}, step {offset}" if resume else ""), flush=True)
        if resume:
            checkpoint.truncate_live(out / "live", offset)

    from dvclive import Live
    live = Live(str(out / "live"), dvcyaml=False, save_dvc_exp=False, report=None, resume=resume is not None) \
        if main_rank else None
    if live is not None:
        live.step = offset

    def log(rec: dict) -> None:
        if live is None:
            return
        for k in ("loss", "lr", "images_per_second"):
            live.log_metric(f"train/{k}", rec[k])
        live.next_step()
        if rec["step"] % 10 == 0:
            print(f"train round {rec['round']} epoch {rec['epoch']} step {rec['step']}: loss {rec['loss']:.4f} "
                  f"({rec['images_per_second']:.1f} img/s)", flush=True)

    def save(state: dict) -> None:
        if main_rank:
            checkpoint.save(ckpt, state, key)

    tick = time.perf_counter()
    rounds = segnet.self_train(model, images, labels, p.train, p.seed, device, resume=resume, on_step=log, save=save,
                               crop_size=manifest["image_size"], refine=refiner(p), maps_dir=maps_dir)
    fit_s = time.perf_counter() - tick
    if main_rank:
        for rd in rounds:
            live.log_metric(f"round_{rd['round']}/relabel_kept", rd["kept"], plot=False)
            live.log_metric(f"round_{rd['round']}/final_loss", rd["history"][-1]["loss"] if rd["history"] else 0.0,
                            plot=False)
        live.end()
        with io.atomic_open(out / "model.pt") as f:
            torch.save({"state_dict": model.state_dict(), "num_classes": classes}, f)
        io.write_json(out / "history.json", [{**e, "round": rd["round"]} for rd in rounds
                                             for e in segnet.epoch_summary(rd["history"])])
    tick = time.perf_counter()
    n_written = write_predictions(p, manifest, model, rounds, images, device, out / "predictions")
    predict_s = time.perf_counter() - tick
    if world_size > 1:
        dist.barrier()  # every process has written its share of the predictions
    if main_rank:
        ckpt.unlink(missing_ok=True)  # finished: the outputs above are the result
        shutil.rmtree(maps_dir, ignore_errors=True)
        final = rounds[-1]["history"][-1]["loss"] if rounds[-1]["history"] else float("nan")
        print(f"train: {len(rounds)} round(s) on {device} x{world_size}, final loss {final:.4f}, "
              f"{n_written} predictions (both splits, original size) per round -> {out}")
        # read by benchmarks/bench.py: the projections scale fitting with epochs and images, predicting with images
        print(f"train: timing: fit {fit_s:.1f} s, predictions {predict_s:.1f} s", flush=True)
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()


def refiner(p) -> segnet.Refiner:
    """The dense CRF with the crf section's settings over crf.workers processes (0: every core, shared between the
    training processes of this node)."""
    workers = crf.resolve_workers(p.crf.workers, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    return functools.partial(crf.refine_all, cfg=p.crf, workers=workers)


def write_predictions(p, manifest: dict, model: torch.nn.Module, rounds: list[dict], images: Sequence,
                      device: torch.device, folder: Path) -> int:
    """Every round's network predicts every image of both splits (this process: its contiguous share of each split,
    so several processes share the work): logits upsampled to the original size, argmax -> folder/labels/<name>.png
    and overlays (the prepared image resized to that size) for the last round, and with several rounds also
    folder/round_<r>/. crf.predictions: the last round's softmax at the prepared size refined by the dense CRF on
    the prepared image, upsampled to the original size, argmax -> folder/crf/ (labels and overlays; from the same
    forward pass). images: the training split's, in memory or read on access (io.LazyImages); the evaluation
    split's are read on access. One batch in memory at a time (and the CRF's chunk). -> the number of images of both
    splits.
    The model ends with the last round's weights."""
    rank, world_size = segnet.world()
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    splits = [(manifest["names"], images), (io.eval_names(manifest), None)]
    todo = []  # (names, images) of this process's share of each split
    for split_names, split_images in splits:
        share = -(-len(split_names) // world_size)
        mine = split_names[rank * share:(rank + 1) * share]
        if split_images is None:
            todo.append((mine, io.LazyImages(p.paths.prepare, mine)))
        else:
            todo.append((mine, split_images[rank * share:(rank + 1) * share]))
    sizes = io.original_sizes(p.paths.prepare, manifest, [n for mine, _ in todo for n in mine])
    refine = refiner(p) if p.crf.predictions else None
    for rd in rounds:
        folders = ([folder / f"round_{rd['round']}"] if len(rounds) > 1 else []) + ([folder] if rd is rounds[-1] else [])
        with_crf = refine is not None and rd is rounds[-1]
        model.load_state_dict(rd.get("weights", final))
        tick = time.time()
        for mine, imgs in todo:
            out = segnet.iter_predictions(model, imgs, p.train.batch_size, device, p.train.amp,
                                          sizes=[sizes[n] for n in mine], with_probs=with_crf)
            items = write_network_maps(out, mine, imgs, folders)
            if not with_crf:
                for _ in items:  # writes the network's maps; yields nothing without the probabilities
                    pass
                continue
            for i, q in refine(items):
                io.write_maps(folder / "crf", [mine[i]], [crf.argmax_at(q, sizes[mine[i]])], [imgs[i]])
        if with_crf:
            print(f"train: network + dense CRF on {sum(len(m) for m, _ in todo)} images in {time.time() - tick:.1f} s",
                  flush=True)
    model.load_state_dict(final)
    return sum(len(n) for n, _ in splits)


def write_network_maps(out, mine: list[str], imgs: list, folders: list[Path]):
    """iter_predictions' tuples -> each image's class map written to every folder of `folders`; yields
    (index, image, softmax (C, h, w) numpy at the prepared size) for the CRF where the tuples carry probabilities."""
    for i, pred, _, *probs in out:
        image = imgs[i]  # read once (imgs may read it from disk)
        for f in folders:
            io.write_maps(f, [mine[i]], [pred.cpu().numpy()], [image])
        if probs:
            yield i, image, probs[0].cpu().numpy()


if __name__ == "__main__":
    main()
