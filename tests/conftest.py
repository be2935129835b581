"""Helpers shared by tests/unit and tests/e2e: the project's params, the prepare stage in this process, tiny
backbones, and dvc / git run in a temporary repository."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Subprocesses the tests start (stages, `python -c` snippets) import this checkout's pipeline and stages too.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def find_dvc() -> str | None:
    """The dvc beside the running interpreter (a venv's, used without activating it), else the one on PATH."""
    beside = Path(sys.executable).parent / "dvc"
    return str(beside) if beside.is_file() else shutil.which("dvc")


DVC = find_dvc()
# dvc's stages (`python -m ...`) find the running interpreter first; git commits need no user config.
ENV = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
       "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "t@example.com",
       "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "t@example.com"}


def run(cmd: list[str], cwd) -> str:
    """`cmd` (a leading "dvc" is find_dvc's) in `cwd` with ENV; it must succeed -> its stdout."""
    cmd = [DVC, *cmd[1:]] if cmd[0] == "dvc" else cmd
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=ENV)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def run_stage(name: str, cwd) -> str:
    """`python -m stages.<name>` in `cwd` (the PYTHONPATH above finds this checkout's code); it must succeed -> its
    stdout."""
    out = subprocess.run([sys.executable, "-m", f"stages.{name}"], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"stage {name} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def repro_project(d: Path, sections: dict) -> str:
    """The project's code, dvc.yaml, names.yaml and models/ copied into `d` with params.yaml's `sections` updated
    (dict values merged key by key), made a git + dvc repository and committed; `dvc repro` there -> its log."""
    for name in ("pipeline", "stages", "models"):
        shutil.copytree(ROOT / name, d / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "names.yaml"):
        shutil.copy(ROOT / name, d / name)
    write_params(d, **sections)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "project"]):
        run(cmd, d)
    return run(["dvc", "repro"], d)


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


def palette_png(path: Path, label) -> None:
    """A (H, W) uint8 label map -> a palette PNG at `path` in PASCAL VOC's colours, as VOC ships its labels."""
    from PIL import Image

    from pipeline.data import voc

    img = Image.fromarray(label.astype("uint8"), mode="P")
    img.putpalette(voc.voc_palette().reshape(-1).tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


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


def tiny_bundle(folder: Path, num_classes: int = 3, image_size: int = 32, decoder: str = "fused"):
    """A bundle of a 1-block ViT (patch 8, width 32) + `decoder` head, random weights from seed 0, for
    `image_size` inputs -> written to `folder`; returns (model, config)."""
    import torch

    from pipeline.backbone import factory as bb
    from pipeline.train import bundle
    from pipeline import io

    cfg = bundle.BundleConfig(
        format=bundle.FORMAT, model="stage", model_name="", backbone_name="vit_tiny_patch16_224",
        backbone_kwargs={"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}, decoder=decoder,
        decoder_dim=8, stem_dim=8, stem_stride=4, resize="short_side", image_size=image_size, patch_size=8,
        mean=list(bb.MEAN), std=list(bb.STD), num_classes=num_classes, palette=io.palette()[:num_classes].tolist(),
        amp=True, batch_size=4, crf=section("crf"), unseg_version="test", params_hash="0" * 64)
    torch.manual_seed(0)
    model = bundle.build(cfg)
    for m in model.modules():  # BatchNorm statistics other than the defaults, so that a lost buffer shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    torch.nn.init.normal_(last.weight, std=3.0)  # logits far apart: the classes vary across an image
    bundle.write(folder, model, cfg)
    return model.eval(), cfg
