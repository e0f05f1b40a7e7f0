"""keyvault's HTTP API: data keys for the other services, key status, restore and KEK rotation (admin)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, StringConstraints

from services.keyvault import handlers
from services.keyvault.handlers import KeyRetainedError, KeyUnavailableError, UnknownKeyError, Vault
from services.keyvault.model import KeyRecord
from shared.auth import KEYS_ADMIN, KEYS_DESTROY_CONTACT, KEYS_USE, Forbidden, TokenVerifier
from shared.contacts import CONTACT_DATASET
from shared.crypto import DataKey
from shared.problems import ProblemError, parse_json, parse_params
from shared.wiring import PUBLISHER

SubjectId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@-]+$")]
Dataset = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
KeyId = Annotated[str, StringConstraints(pattern=r"^dek_[0-9a-f]{32}$")]


class KeyPath(BaseModel):
    subject_id: SubjectId
    dataset: Dataset
    key_id: KeyId | None = None


class SubjectPath(BaseModel):
    subject_id: SubjectId


class DestroyBody(BaseModel):
    model_config = {"extra": "forbid"}

    request_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]


def _key_body(key: DataKey, ttl: int) -> dict[str, Any]:
    return {"key_id": key.key_id, "dek": base64.b64encode(key.material).decode(), "cache_ttl_s": ttl}


def _status(record: KeyRecord) -> dict[str, Any]:
    return {
        "dataset": record.dataset,
        "key_id": record.key_id,
        "state": record.state,
        "kek_id": record.kek_id if record.wrapped is not None else None,
        **{
            name: value.isoformat() if value else None
            for name, value in (
                ("created_at", record.created_at),
                ("disabled_at", record.disabled_at),
                ("purge_at", record.purge_at),
                ("destroyed_at", record.destroyed_at),
            )
        },
    }


def _unavailable(exc: KeyUnavailableError) -> ProblemError:
    return ProblemError(410, "Gone", f"the key may not be used: it is {exc.state}")


NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class KeyApi:
    """What the routes need, kept on the aiohttp app (``KEY_API``) by :func:`add_routes`."""

    vault: Vault
    verifier: TokenVerifier
    cache_ttl_s: int


KEY_API = web.AppKey("keyvault_api", KeyApi)


async def current(request: web.Request) -> web.Response:
    api = request.app[KEY_API]
    api.verifier.require(request, KEYS_USE)
    path = parse_params(KeyPath, request.match_info, where="path")
    try:
        key = await handlers.current_key(api.vault, path.subject_id, path.dataset)
    except KeyUnavailableError as exc:
        raise _unavailable(exc) from exc
    return web.json_response(_key_body(key, api.cache_ttl_s), headers=NO_STORE)


async def by_id(request: web.Request) -> web.Response:
    api = request.app[KEY_API]
    api.verifier.require(request, KEYS_USE)
    path = parse_params(KeyPath, request.match_info, where="path")
    try:
        key = await handlers.key_by_id(api.vault, path.subject_id, path.dataset, path.key_id)
    except UnknownKeyError as exc:
        raise ProblemError(404, "Not Found", str(exc)) from exc
    except KeyUnavailableError as exc:
        raise _unavailable(exc) from exc
    return web.json_response(_key_body(key, api.cache_ttl_s), headers=NO_STORE)


async def status(request: web.Request) -> web.Response:
    api = request.app[KEY_API]
    api.verifier.require(request, KEYS_USE, KEYS_ADMIN)
    path = parse_params(SubjectPath, request.match_info, where="path")
    records = await api.vault.store.keys_of(path.subject_id)
    return web.json_response({"subject_id": path.subject_id, "keys": [_status(r) for r in records]})


async def restore(request: web.Request) -> web.Response:
    api = request.app[KEY_API]
    principal = api.verifier.require(request, KEYS_ADMIN)
    path = parse_params(KeyPath, request.match_info, where="path")
    try:
        event = await handlers.restore(api.vault, path.subject_id, path.dataset, restored_by=principal.subject)
    except UnknownKeyError as exc:
        raise ProblemError(404, "Not Found", str(exc)) from exc
    except KeyUnavailableError as exc:
        raise ProblemError(
            409, "Conflict", f"only a disabled key inside its grace window can be restored; this one is {exc.state}"
        ) from exc
    await request.app[PUBLISHER].publish(event)
    record = await api.vault.store.get(path.subject_id, path.dataset)
    assert record is not None
    return web.json_response(_status(record))


async def destroy_now(request: web.Request) -> web.Response:
    api = request.app[KEY_API]
    principal = api.verifier.require(request, KEYS_DESTROY_CONTACT, KEYS_ADMIN)
    path = parse_params(KeyPath, request.match_info, where="path")
    if path.dataset != CONTACT_DATASET and KEYS_ADMIN not in principal.scopes:
        raise Forbidden(f"scope {KEYS_DESTROY_CONTACT} may shred only {CONTACT_DATASET!r} keys")
    body = await parse_json(request, DestroyBody)
    try:
        event = await handlers.shred_now(api.vault, path.subject_id, path.dataset, request_id=body.request_id)
    except KeyRetainedError as exc:
        raise ProblemError(409, "Conflict", str(exc)) from exc
    if event is not None:
        await request.app[PUBLISHER].publish(event)
    record = await api.vault.store.get(path.subject_id, path.dataset)
    if record is None:
        raise ProblemError(404, "Not Found", f"no key for subject and dataset {path.dataset!r}")
    return web.json_response(_status(record))


async def rotate(request: web.Request) -> web.Response:
    api = request.app[KEY_API]
    api.verifier.require(request, KEYS_ADMIN)
    count = await handlers.rotate(api.vault)
    return web.json_response({"rewrapped": count, "kek_id": api.vault.kek.current_id})


def add_routes(app: web.Application, *, vault: Vault, verifier: TokenVerifier, cache_ttl_s: int) -> None:
    app[KEY_API] = KeyApi(vault, verifier, cache_ttl_s)
    app.router.add_post("/v1/keys/{subject_id}/{dataset}", current)
    app.router.add_get("/v1/keys/{subject_id}/{dataset}/{key_id}", by_id)
    app.router.add_post("/v1/keys/{subject_id}/{dataset}/restore", restore)
    app.router.add_post("/v1/keys/{subject_id}/{dataset}/destroy", destroy_now)
    app.router.add_get("/v1/subjects/{subject_id}/keys", status)
    app.router.add_post("/v1/admin/kek/rotate", rotate)
