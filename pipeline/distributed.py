"""Several processes, one result: which process does which share, the torchrun launch, the results every process
needs from the others, and batch statistics that span every process.

Every stage with per-image work (features, proposals, pseudolabels, filter, merge, train, evaluate) calls
`launch(module, processes, device)` first: it re-runs the stage's module under torchrun (`processes` of them on this
node) when asked for more than one and not yet under torchrun, and else returns this process's device, joining
torchrun's process group (nccl on CUDA, gloo on the CPU) when started by torchrun (env RANK / WORLD_SIZE: one
node or several). `shard` is the one rule for which items a process handles; `map_images` runs a function over
this process's share in the local process pool (pipeline/parallel.py) and hands every process every result in
input order, so what a stage computes from the results is the same in every process and for any count; only
rank 0 (`is_main`) writes what is not per image.
"""
from __future__ import annotations

import os
import subprocess
import sys
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

from pipeline import parallel

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S", bound=Sequence)


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process writes what is not per image (rank 0; the only process outside torch.distributed)."""
    return world()[0] == 0


def shard(items: S | Iterable[T], rank: int, world_size: int) -> S | Iterator[T]:
    """The share of `items` that process `rank` of `world_size` handles: every world_size-th item from item `rank`
    (a sequence: items[rank::world_size], a range for a range; a stream: those items drawn lazily). The shares are
    disjoint, cover `items`, differ in length by at most one and keep the items' order."""
    if isinstance(items, Sequence):
        return items[rank::world_size]
    return islice(items, rank, None, world_size)


def processes(setting: int | str) -> int:
    """The `processes` param -> how many processes to run on this node (auto: one per visible GPU, at least one)."""
    return max(torch.cuda.device_count(), 1) if setting == "auto" else int(setting)


def processes_per_node() -> int:
    """How many processes torchrun started on this node (1 outside torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def launch(module: str, setting: int | str, device: torch.device | str) -> torch.device:
    """Start `module` (e.g. 'stages.train') under torchrun, `processes(setting)` processes on this node, when that is
    more than one and this process was not started by torchrun: this process then exits with torchrun's exit
    status. Otherwise -> this process's device (`device`, on CUDA the GPU of this process's local rank), having
    joined torchrun's process group (nccl on CUDA, gloo on the CPU) when started by torchrun."""
    n, device = processes(setting), torch.device(device)
    under_torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if n > 1 and not under_torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", module]
        print(f"{module}:", " ".join(cmd), flush=True)
        sys.exit(subprocess.call(cmd))
    if under_torchrun and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def local_workers(workers: int) -> int:
    """A `workers` setting -> this process's pool size: 0 (every core) shares the node's cores among the processes
    torchrun started on it; n >= 1 stays n."""
    return workers or max(parallel.cores() // processes_per_node(), 1)


def unshard(parts: Sequence[Sequence[T]]) -> list[T]:
    """The inverse of `shard`: every process's share, by rank -> the items in their order."""
    size = len(parts)
    return [parts[i % size][i // size] for i in range(sum(len(p) for p in parts))]


def gather(mine: list[Any]) -> list[Any]:
    """Each process's results of its `shard` of some items -> every process's results, in the items' order
    (`unshard`), in every process. Outside torch.distributed: `mine` itself."""
    size = world()[1]
    if size == 1:
        return mine
    parts: list[list[Any]] = [[] for _ in range(size)]
    dist.all_gather_object(parts, mine)
    return unshard(parts)


def all_reduce_sum(counts: np.ndarray) -> np.ndarray:
    """Integer counts (any shape) -> their sum over every process, int64 (exact, in any order), in every process.
    Outside torch.distributed: the counts themselves."""
    counts = np.asarray(counts, np.int64)
    if world()[1] == 1:
        return counts
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.from_numpy(counts.copy()).to(on)
    dist.all_reduce(t)
    return t.cpu().numpy()


def map_images(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """fn(item) for this process's `shard` of `items` (over `local_workers(workers)` pool processes,
    parallel.map_images), then every item's result in input order, in every process: fn's per-image files are
    written once, by the process whose share holds the image. One process: parallel.map_images itself, streaming.
    Several: the results are held until every process has its share (what a stage gathers: table rows, counts)."""
    rank, size = world()
    if size == 1:
        yield from parallel.map_images(fn, items, local_workers(workers))
        return
    yield from gather(list(parallel.map_images(fn, shard(items, rank, size), local_workers(workers))))


def barrier() -> None:
    """Wait until every process gets here (nothing outside torch.distributed)."""
    if world()[1] > 1:
        dist.barrier()


def finish() -> None:
    """Wait for every process, then leave the process group (nothing outside torch.distributed)."""
    if world()[1] > 1:
        dist.barrier()
        dist.destroy_process_group()


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span every process (any backend, gloo on the CPU included;
    torch's SyncBatchNorm is GPU-only). Same parameters and buffers as BatchNorm2d. The sums are
    `torch.distributed.nn.functional.all_reduce`, whose gradient is the sum of the processes' gradients."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world()[1] == 1:
            return super().forward(x)
        c = x.shape[1]
        count = dist_fn.all_reduce(x.new_tensor([x.numel() / c]))[0]
        mean = dist_fn.all_reduce(x.sum((0, 2, 3))) / count
        var = dist_fn.all_reduce(((x - mean.view(1, c, 1, 1)) ** 2).sum((0, 2, 3))) / count
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 0.1
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * count / max(float(count) - 1, 1.0))
            self.num_batches_tracked += 1
        y = (x - mean.view(1, c, 1, 1)) * torch.rsqrt(var.view(1, c, 1, 1) + self.eps)
        return y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1) if self.affine else y


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d -> synchronised across processes: torch's SyncBatchNorm on CUDA, AllReduceBatchNorm2d else."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            new = AllReduceBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats).to(child.weight.device if child.affine else device)
            new.load_state_dict(child.state_dict())
            setattr(model, name, new)
        else:
            sync_batchnorm(child, device)
    return model
