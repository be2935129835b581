"""Changed copies of a configuration: `key=value` assignments on the raw params mapping (as `dvc exp run -S` writes
them), and a validated copy of a config object with some fields changed."""
import copy
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.config.errors import ConfigError
from pipeline.config.schemas import validation_error


def apply_sets(raw: dict, sets: list[str]) -> dict:
    """A params mapping with `dotted.key=value` assignments applied (values parsed as YAML, as `dvc exp run -S`
    does) -> a new mapping; `raw` is unchanged. An unknown section or key raises ConfigError naming it."""
    out = copy.deepcopy(raw)
    for s in sets:
        key, sep, value = s.partition("=")
        if not sep:
            raise ConfigError(f"params: {s!r} is no assignment; write section.key=value, e.g. train.epochs=40")
        *sections, last = key.split(".")
        node = out
        for i, sec in enumerate(sections):
            if not isinstance(node.get(sec), dict):
                raise ConfigError(f"params: {'.'.join(sections[:i + 1])!r} in {s!r} is no params section")
            node = node[sec]
        if last not in node:
            raise ConfigError(f"params: {key!r} in {s!r} is no params key")
        node[last] = yaml.safe_load(value)
    return out


def replace(cfg: Any, **changes: Any) -> Any:
    """A copy of the config object `cfg` with `changes` applied, validated again (a bad value raises ConfigError)."""
    try:
        return type(cfg).model_validate({**dict(cfg), **changes})
    except ValidationError as e:
        raise validation_error(e, type(cfg)) from None
