"""Resume checkpoints of the train stage: written atomically, tied to the exact run they belong to.

A checkpoint holds everything a training run needs to continue bit for bit (weights, optimiser, schedule,
loss scaler, the step, finished rounds). It is keyed by a fingerprint of the configuration, the input
files' bytes and the initial weights, so a changed parameter or input starts afresh instead of resuming a different
run.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from pipeline import io
from pipeline.config import CRFConfig, TrainConfig

# train settings that change speed, not the result: a run may resume with others
SPEED_ONLY = {"device", "threads", "workers", "checkpoint_every"}


def file_digest(path: str | Path) -> str:
    """A file's bytes -> md5 hex digest (as DVC hashes a file)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def fingerprint(config: dict, files: Sequence[str | Path], model: nn.Module) -> str:
    """JSON-able config, input files (their bytes, hashed as files) and a model's initial weights -> sha256 hex
    digest: a changed parameter, input or initialisation gives another digest."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for f in files:
        h.update(f"{Path(f).name} {file_digest(f)}".encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def run_fingerprint(train: TrainConfig, crf: CRFConfig, seed: int, classes: int, files: Sequence[str | Path],
                    model: nn.Module) -> str:
    """The train stage's resume key: `fingerprint` of the train section (less SPEED_ONLY), the seed, the class count,
    the crf section where CRF rounds use it (less its predictions and workers), the input files and the model."""
    config = {"train": train.model_dump(exclude=SPEED_ONLY), "seed": seed, "classes": classes,
              **({"crf": crf.model_dump(exclude={"predictions", "workers"})} if train.crf_rounds else {})}
    return fingerprint(config, files, model)


def save(path: str | Path, state: dict, key: str) -> None:
    """The state (tensors, numbers, lists, dicts) -> `path`, atomically, tagged with the fingerprint `key`."""
    with io.atomic_open(path) as f:
        torch.save({"fingerprint": key, "state": _to_cpu(state)}, f)


def load(path: str | Path, key: str) -> tuple[dict | None, str]:
    """The state saved at `path` for fingerprint `key` -> (state, why); (None, reason) when absent or stale."""
    path = Path(path)
    if not path.is_file():
        return None, "no checkpoint"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file cannot appear (atomic writes), but a foreign one can
        return None, f"unreadable checkpoint {path} ({type(e).__name__}: {e})"
    if saved.get("fingerprint") != key:
        return None, f"checkpoint {path} belongs to another configuration or data"
    return saved["state"], "resuming"


def remove(path: str | Path, maps_dir: str | Path) -> None:
    """A finished run's checkpoint at `path` and its rounds' maps in maps_dir -> gone (the outputs are the result)."""
    Path(path).unlink(missing_ok=True)
    shutil.rmtree(maps_dir, ignore_errors=True)


def truncate_live(live_dir: str | Path, step: int) -> None:
    """Drop rows with step >= `step` from dvclive's .tsv plots under `live_dir` (the steps a killed run logged
    after its last checkpoint, which the resumed run logs again)."""
    for tsv in Path(live_dir).glob("plots/**/*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        col = lines[0].split("\t").index("step") if "step" in lines[0].split("\t") else None
        if col is None:
            continue
        kept = [lines[0]] + [ln for ln in lines[1:] if int(ln.split("\t")[col]) < step]
        io.write_bytes(tsv, ("\n".join(kept) + "\n").encode())


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
