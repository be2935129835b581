"""Stage train: the network on the training split's merged pseudo-labels, its self-training and CRF rounds
(selftrain.py), the network as a bundle in data/10_train/model/ (bundle.py; the bundle stage adds names and card),
every round's predictions of both splits at the original sizes, with crf.predictions also network + dense CRF
(predict.py). Resumes from checkpoints/, runs under torchrun with processes > 1; seconds spent -> timings.json."""
import time
from pathlib import Path

import torch

from pipeline import distributed, io
from pipeline.backbone import factory as bb
from pipeline.config import load_params
from pipeline.train import bundle, checkpoint, crf, predict, selftrain
from pipeline.train.live import TrainLog
from pipeline.train.models import build_model


def main() -> None:
    p = load_params()
    device = distributed.launch("stages.train", p.processes, bb.pick_device(p.train.device))
    rank, world_size = distributed.world()
    if p.train.threads:
        torch.set_num_threads(p.train.threads)
    refine = crf.refiner(p.crf, distributed.processes_per_node()) if p.crf.predictions or p.train.crf_rounds else None
    out, manifest = Path(p.paths.train), io.read_manifest(p.paths.prepare)
    names, eval_names, size = manifest["names"], io.eval_names(manifest), manifest["image_size"]
    images, labels = io.LazyImages(p.paths.prepare, names), io.LazyLabels(Path(p.paths.merge) / "labels", names)
    classes, weights = io.cluster_k(p.paths.cluster) + 1, Path(p.paths.pretrain) / "backbone.pth"
    torch.manual_seed(p.seed)
    model = build_model(p.train, classes, size, lambda: bb.from_stage(p.backbone, weights, size))
    files = [s.folder / f"{n}{s.suffix}" for s in (images, labels) for n in s.names] + [weights]
    key = checkpoint.run_fingerprint(p.train, p.crf, p.seed, classes, files, model)
    ckpt, maps_dir = out / "checkpoints" / "last.pt", out / "checkpoints" / "rounds"
    resume, why = selftrain.resume_state(ckpt, key, maps_dir, len(names))
    offset = selftrain.resumed_step(p.train, labels, resume, world_size)
    print(f"train: {why}" + (f" at round {resume['round'] + 1}, step {offset}" if resume else ""), flush=True)
    log, tick = TrainLog(out / "live", offset, resume is not None, rank == 0), time.perf_counter()
    rounds = selftrain.self_train(model, images, labels, p.train, p.seed, device, resume=resume, on_step=log.step,
                                  save=(lambda s: checkpoint.save(ckpt, s, key)) if rank == 0 else None,
                                  crop_size=size, refine=refine, maps_dir=maps_dir)
    fit_s, tick = time.perf_counter() - tick, time.perf_counter()
    log.end(rounds)
    if rank == 0:
        bundle.write(out / "model", model, bundle.run_config(p, classes, size))
        io.write_json(out / "history.json", selftrain.history(rounds))
    splits = [(names, images), (eval_names, io.LazyImages(p.paths.prepare, eval_names))]
    predict.write_predictions(model, rounds, splits, io.original_sizes(p.paths.prepare, manifest, names + eval_names),
                              out / "predictions", p.train.batch_size, device, p.train.amp,
                              refine if p.crf.predictions else None)
    distributed.barrier()  # every process has written its share of the predictions
    if rank == 0:
        checkpoint.remove(ckpt, maps_dir)  # finished: the outputs above are the result
        predict_s = time.perf_counter() - tick
        io.write_json(out / "timings.json", {"fit_s": fit_s, "predict_s": predict_s, "processes": world_size})
        print(f"train: {len(rounds)} round(s) on {device} x{world_size}, {len(names + eval_names)} images -> {out}")
    distributed.finish()


if __name__ == "__main__":
    main()
