"""The data map: where personal data lives (``deploy/datamap.yaml``). Adding a dataset is config, not code.

Each dataset names its store (``mongo``, ``postgres``, ``s3``, ``milvus``, or ``processor``: a third party that
erases its copy itself and confirms), where a subject's data is found
there, how it is erased (``erase`` now, or ``tag_then_purge``), its category (``anonymized_analytics`` is exempt)
and which of its fields are encrypted under the subject's data keys.

A PostgreSQL dataset names its table, the subject column and primary key, and the child tables that hold rows of
the parent's through a foreign key (``cascade``, declared, never guessed from the schema): they go first, in the
same transaction. Every identifier here is checked against a strict pattern and quoted when SQL is built; nothing of
a request ever becomes an identifier.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.configfile import load_yaml

Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
EXEMPT_CATEGORIES = frozenset({"anonymized_analytics"})


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MongoLocation(_Strict):
    collection: Annotated[str, StringConstraints(min_length=1, max_length=120)]
    subject_field: Annotated[str, StringConstraints(min_length=1, max_length=120)]


SqlName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]
SqlTable = Annotated[str, StringConstraints(pattern=r"^([A-Za-z_][A-Za-z0-9_]{0,62}\.)?[A-Za-z_][A-Za-z0-9_]{0,62}$")]


class PostgresChild(_Strict):
    """A table whose rows belong to the parent's rows: ``foreign_key`` (in this table) references the parent's
    primary key. Its own children may follow (``cascade``)."""

    table: SqlTable
    foreign_key: SqlName
    primary_key: SqlName = "id"
    cascade: tuple[PostgresChild, ...] = ()


class PostgresLocation(_Strict):
    table: SqlTable = Field(description="the table, schema-qualified if need be (shop.orders)")
    subject_column: SqlName
    primary_key: SqlName = "id"
    tag_column: SqlName | None = Field(
        default=None, description="timestamptz column set when a row is tagged (mode tag_then_purge)"
    )
    cascade: tuple[PostgresChild, ...] = ()

    def tables(self) -> list[str]:
        """The table and every child table, parent first."""

        def walk(children: tuple[PostgresChild, ...]) -> list[str]:
            return [t for c in children for t in (c.table, *walk(c.cascade))]

        return [self.table, *walk(self.cascade)]


class ProcessorLocation(_Strict):
    """A processor or third party that received the data and erases it itself (GDPR Art. 17(2), 19): lethe sends
    it a signed erasure request (Standard Webhooks) and waits for its signed confirmation."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=100)] = Field(description="who it is, for people")
    endpoint: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$", max_length=2000)] = Field(
        description="where the signed erasure request is POSTed"
    )
    secret_env: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{0,99}$")] = Field(
        description="the environment variable holding the endpoint's signing secret (whsec_...)"
    )


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
    store: Literal["mongo", "postgres", "s3", "milvus", "processor"]
    mongo: MongoLocation | None = None
    postgres: PostgresLocation | None = None
    processor: ProcessorLocation | None = None
    s3: S3Location | None = None
    milvus: MilvusLocation | None = None
    mode: Literal["erase", "tag_then_purge"] = "erase"
    category: str = "personal"
    encrypted_fields: tuple[str, ...] = ()
    description: str = ""
    # On the accounts dataset: the field whose value names the law a person's requests are answered under
    # (a code of deploy/jurisdictions.yaml), when the caller names none.
    jurisdiction_field: Annotated[str, StringConstraints(min_length=1, max_length=120)] | None = None

    @model_validator(mode="after")
    def _location_matches_store(self) -> Dataset:
        given = {k for k in ("mongo", "postgres", "s3", "milvus", "processor") if getattr(self, k) is not None}
        if given != {self.store}:
            raise ValueError(f"a {self.store} dataset needs exactly a '{self.store}' location (got {sorted(given)})")
        if self.mode == "tag_then_purge" and self.store not in ("mongo", "postgres"):
            raise ValueError("tag_then_purge is for mongo and postgres datasets only")
        if self.mode == "tag_then_purge" and self.postgres is not None and self.postgres.tag_column is None:
            raise ValueError("a postgres dataset in mode tag_then_purge needs postgres.tag_column")
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

    @property
    def processors(self) -> list[Dataset]:
        return [d for d in self.datasets if d.processor is not None]


class DataMapError(ValueError):
    """The data map file is missing, not YAML, or invalid; the message says where."""


def processor_secrets(datamap: DataMap, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each processor dataset's signing secret, from the environment variable the data map names (notifier signs the
    erasure requests with it, intake checks the processors' answers with it). A missing one is an error at start."""
    env = os.environ if environ is None else environ
    secrets: dict[str, str] = {}
    for dataset in datamap.processors:
        assert dataset.processor is not None
        value = env.get(dataset.processor.secret_env, "")
        if not value.startswith("whsec_"):
            raise DataMapError(
                f"dataset {dataset.name}: set {dataset.processor.secret_env} to the processor's signing secret "
                "(whsec_ and base64)"
            )
        secrets[dataset.name] = value
    return secrets


def load_datamap(path: Path) -> DataMap:
    return load_yaml(path, DataMap, what="data map", error=DataMapError)
