"""keyvault's HTTP API: data keys for the other services, key status, restore and KEK rotation (admin)."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, StringConstraints, ValidationError

from services.keyvault import handlers
from services.keyvault.adapters.store import KeyRecord
from services.keyvault.handlers import KeyRetainedError, KeyUnavailableError, UnknownKeyError, Vault
from shared.auth import KEYS_ADMIN, KEYS_DESTROY_CONTACT, KEYS_USE, Forbidden, TokenVerifier
from shared.contacts import CONTACT_DATASET
from shared.crypto import DataKey
from shared.problems import ProblemError, invalid, parse_json
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


def _path(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(dict(request.match_info))
    except ValidationError as exc:
        raise invalid(exc, where="path") from exc


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


def add_routes(app: web.Application, *, vault: Vault, verifier: TokenVerifier, cache_ttl_s: int) -> None:
    async def current(request: web.Request) -> web.Response:
        verifier.require(request, KEYS_USE)
        path = _path(request, KeyPath)
        try:
            key = await handlers.current_key(vault, path.subject_id, path.dataset)
        except KeyUnavailableError as exc:
            raise _unavailable(exc) from exc
        return web.json_response(_key_body(key, cache_ttl_s), headers=NO_STORE)

    async def by_id(request: web.Request) -> web.Response:
        verifier.require(request, KEYS_USE)
        path = _path(request, KeyPath)
        try:
            key = await handlers.key_by_id(vault, path.subject_id, path.dataset, path.key_id)
        except UnknownKeyError as exc:
            raise ProblemError(404, "Not Found", str(exc)) from exc
        except KeyUnavailableError as exc:
            raise _unavailable(exc) from exc
        return web.json_response(_key_body(key, cache_ttl_s), headers=NO_STORE)

    async def status(request: web.Request) -> web.Response:
        verifier.require(request, KEYS_USE, KEYS_ADMIN)
        path = _path(request, SubjectPath)
        records = await vault.store.keys_of(path.subject_id)
        return web.json_response({"subject_id": path.subject_id, "keys": [_status(r) for r in records]})

    async def restore(request: web.Request) -> web.Response:
        principal = verifier.require(request, KEYS_ADMIN)
        path = _path(request, KeyPath)
        try:
            event = await handlers.restore(vault, path.subject_id, path.dataset, restored_by=principal.subject)
        except UnknownKeyError as exc:
            raise ProblemError(404, "Not Found", str(exc)) from exc
        except KeyUnavailableError as exc:
            raise ProblemError(
                409, "Conflict", f"only a disabled key inside its grace window can be restored; this one is {exc.state}"
            ) from exc
        await request.app[PUBLISHER].publish(event)
        record = await vault.store.get(path.subject_id, path.dataset)
        assert record is not None
        return web.json_response(_status(record))

    async def destroy_now(request: web.Request) -> web.Response:
        principal = verifier.require(request, KEYS_DESTROY_CONTACT, KEYS_ADMIN)
        path = _path(request, KeyPath)
        if path.dataset != CONTACT_DATASET and KEYS_ADMIN not in principal.scopes:
            raise Forbidden(f"scope {KEYS_DESTROY_CONTACT} may shred only {CONTACT_DATASET!r} keys")
        body = await parse_json(request, DestroyBody)
        try:
            event = await handlers.shred_now(vault, path.subject_id, path.dataset, request_id=body.request_id)
        except KeyRetainedError as exc:
            raise ProblemError(409, "Conflict", str(exc)) from exc
        if event is not None:
            await request.app[PUBLISHER].publish(event)
        record = await vault.store.get(path.subject_id, path.dataset)
        if record is None:
            raise ProblemError(404, "Not Found", f"no key for subject and dataset {path.dataset!r}")
        return web.json_response(_status(record))

    async def rotate(request: web.Request) -> web.Response:
        verifier.require(request, KEYS_ADMIN)
        count = await handlers.rotate(vault)
        return web.json_response({"rewrapped": count, "kek_id": vault.kek.current_id})

    app.router.add_post("/v1/keys/{subject_id}/{dataset}", current)
    app.router.add_get("/v1/keys/{subject_id}/{dataset}/{key_id}", by_id)
    app.router.add_post("/v1/keys/{subject_id}/{dataset}/restore", restore)
    app.router.add_post("/v1/keys/{subject_id}/{dataset}/destroy", destroy_now)
    app.router.add_get("/v1/subjects/{subject_id}/keys", status)
    app.router.add_post("/v1/admin/kek/rotate", rotate)


def _op(summary: str, scopes: str, responses: dict[str, str], params: list[str]) -> dict[str, Any]:
    return {
        "summary": summary,
        "description": f"Needs a bearer token with scope {scopes}.",
        "security": [{"bearer": []}],
        "parameters": [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params],
        "responses": {
            code: {"description": text, "content": {"application/json": {}}}
            for code, text in {
                "401": "missing or invalid token",
                "403": "token lacks the scope",
                "422": "a path parameter is malformed; the body names it",
                **responses,
            }.items()
        },
    }


BODY_ERRORS = {
    "400": "the body is not JSON",
    "413": "the body is too large",
    "415": "the body is not application/json",
}
KEY_RESPONSE = "the data key: key_id, dek (base64, 32 bytes), cache_ttl_s"
API_PATHS: dict[str, Any] = {
    "/v1/keys/{subject_id}/{dataset}": {
        "post": _op(
            "Get the subject's active data key for the dataset, creating it on first use",
            KEYS_USE,
            {"200": KEY_RESPONSE, "410": "the key is disabled pending destruction"},
            ["subject_id", "dataset"],
        )
    },
    "/v1/keys/{subject_id}/{dataset}/{key_id}": {
        "get": _op(
            "Get the data key that opens a ciphertext",
            KEYS_USE,
            {"200": KEY_RESPONSE, "404": "no such key", "410": "the key is disabled or destroyed"},
            ["subject_id", "dataset", "key_id"],
        )
    },
    "/v1/keys/{subject_id}/{dataset}/restore": {
        "post": _op(
            "Restore a disabled key inside its grace window",
            KEYS_ADMIN,
            {"200": "the key's status", "404": "no such key", "409": "not restorable"},
            ["subject_id", "dataset"],
        )
    },
    "/v1/keys/{subject_id}/{dataset}/destroy": {
        "post": {
            **_op(
                "Shred one key at once, beyond restore (body: request_id); emits deletion.keys_shredded. "
                f"{KEYS_DESTROY_CONTACT} may shred only contact keys; no scope may shred a key of a dataset that "
                "a rule or hold keeps now (409 names it)",
                f"{KEYS_DESTROY_CONTACT} (contact keys) or {KEYS_ADMIN}",
                {
                    "200": "the key's status",
                    "404": "no such key",
                    "409": "a rule or hold in force keeps the key's dataset; the body names it",
                    **BODY_ERRORS,
                },
                ["subject_id", "dataset"],
            ),
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["request_id"],
                            "additionalProperties": False,
                            "properties": {"request_id": {"type": "string", "minLength": 1, "maxLength": 200}},
                        }
                    }
                },
            },
        }
    },
    "/v1/subjects/{subject_id}/keys": {
        "get": _op(
            "Status of every key of a subject (no key material)",
            f"{KEYS_USE} or {KEYS_ADMIN}",
            {"200": "the subject's keys and their states"},
            ["subject_id"],
        )
    },
    "/v1/admin/kek/rotate": {
        "post": _op(
            "Re-wrap every data key under the current KEK", KEYS_ADMIN, {"200": "how many keys were re-wrapped"}, []
        )
    },
}
