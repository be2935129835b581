"""params.yaml -> Params, validated before any stage does work. Code gets these objects, never the raw mapping."""
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.config.errors import ConfigError
from pipeline.config.schemas import Params, validation_error


def parse_params(raw: Any) -> Params:
    """The whole params.yaml mapping -> Params. Raises ConfigError naming every bad key."""
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise validation_error(e, Params) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (default: in the current directory, where dvc runs stages)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params: file {path} not found (run from the project root, where params.yaml is)")
    return parse_params(yaml.safe_load(path.read_text()) or {})
