"""Several processes, one result: which process does which share, the torchrun launch, and batch statistics that
span every process.

A stage that runs under several processes calls `launch(module, gpus, device)` first: it re-runs the stage's module
under torchrun (one process per GPU) when asked for more than one process and not yet under torchrun, and else
returns this process's device, joining torchrun's process group when started by it. `shard` says which images a
process handles wherever the work is split by image.
"""
from __future__ import annotations

import os
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

from pipeline.backbone import factory as bb


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(n: int, rank: int, world_size: int) -> range:
    """The contiguous share of n items that process `rank` of `world_size` handles: ceil(n / world_size) items each,
    the last process fewer (or none)."""
    share = -(-n // world_size)
    return range(min(rank * share, n), min((rank + 1) * share, n))


def processes(gpus: int | str) -> int:
    """train.gpus -> how many processes to run (auto: one per visible GPU, at least one)."""
    return max(torch.cuda.device_count(), 1) if gpus == "auto" else int(gpus)


def processes_per_node() -> int:
    """How many processes torchrun started on this node (1 outside torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def launch(module: str, gpus: int | str, device: str) -> torch.device:
    """Start `module` (e.g. 'stages.train') under torchrun, one process per GPU, when `gpus` asks for several
    processes and this one was not started by torchrun: this process then exits with torchrun's exit status.
    Otherwise -> this process's device (`device`: auto | cpu | cuda), having joined torchrun's process group (nccl on
    CUDA, gloo on the CPU) when started by torchrun."""
    n = processes(gpus)
    if n > 1 and "LOCAL_RANK" not in os.environ:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", module]
        print(f"{module}:", " ".join(cmd), flush=True)
        sys.exit(subprocess.call(cmd))
    dev = bb.pick_device(device)
    if "LOCAL_RANK" in os.environ:
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dev


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
