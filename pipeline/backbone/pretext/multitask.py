"""Multi-task self-supervision (Doersch & Zisserman 2017): several objectives on one shared trunk.

Each task keeps its own head; the backbone is shared and trained on the weighted sum of the task losses,
all computed on the same batch (the paper sums the gradients of tasks computed on separate workers; its
"lasso" over trunk layers and input harmonisation are left out).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.backbone.pretext.common import Objective


class MultiTask(Objective):
    """Weighted sum of objectives that share one backbone."""

    def __init__(self, backbone: nn.Module, tasks: dict[str, Objective], weights: dict[str, float]) -> None:
        super().__init__(backbone)
        for name, t in tasks.items():
            if t.backbone is not backbone:
                raise ValueError(f"multitask: task {name} does not share the backbone")
        self.tasks = nn.ModuleDict(tasks)
        self.weights = dict(weights)

    def epoch_start(self, data: torch.Tensor, epoch: int) -> list[nn.Parameter]:
        return [p for t in self.tasks.values() for p in t.epoch_start(data, epoch)]

    def sample_order(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(n)

    def loss(self, batch: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        total = torch.zeros((), device=batch.device)
        extras: dict[str, float] = {}
        for name, t in self.tasks.items():
            loss, _ = t.loss(batch, idx)
            total = total + self.weights[name] * loss
            extras[f"loss_{name}"] = float(loss.detach())
        return total, extras
