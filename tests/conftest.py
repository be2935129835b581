import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Subprocesses the tests start (stages, `python -c` snippets) import this checkout's pipeline and stages too.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def raw_params() -> dict:
    """params.yaml as the plain mapping it holds (not validated)."""
    import yaml

    return yaml.safe_load((ROOT / "params.yaml").read_text())


def write_params(work: Path, **sections) -> dict:
    """params.yaml of the project with `sections` updated (dict values merged key by key) -> work/params.yaml."""
    import yaml

    params = raw_params()
    for name, values in sections.items():
        params[name].update(values)
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def run_prepare(work: Path, monkeypatch, **sections) -> dict:
    """The prepare stage's main() in `work`, in this process, with params.yaml's `sections` updated -> the
    manifest it wrote."""
    from pipeline import io
    from stages import prepare

    write_params(work, **sections)
    monkeypatch.chdir(work)
    prepare.main()
    return io.read_manifest(work / "data" / "01_prepare")


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
