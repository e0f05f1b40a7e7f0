"""The data map: where personal data lives (``deploy/datamap.yaml``). Adding a dataset is config, not code.

Each dataset names its store (``mongo``, ``s3`` or ``milvus``), where a subject's data is found there, how it
is erased (``erase`` now, or ``tag_then_purge``), its category (``anonymized_analytics`` is exempt) and which of
its fields are encrypted under the subject's data keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
EXEMPT_CATEGORIES = frozenset({"anonymized_analytics"})


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MongoLocation(_Strict):
    collection: Annotated[str, StringConstraints(min_length=1, max_length=120)]
    subject_field: Annotated[str, StringConstraints(min_length=1, max_length=120)]


class S3Location(_Strict):
    bucket: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: Annotated[str, StringConstraints(min_length=1)] = Field(
        description="key prefix template, e.g. users/{subject_id}/"
    )

    @model_validator(mode="after")
    def _prefix_names_the_subject(self) -> S3Location:
        if "{subject_id}" not in self.prefix:
            raise ValueError("prefix must contain {subject_id}")
        return self

    def prefix_for(self, subject_id: str) -> str:
        return self.prefix.replace("{subject_id}", subject_id)


class MilvusLocation(_Strict):
    collection: Annotated[str, StringConstraints(min_length=1, max_length=120)]
    filter_field: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class Dataset(_Strict):
    name: Name
    store: Literal["mongo", "s3", "milvus"]
    mongo: MongoLocation | None = None
    s3: S3Location | None = None
    milvus: MilvusLocation | None = None
    mode: Literal["erase", "tag_then_purge"] = "erase"
    category: str = "personal"
    encrypted_fields: tuple[str, ...] = ()
    description: str = ""

    @model_validator(mode="after")
    def _location_matches_store(self) -> Dataset:
        given = {k for k in ("mongo", "s3", "milvus") if getattr(self, k) is not None}
        if given != {self.store}:
            raise ValueError(f"a {self.store} dataset needs exactly a '{self.store}' location (got {sorted(given)})")
        if self.mode == "tag_then_purge" and self.store != "mongo":
            raise ValueError("tag_then_purge is for mongo datasets only")
        return self

    @property
    def exempt(self) -> bool:
        return self.category in EXEMPT_CATEGORIES


class DataMap(_Strict):
    datasets: tuple[Dataset, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_are_unique(self) -> DataMap:
        names = [d.name for d in self.datasets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate dataset names: {', '.join(duplicates)}")
        return self

    def get(self, name: str) -> Dataset:
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.datasets]


class DataMapError(ValueError):
    """The data map file is missing, not YAML, or invalid; the message says where."""


def load_datamap(path: Path) -> DataMap:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise DataMapError(f"cannot read the data map {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise DataMapError(f"the data map {path} is not valid YAML: {exc}") from exc
    try:
        return DataMap.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise DataMapError(f"the data map {path} is invalid: {problems}") from exc
