"""Class names: a person's `names.yaml` (id: name) over the default names of discovered classes.

Unsupervised discovery finds classes, not their names. The project's `names.yaml` (beside params.yaml, `{}` until
someone names a class) is read by the bundle stage (the bundle's classes.json and model card), the report stage
(its Classes section and the journeys' legend), `unseg inspect`, and `unseg predict --names`."""
from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.io.files import InputError

NAMES = "names.yaml"  # the project's class names, beside params.yaml (the stages run in the project root)


def default_names(num_classes: int) -> dict[int, str]:
    """{0: 'background', 1: 'class_1', ...}: the names of classes nobody has named yet."""
    return {i: "background" if i == 0 else f"class_{i}" for i in range(num_classes)}


def read_names(path: str | Path, num_classes: int) -> dict[int, str]:
    """names.yaml ({id: name}, any subset of the ids; empty or `{}` names none) -> {id: name} of the ids it names;
    InputError naming the file for a missing or unparsable file, an id out of range or a name that is not a
    non-empty string."""
    path = Path(path)
    try:
        given = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"{path}: not a readable names file ({type(e).__name__}: {e})") from e
    if not isinstance(given, dict):
        raise InputError(f"{path}: must map class ids to names, e.g. '1: sky', got {type(given).__name__}")
    names = {}
    for k, v in given.items():
        if not isinstance(k, int) or not 0 <= k < num_classes:
            raise InputError(f"{path}: class id {k!r} is not one of 0..{num_classes - 1}")
        if not isinstance(v, str) or not v.strip():
            raise InputError(f"{path}: class {k}'s name must be a non-empty string, got {v!r}")
        names[k] = v.strip()
    return names


def class_names(path: str | Path, num_classes: int) -> dict[int, str]:
    """The name of every class 0..num_classes-1: names.yaml's (`read_names`) over `default_names`."""
    return {**default_names(num_classes), **read_names(path, num_classes)}
