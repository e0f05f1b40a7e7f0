"""HTTP errors as ``application/problem+json`` (RFC 9457), naming the offending field; never a bare 500."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from shared.scrub import scrub

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"


class ProblemError(Exception):
    """An error that becomes a problem+json response with ``status``."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.errors = errors or []
        self.headers = dict(headers or {})


def problem_response(error: ProblemError) -> web.Response:
    body: dict[str, Any] = {"type": "about:blank", "title": error.title, "status": error.status, "detail": error.detail}
    if error.errors:
        body["errors"] = error.errors
    return web.Response(status=error.status, text=json.dumps(body), content_type=PROBLEM_JSON, headers=error.headers)


def too_large(cap: int) -> ProblemError:
    return ProblemError(413, "Content Too Large", f"the body is larger than {cap} bytes")


def fields_problem(errors: list[dict[str, str]]) -> ProblemError:
    """A 422 naming each invalid field: ``errors`` are ``{"field": "body.x", "message": "..."}``."""
    return ProblemError(
        422, "Unprocessable Content", "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors
    )


def invalid(exc: ValidationError, *, where: str = "body") -> ProblemError:
    """A 422 that names each invalid field, e.g. ``body.dataset``."""
    return fields_problem(
        [{"field": ".".join([where, *(str(p) for p in e["loc"])]), "message": e["msg"]} for e in exc.errors()]
    )


def field_problem(field: str, message: str, *, status: int = 422) -> ProblemError:
    """A 4xx about one named field, e.g. ``field_problem("query.limit", "at most 100")``."""
    problem = fields_problem([{"field": field, "message": message}])
    if status != 422:
        problem.status, problem.title = status, "Bad Request"
    return problem


async def parse_json(request: web.Request, model: type[Any]) -> Any:
    """Read and validate a JSON body against a pydantic model; 415/400/422 with the reason otherwise."""
    if request.content_type != "application/json":
        raise ProblemError(415, "Unsupported Media Type", "the body must be application/json")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise too_large(request.client_max_size) from exc
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise ProblemError(400, "Bad Request", "the body is not valid JSON") from exc
        raise invalid(exc) from exc


def parse_params(model: type[Any], data: Mapping[str, Any], *, where: str) -> Any:
    """Validate path or query parameters (``where``: "path" or "query") against a pydantic model; a 422 naming
    each invalid one otherwise (``query.limit``)."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise invalid(exc, where=where) from exc


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProblemError as exc:
        return problem_response(exc)
    except (ConnectionError, TimeoutError) as exc:
        # A server this request needs (a store, another service) is away: the caller may retry; nothing was decided.
        log.warning("http.dependency_unavailable", path=request.path, method=request.method, error=scrub(repr(exc)))
        unavailable = "a server this request needs does not answer; retry shortly"
        return problem_response(ProblemError(503, "Service Unavailable", unavailable, headers={"Retry-After": "5"}))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Keep headers such as Allow (405); the body is ours, so its type and length are too.
        kept = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        return problem_response(ProblemError(exc.status, exc.reason, exc.reason, headers=kept))
    except Exception:
        log.exception("http.unhandled_error", path=request.path, method=request.method)
        return problem_response(ProblemError(500, "Internal Server Error", "an unexpected error; it was logged"))


@web.middleware
async def body_cap_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Hold the app's body cap (``client_max_size``) on every method, before the handler runs.

    aiohttp counts the cap only while a handler reads the body, so a handler that never reads it (a DELETE)
    would accept a body of any size. A declared Content-Length over the cap is refused unread. A body without
    one (chunked) is read here, never past the cap, and kept for the handler's ``read()``, ``json()`` and
    ``post()``; a multipart form is left to aiohttp's reader, which needs the stream and counts the cap itself.
    """
    cap = request.client_max_size
    if not cap:  # aiohttp's "no cap"
        return await handler(request)
    try:
        if request.content_length is not None and request.content_length > cap:
            return _refused(cap)
        if request.content_length is None and request.body_exists and request.content_type != "multipart/form-data":
            await request.read()
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return _refused(cap)


def _refused(cap: int) -> web.Response:
    response = problem_response(too_large(cap))
    # The rest of the body is never read, so the connection cannot carry another request.
    response.force_close()
    return response
