"""Self-training: rounds that relabel the training images with the network's predictions and train again
(train.self_training continue or comus, then train.crf_rounds on dense-CRF-refined maps). Each round's relabelled
maps are kept on disk (`maps_dir`), so memory does not grow with the number of images, and a run resumed from a
checkpoint finds them there."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pipeline import io
from pipeline.config import TrainConfig
from pipeline.io import IGNORE
from pipeline.train import checkpoint
from pipeline.train.data import Take, steps_per_epoch
from pipeline.distributed import shard, world
from pipeline.train.loop import epoch_summary, fit
from pipeline.train.predict import Refiner, predictions


def relabel(pred: np.ndarray, conf: np.ndarray, threshold: float) -> np.ndarray:
    """Classes (..., H, W) uint8 and confidences (..., H, W) -> the classes where conf >= threshold, IGNORE elsewhere."""
    return np.where(conf >= threshold, pred, IGNORE).astype(np.uint8)


def core_images(labels: Sequence[np.ndarray]) -> list[int]:
    """Indices of the label maps ((H_i, W_i) uint8, 0 background, 255 ignore) holding at least one object pixel
    (a class 1..254): the images with a kept mask, COMUS's core. Every index when none holds one."""
    core = [i for i, lab in enumerate(labels) if ((lab > 0) & (lab != IGNORE)).any()]
    return core or list(range(len(labels)))


def round_plan(cfg: TrainConfig, labels: Sequence[np.ndarray]) -> list[dict]:
    """Every round of `self_train` -> {'epochs', 'images' (indices trained on), 'fresh' (starts from the initial
    weights with a fresh optimiser), 'crf' (a CRF round), 'threshold' (relabelling confidence of the NEXT round's
    maps; 0 = every pixel, the argmax)}; labels: round 1's maps (for train.first_round: core)."""
    n = len(labels)
    comus = cfg.self_training == "comus"
    plan = []
    for r in range(cfg.rounds + cfg.crf_rounds):
        crf_round = r >= cfg.rounds
        plan.append({"epochs": cfg.round_epochs if 0 < r < cfg.rounds else cfg.epochs,
                     "images": core_images(labels) if r == 0 and cfg.first_round == "core" else list(range(n)),
                     "fresh": crf_round or (comus and r > 0), "crf": crf_round,
                     "threshold": 0.0 if comus else cfg.relabel_threshold})
    return plan


def round_maps(maps_dir: str | Path, r: int, n: int) -> io.LazyLabels:
    """Round r's (1-based) relabelled maps of n images, as `write_round_maps` wrote them under maps_dir/round_<r>/:
    a sequence of (H_i, W_i) uint8 maps read on access."""
    return io.LazyLabels(Path(maps_dir) / f"round_{r}", [f"{i:07d}" for i in range(n)])


def maps_complete(maps_dir: str | Path, r: int, n: int) -> bool:
    """Whether round r's (1-based) maps of all n images are in maps_dir (what a resumed run needs)."""
    return all((m.folder / f"{name}.png").is_file() for m in [round_maps(maps_dir, r, n)] for name in m.names)


def write_round_maps(model: nn.Module, images: Sequence[np.ndarray], batch_size: int, device: torch.device,
                     amp: bool, threshold: float, refine: Refiner | None, folder: str | Path) -> float:
    """The maps the next self-training round trains on, written as they are predicted: this process's `shard` of
    `images` ((H_i, W_i, 3) uint8, in memory or read on access), each image's (H_i, W_i) uint8 map ->
    folder/<index:07d>.png (`round_maps` reads them back): `relabel` of the network's argmax at `threshold` (0: every
    pixel), or with `refine` the argmax of the dense CRF on the network's softmax (every pixel labelled). Under
    torch.distributed every process writes its share (the folder must be one they all see) and waits for the
    others. -> the share of labelled (not 255) pixels over every image of every process."""
    rank, world_size = world()
    mine = shard(range(len(images)), rank, world_size)
    folder = Path(folder)
    counts = torch.zeros(2, dtype=torch.int64)  # labelled pixels, pixels
    for pr in predictions(model, Take(images, mine), batch_size, device, amp, refine=refine):
        m = pr.refined if refine is not None else relabel(pr.classes, pr.confidence, threshold)
        io.write_label(folder / f"{mine[pr.index]:07d}.png", m)
        counts[0] += int((m != IGNORE).sum())
        counts[1] += m.size
    if world_size > 1:
        counts = counts.to(device)
        dist.all_reduce(counts)  # also waits until every process has written its share
        dist.barrier()
    kept, total = (int(v) for v in counts.cpu())
    return kept / max(total, 1)


