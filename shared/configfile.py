"""Reading a YAML configuration file into its pydantic model, with errors that say which file and which field."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def load_yaml(path: Path, model: type[M], *, what: str, error: type[ValueError]) -> M:
    """``model`` from the YAML file at ``path``; ``error`` (naming ``what``, the file and each bad field) if it
    cannot be read, is not YAML, or does not validate."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise error(f"cannot read the {what} {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise error(f"the {what} {path} is not valid YAML: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise error(f"the {what} {path} is invalid: {problems}") from exc
