import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Subprocesses the tests start (stages, `python -c` snippets) import this checkout's pipeline and stages too.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def section(name: str, /, **overrides):  # positional-only: overrides may hold a `name` (data.name, backbone.name)
    """params.yaml's section `name` as its validated config object, with `overrides` applied (validated again):
    the tests' defaults come from params.yaml, the one place a default is written."""
    from pipeline.config import load_params, replace

    return replace(getattr(load_params(ROOT / "params.yaml"), name), **overrides)


def tiny_backbone():
    """A 1-block ViT (patch 8, width 32) for 64 px inputs, random weights from seed 0: pretext tests' trunk."""
    import torch

    from pipeline.backbone.factory import create_backbone

    torch.manual_seed(0)
    cfg = section("backbone", source="random", overrides={"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2})
    return create_backbone(cfg, 64)


def fixed_batch_losses(objective, batch, idx, steps: int = 5) -> list[float]:
    """`steps` Adam steps of an objective's loss on one batch with the same random draws each step
    (tuples, crops, masks, negatives): its losses, first to last."""
    import torch

    opt = torch.optim.Adam(objective.parameters(), lr=2e-3)
    losses = []
    for _ in range(steps):
        torch.manual_seed(1)  # the same draws every step: a fixed batch
        loss, _ = objective.loss(batch, idx)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