def self_train(model: nn.Module, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], cfg: TrainConfig,
               seed: int, device: torch.device, resume: dict | None = None,
               on_step: Callable[[dict], None] | None = None, save: Callable[[dict], None] | None = None,
               max_steps: int | None = None, crop_size: int | None = None,
               refine: Refiner | None = None, maps_dir: str | Path | None = None) -> list[dict] | None:
    """cfg.rounds rounds of training, then cfg.crf_rounds CRF rounds (`round_plan` says which images, epochs and
    start each has). Round 1 trains on `labels` for cfg.epochs (train.first_round core: only on `core_images`,
    COMUS's first round on its core masks). Each later round trains for cfg.round_epochs on the previous round's
    predictions of EVERY image:
    - train.self_training continue: its confident pixels (`relabel` at cfg.relabel_threshold, at each image's own
      size), continuing from its weights and optimiser state reset;
    - comus: its argmax, every pixel (no threshold), from the model's INITIAL weights with a fresh optimiser, as
      COMUS's main.py trains a new network each iteration (configs/self_training/pascal.yaml: 2 iterations, the
      second over train_aug for 4 epochs). Departure: COMUS's later rounds see more images than its first (train
      1,464 -> train_aug 10,582); here every round sees the whole training split, the first only its core when
      asked.
    CRF rounds train on the previous round's predictions refined by `refine` (the dense CRF: every pixel
    labelled), from the INITIAL weights for cfg.epochs with a fresh optimiser, as MaskDistill's
    train_plus_crf.sh retrains a new network (its deeplab_plus_crf.yml: a new output folder, so no checkpoint; the
    same MoCo initialisation and the full 45 epochs). crop_size: the training crop side (see `fit`).

    images, labels: (H_i, W_i, 3) and (H_i, W_i) uint8, in memory or read on access (io.LazyImages / LazyLabels):
    nothing here holds the dataset. Each round's relabelled maps are written to maps_dir/round_<r>/ as they are
    predicted (`write_round_maps`) and read back by the next round (a resumed run finds them there: keep maps_dir
    with the checkpoint). maps_dir None: a temporary folder, removed once the returned maps are no longer referenced
    (one process only; under torch.distributed give a folder every process sees).

    save gets the resumable state ({'round', 'fit' (a `fit` state), 'rounds'}) at every checkpoint and round
    end; resume is such a state. on_step gets fit's records with 'round' (1-based) added.
    Returns per round {'round', 'relabel' (the maps the next round trains on, (H_i, W_i) uint8 per image, read from
    maps_dir on access), 'kept' (their share of labelled pixels), 'history', 'crf' (whether it is a CRF round)}
    and, when there are several rounds, for every round but the last 'weights' (its state dict on the CPU: the
    model holds the last round's), or None when stopped by max_steps.
    """
    plan = round_plan(cfg, labels)
    total = len(plan)
    n = len(images)
    if cfg.crf_rounds and refine is None:
        raise ValueError("train.crf_rounds > 0 needs `refine` (the dense CRF, pipeline.train.crf.refine_all)")
    tmp = None
    if maps_dir is None:
        if world()[1] > 1:
            raise ValueError("self_train under torch.distributed needs maps_dir, a folder every process sees")
        tmp = tempfile.TemporaryDirectory(prefix="self_train_maps_")  # removed with the last map sequence
        maps_dir = tmp.name
    maps_dir = Path(maps_dir)
    init = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}  # fresh rounds start here
    rounds = list(resume["rounds"]) if resume else []
    if rounds and not maps_complete(maps_dir, len(rounds), n):
        raise ValueError(f"resume: round {len(rounds)} finished, but its {n} relabelled maps are not all in "
                         f"{maps_dir / f'round_{len(rounds)}'} (give the maps_dir of the interrupted run)")
    if resume and resume["round"] >= total:  # every round finished before the interruption
        model.load_state_dict(resume["fit"]["model"])
    for r in range(len(rounds), total):
        start = resume["fit"] if resume and resume["round"] == r else None
        if plan[r]["fresh"] and start is None:
            start = {"step": 0, "model": init, "opt": None, "history": []}
        train_labels = labels if r == 0 else round_maps(maps_dir, r, n)
        idx = plan[r]["images"]

        def save_state(state: dict, r: int = r) -> None:
            if save:
                save({"round": r, "fit": state, "rounds": rounds})

        def step_log(rec: dict, r: int = r) -> None:
            if on_step:
                on_step({**rec, "round": r + 1})

        history, finished = fit(model, Take(images, idx), Take(train_labels, idx), cfg, seed + r,
                                device, plan[r]["epochs"], start=start, on_step=step_log, on_checkpoint=save_state,
                                max_steps=max_steps, crop_size=crop_size)
        if not finished:
            return None
        if max_steps is not None:
            max_steps -= len(history) - (len(start["history"]) if start and start.get("opt") is not None else 0)
        next_crf = r + 1 < total and plan[r + 1]["crf"]  # the next round trains on this network's CRF-refined maps
        share = write_round_maps(model, images, cfg.batch_size, device, cfg.amp, plan[r]["threshold"],
                                 refine if next_crf else None, maps_dir / f"round_{r + 1}")
        rd = {"round": r + 1, "kept": float(share), "history": history, "crf": plan[r]["crf"]}
        if r < total - 1:  # the weights that predict this round's maps later (the model moves on)
            rd["weights"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        rounds.append(rd)
        if save:  # the next round starts from these weights (a fresh round: the initial ones) with a fresh optimiser
            fresh_next = r + 1 < total and plan[r + 1]["fresh"]
            save({"round": r + 1, "fit": {"step": 0, "model": init if fresh_next else model.state_dict(), "opt": None,
                                          "history": []}, "rounds": rounds})
        resume = None
    out = []
    for rd in rounds:
        maps = round_maps(maps_dir, rd["round"], n)
        maps.keep_alive = tmp  # the temporary folder lives as long as a sequence of its maps
        out.append({**rd, "relabel": maps})
    return out


def resume_state(ckpt: Path, key: str, maps_dir: Path, n: int) -> tuple[dict | None, str]:
    """The `self_train` state saved at `ckpt` for fingerprint `key`, when its finished rounds' maps of the n images
    are all in maps_dir -> (state, why); (None, reason) else."""
    resume, why = checkpoint.load(ckpt, key)
    if resume and resume["rounds"] and not maps_complete(maps_dir, len(resume["rounds"]), n):
        return None, f"checkpoint {ckpt} without its rounds' maps in {maps_dir}"
    return resume, why


def resumed_step(cfg: TrainConfig, labels: Sequence[np.ndarray], resume: dict | None, world_size: int) -> int:
    """The optimiser steps over every round that a resumed `self_train` state has done (0 for None): the finished
    rounds' steps (`data.steps_per_epoch` of each round's images) plus the steps of the round it stopped in."""
    if resume is None:
        return 0
    plan = round_plan(cfg, labels)[:resume["round"]]
    done = sum(steps_per_epoch(len(rd["images"]), cfg.batch_size, world_size) * rd["epochs"] for rd in plan)
    return done + resume["fit"]["step"]


def history(rounds: list[dict]) -> list[dict]:
    """`self_train`'s rounds -> per round and epoch {'epoch', 'loss', 'lr', 'round'} (`loop.epoch_summary`)."""
    return [{**e, "round": rd["round"]} for rd in rounds for e in epoch_summary(rd["history"])]
