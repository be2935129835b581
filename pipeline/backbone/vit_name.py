"""What a timm ViT's name says before the model is built: its patch size, and whether timm has it. Imports no
config (the config checks call it) and imports timm, which is slow, only where timm's model list is needed."""
from __future__ import annotations

import difflib
import re


def patch_size(name: str, overrides: dict) -> int | None:
    """The ViT patch size from overrides["patch_size"] or the timm name (..._patch16_...), None if unknown."""
    if "patch_size" in overrides:
        return overrides["patch_size"]
    m = re.search(r"patch(\d+)", name)
    return int(m.group(1)) if m else None


def problem(name: str) -> str | None:
    """None when `name` (optionally with a .pretrained_tag) is a timm ViT, else what it is instead, in words:
    'not a timm ViT' (another timm model) or 'not a timm model (did you mean vit_..?)'."""
    import timm

    arch, vits = name.split(".")[0], timm.list_models("*vit*")
    if arch in vits:
        return None
    if arch in timm.list_models():
        return "not a timm ViT"
    close = difflib.get_close_matches(arch, vits, n=3, cutoff=0.6)
    return "not a timm model" + (f" (did you mean {', '.join(close)}?)" if close else "")
